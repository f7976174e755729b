"""GRU and LSTM encoders over padded, masked sequences, and a text classifier built on them.

Sequences are right-padded: `inputs [batch, time, features]` with `mask [batch, time]` true on
the real steps, which must come first (a prefix). Each direction runs flax's `nn.RNN` with the
per-example lengths, so the backward direction starts at each sequence's own last real step and
padding never reaches the state.

Every layer's outputs are sown as 'intermediates/hidden_states' ([batch, time, directions *
hidden]): read them with `jmed.models.inspect`.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

CELLS = {'gru': nn.GRUCell, 'lstm': nn.OptimizedLSTMCell}
POOLINGS = ('last', 'mean', 'max', 'attention')


def masked_mean(x, mask):
  """Mean of x [batch, time, features] over the steps where mask [batch, time] is true."""
  weights = mask[..., None].astype(x.dtype)
  return (x * weights).sum(1) / jnp.maximum(weights.sum(1), 1)


def masked_max(x, mask):
  """Max of x [batch, time, features] over the true steps of mask (0 for an empty sequence)."""
  filled = jnp.where(mask[..., None], x, jnp.finfo(x.dtype).min)
  return jnp.where(mask.any(1)[:, None], filled.max(1), 0)


class AttentionPool(nn.Module):
  """Weighted mean over real steps with learned weights, softmax(w . tanh(W x)) (Yang et al.,
  2016); sows the weights [batch, time] as 'intermediates/pooling_weights'.

  Attributes:
    hidden: width of the scoring layer.
    dtype: computation dtype.
  """

  hidden: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    """x [batch, time, features], mask [batch, time] bool -> [batch, features]."""
    scores = nn.Dense(1, dtype=self.dtype)(jnp.tanh(nn.Dense(self.hidden, dtype=self.dtype)(x)))
    scores = jnp.where(mask, scores[..., 0].astype(jnp.float32), -1e9)
    weights = nn.softmax(scores, -1) * mask  # an empty row pools to 0
    self.sow('intermediates', 'pooling_weights', weights)
    return jnp.einsum('bt,btf->bf', weights.astype(x.dtype), x)


def pool(x, mask, pooling: str, final=None, dtype=jnp.float32):
  """Pools x [batch, time, features] over the real steps: 'mean', 'max', 'attention' (call
  inside a compact module: it creates an `AttentionPool`) or 'last' (returns `final`)."""
  if pooling not in POOLINGS or (pooling == 'last' and final is None):
    raise ValueError(f'pooling must be one of {POOLINGS} (\'last\' for recurrent models), got '
                     f'{pooling!r}.')
  if pooling == 'last':
    return final
  if pooling == 'attention':
    return AttentionPool(dtype=dtype)(x, mask)
  return masked_mean(x, mask) if pooling == 'mean' else masked_max(x, mask)


def _final_hidden(carry, cell: str):
  """The hidden state h of a carry ((c, h) for an LSTM)."""
  return carry[1] if cell == 'lstm' else carry


class RNNEncoder(nn.Module):
  """Stacked, optionally bidirectional GRU or LSTM.

  Attributes:
    cell: 'gru' or 'lstm'.
    hidden_size: state size per direction.
    num_layers: stacked layers; each reads the previous layer's outputs.
    bidirectional: add a backward direction per layer (outputs are concatenated).
    dropout_rate: dropout between stacked layers while training.
    dtype: computation dtype of the matmuls and the outputs (the recurrent state is float32).
  """

  cell: str = 'gru'
  hidden_size: int = 128
  num_layers: int = 1
  bidirectional: bool = False
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs, mask, train: bool = False):
    """Encodes a batch.

    Args:
      inputs: [batch, time, features].
      mask: [batch, time] bool, true on real steps (a prefix of each row).
      train: enables dropout (rng 'dropout').

    Returns:
      (outputs [batch, time, directions * hidden_size], zero on padding;
       final [batch, directions * hidden_size]: the forward state at each sequence's last real
       step, concatenated with the backward state at its first step).
    """
    if self.cell not in CELLS:
      raise ValueError(f'cell must be one of {tuple(CELLS)}, got {self.cell!r}.')
    if inputs.ndim != 3 or mask.shape != inputs.shape[:2]:
      raise ValueError(f'expected inputs [batch, time, features] and mask [batch, time], got '
                       f'{inputs.shape} and {mask.shape}.')
    lengths = mask.sum(-1).astype(jnp.int32)
    x = inputs.astype(self.dtype)
    finals = []
    for layer in range(self.num_layers):
      if layer:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      outputs, finals = [], []
      for reverse in (False, True)[:1 + self.bidirectional]:
        rnn = nn.RNN(CELLS[self.cell](self.hidden_size, dtype=self.dtype),
                     return_carry=True, reverse=reverse, keep_order=True,
                     name=f'layer{layer}_{"backward" if reverse else "forward"}')
        carry, out = rnn(x, seq_lengths=lengths)
        # flax starts the carry in the cells' param_dtype (float32), so the recurrent state is
        # updated in float32; the cells' matmuls run in `dtype`, and so does what follows.
        outputs.append(out.astype(self.dtype))
        finals.append(_final_hidden(carry, self.cell).astype(self.dtype))
      x = jnp.concatenate(outputs, -1) * mask[..., None].astype(self.dtype)
      self.sow('intermediates', 'hidden_states', x)
    return x, jnp.concatenate(finals, -1)


class RNNClassifier(nn.Module):
  """Token ids -> embedding -> `RNNEncoder` -> pooled -> logits, e.g. for clinical text.

  Attributes:
    num_classes: output logits.
    vocab_size: embedding rows; id `pad_id` is padding.
    cell, hidden_size, num_layers, bidirectional: see `RNNEncoder`.
    embed_dim: token embedding size.
    pooling: 'last' (final states), 'mean', 'max' or 'attention' (learned weights, see
      `AttentionPool`) over real steps.
    dropout_rate: dropout on embeddings, between layers and before the output layer.
    pad_id: the padding token id (mask = ids != pad_id).
    dtype: computation dtype; logits are float32.
  """

  num_classes: int
  vocab_size: int
  cell: str = 'gru'
  embed_dim: int = 128
  hidden_size: int = 128
  num_layers: int = 1
  bidirectional: bool = True
  pooling: str = 'mean'
  dropout_rate: float = 0.0
  pad_id: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids, train: bool = False):
    """Maps token ids [batch, length] (int) to logits [batch, num_classes]."""
    mask = ids != self.pad_id
    x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)(ids)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    outputs, final = RNNEncoder(self.cell, self.hidden_size, self.num_layers, self.bidirectional,
                                self.dropout_rate, self.dtype)(x, mask, train)
    pooled = pool(outputs, mask, self.pooling, final, self.dtype)
    pooled = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled)
    return nn.Dense(self.num_classes, dtype=self.dtype)(pooled).astype(jnp.float32)
