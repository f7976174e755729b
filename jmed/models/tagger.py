"""A token tagger for named-entity recognition: word (and character) features, a BiLSTM, BiGRU
or Transformer encoder, per-token tag scores and an optional linear-chain CRF.

Inputs are int32 [batch, length, 1 + chars] (`jmed.data.conll`): column 0 the word id (0 is
padding), columns 1.. the word's characters as ids (0 padding), so one array carries both and
the batching machinery stays one-array-per-example. Character features (Lample et al. 2016; Ma &
Hovy 2016, a character CNN) spell words the vocabulary never saw.

The model returns a dict: 'logits' [batch, length, tags] (float32 per-token scores, the CRF's
emissions), 'mask' [batch, length] (true on real tokens) and, with `crf`, the CRF's
'transitions' [tags, tags], 'start' [tags] and 'end' [tags]. The 'tagging' task
(`jmed.tasks.tagging`) turns them into a loss and Viterbi paths.

Parameter names follow `TransformerClassifier` and `jmed.models.mlm.MaskedLM` ('Embed_0' the word
embedding, 'TransformerEncoder_0' the encoder), so a masked-LM checkpoint initialises them
(`TrainConfig.init_from`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmed.models.crf import CRF
from jmed.models.recurrent import RNNEncoder, masked_max
from jmed.models.transformer import TransformerEncoder

ENCODERS = ('lstm', 'gru', 'transformer')


class CharCNN(nn.Module):
  """Per-word character features: embed characters, convolve, max over the real characters.

  Attributes:
    num_chars: character vocabulary size (0 is padding).
    char_dim: character embedding size.
    features: convolution filters (the output width).
    width: convolution width in characters.
    dtype: computation dtype.
  """

  num_chars: int
  char_dim: int = 32
  features: int = 64
  width: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, chars):
    """chars [batch, length, max_chars] (int) -> [batch, length, features]."""
    batch, length, max_chars = chars.shape
    flat = chars.reshape(batch * length, max_chars)
    mask = flat != 0
    x = nn.Embed(self.num_chars, self.char_dim, dtype=self.dtype)(flat)
    x = nn.relu(nn.Conv(self.features, (self.width,), padding='SAME', dtype=self.dtype)(x))
    return masked_max(x, mask).reshape(batch, length, self.features)


class SequenceTagger(nn.Module):
  """Word ids (+ characters) -> encoder -> per-token tag scores (+ CRF parameters).

  Attributes:
    num_classes: tags (the task's tag names, 'O' included).
    vocab_size: word embedding rows; id `pad_id` is padding.
    num_chars: character vocabulary size; 0 (or inputs without character columns) disables the
      character CNN.
    encoder: 'lstm' or 'gru' (bidirectional, `num_layers` stacked) or 'transformer' (pre-norm,
      see `TransformerEncoder`).
    embed_dim: word embedding size (the Transformer's width).
    hidden_size: recurrent state per direction.
    num_layers: recurrent layers or Transformer blocks.
    num_heads, mlp_dim, positions, max_length: the Transformer's (see `TransformerEncoder`).
    char_dim, char_features, char_width: the character CNN's (see `CharCNN`).
    crf: add a linear-chain CRF (transition scores learned with the rest); without it the task
      trains per-token softmax.
    dropout_rate: dropout on the embeddings, inside the encoder and before the tag scores.
    word_dropout: while training, each word id is replaced by `unk_id` with this probability
      (Lample et al. 2016), so the unknown-word embedding and the character features learn to
      stand in for words the vocabulary lacks.
    pad_id: the padding word id.
    unk_id: the unknown-word id (`jmed.text.tokenizer.UNK_ID`).
    dtype: computation dtype; the tag scores are float32.
  """

  num_classes: int
  vocab_size: int
  num_chars: int = 0
  encoder: str = 'lstm'
  embed_dim: int = 128
  hidden_size: int = 128
  num_layers: int = 1
  num_heads: int = 4
  mlp_dim: int = 256
  positions: str = 'learned'
  max_length: int = 512
  char_dim: int = 32
  char_features: int = 64
  char_width: int = 3
  crf: bool = True
  dropout_rate: float = 0.0
  word_dropout: float = 0.0
  pad_id: int = 0
  unk_id: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    """Tags a batch.

    Args:
      inputs: int [batch, length, 1 + max_chars] (word id, then character ids), or word ids
        [batch, length].
      train: enables dropout (rng 'dropout').

    Returns:
      {'logits': float32 [batch, length, num_classes], 'mask': bool [batch, length]} and, with
      `crf`, {'transitions': [num_classes, num_classes], 'start': [num_classes], 'end':
      [num_classes]}.
    """
    if self.encoder not in ENCODERS:
      raise ValueError(f'encoder must be one of {ENCODERS}, got {self.encoder!r}.')
    if inputs.ndim == 2:
      inputs = inputs[..., None]
    if inputs.ndim != 3:
      raise ValueError(f'expected inputs [batch, length, 1 + chars], got {inputs.shape}.')
    ids, chars = inputs[..., 0], inputs[..., 1:]
    mask = ids != self.pad_id
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    if train and self.word_dropout > 0:
      unknown = jax.random.bernoulli(self.make_rng('dropout'), self.word_dropout, ids.shape)
      ids = jnp.where(unknown & mask, self.unk_id, ids)
    x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)(ids)
    if self.num_chars and chars.shape[-1]:
      char_x = CharCNN(self.num_chars, self.char_dim, self.char_features, self.char_width,
                       self.dtype)(chars)
      if self.encoder == 'transformer':  # keep the pretrained width: add, do not concatenate
        x = x + nn.Dense(self.embed_dim, dtype=self.dtype, name='char_projection')(char_x)
      else:
        x = jnp.concatenate([x, char_x], -1)
    x = drop(x)
    if self.encoder == 'transformer':
      x = TransformerEncoder(self.num_layers, self.num_heads, self.mlp_dim, self.dropout_rate,
                             self.positions, self.max_length, self.dtype)(x, mask, train)
    else:
      x, _ = RNNEncoder(self.encoder, self.hidden_size, self.num_layers, True,
                        self.dropout_rate, self.dtype)(x, mask, train)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='tag_scores')(drop(x))
    outputs = {'logits': logits.astype(jnp.float32), 'mask': mask}
    if self.crf:
      outputs.update(CRF(self.num_classes, name='crf')())
    return outputs
