"""A pre-norm Transformer encoder with a padding mask, and a text classifier built on it.

Attention is flax's `nn.MultiHeadDotProductAttention` called with `sow_weights=True`: every layer's
weights [batch, heads, queries, keys] land in 'intermediates' (read them with
`jmed.models.inspect`), as do the block outputs ('hidden_states').
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jmed.models.recurrent import pool

POSITIONS = ('learned', 'sinusoidal', 'none')


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
  """Vaswani et al.'s fixed position encodings, float32 [length, dim]."""
  position = np.arange(length)[:, None]
  rates = np.exp(-np.log(10000.0) * np.arange(0, dim, 2) / dim)
  table = np.zeros((length, dim), np.float32)
  table[:, 0::2] = np.sin(position * rates)
  table[:, 1::2] = np.cos(position * rates[:dim // 2])
  return table


class EncoderBlock(nn.Module):
  """x + Attention(LayerNorm(x)), then x + MLP(LayerNorm(x)) (pre-norm).

  Attributes:
    num_heads: attention heads.
    mlp_dim: hidden width of the feed-forward block.
    dropout_rate: dropout on the residual branches and on the attention weights.
    dtype: computation dtype.
  """

  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, train: bool = False):
    """x [batch, length, dim], mask [batch, length] bool -> [batch, length, dim]."""
    dim = x.shape[-1]
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, dropout_rate=self.dropout_rate,
        deterministic=not train, name='attention')(
            y, mask=nn.make_attention_mask(mask, mask), sow_weights=True)
    x = x + drop(y)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = nn.Dense(self.mlp_dim, dtype=self.dtype)(y)
    y = nn.Dense(dim, dtype=self.dtype)(drop(nn.gelu(y)))
    return x + drop(y)


class TransformerEncoder(nn.Module):
  """Positions + a stack of `EncoderBlock`s + a final LayerNorm.

  Attributes:
    num_layers: encoder blocks.
    num_heads, mlp_dim, dropout_rate: see `EncoderBlock`.
    positions: 'learned' (an embedding per position up to max_length), 'sinusoidal' or 'none'.
    max_length: longest sequence the learned positions cover.
    dtype: computation dtype.
  """

  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  dropout_rate: float = 0.0
  positions: str = 'learned'
  max_length: int = 512
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, train: bool = False):
    """x [batch, length, dim], mask [batch, length] bool -> [batch, length, dim]."""
    if self.positions not in POSITIONS:
      raise ValueError(f'positions must be one of {POSITIONS}, got {self.positions!r}.')
    length, dim = x.shape[-2:]
    if length > self.max_length:
      raise ValueError(f'sequence length {length} exceeds max_length {self.max_length}.')
    if self.positions == 'learned':
      table = self.param('positions', nn.initializers.normal(0.02), (self.max_length, dim))
      x = x + table[:length].astype(x.dtype)
    elif self.positions == 'sinusoidal':
      x = x + jnp.asarray(sinusoidal_positions(length, dim), x.dtype)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    for i in range(self.num_layers):
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout_rate, self.dtype,
                       name=f'block{i}')(x, mask, train)
      self.sow('intermediates', 'hidden_states', x)
    return nn.LayerNorm(dtype=self.dtype)(x)


class TransformerClassifier(nn.Module):
  """Token ids -> embedding -> `TransformerEncoder` -> pooled -> logits.

  Attributes:
    num_classes: output logits.
    vocab_size: embedding rows; `pad_id` marks padding (masked out of attention and pooling).
    embed_dim: model width.
    num_layers, num_heads, mlp_dim, positions, max_length: see `TransformerEncoder`.
    pooling: 'mean', 'max' or 'attention' (learned weights, see `AttentionPool`) over real
      tokens.
    dropout_rate: dropout throughout the encoder and before the output layer.
    pad_id: the padding token id.
    dtype: computation dtype; logits are float32.
  """

  num_classes: int
  vocab_size: int
  embed_dim: int = 128
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  positions: str = 'learned'
  max_length: int = 512
  pooling: str = 'mean'
  dropout_rate: float = 0.0
  pad_id: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids, train: bool = False):
    """Maps token ids [batch, length] (int) to logits [batch, num_classes]."""
    mask = ids != self.pad_id
    x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)(ids)
    x = TransformerEncoder(self.num_layers, self.num_heads, self.mlp_dim, self.dropout_rate,
                           self.positions, self.max_length, self.dtype)(x, mask, train)
    pooled = pool(x, mask, self.pooling, dtype=self.dtype)
    pooled = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled)
    return nn.Dense(self.num_classes, dtype=self.dtype)(pooled).astype(jnp.float32)
