"""Kim (2014)'s convolutional text classifier, for clinical text and SMILES strings.

Token embeddings, parallel 1-D convolutions of several widths, max over real positions,
dropout, a dense layer. Sows the pooled features as 'intermediates/features'
([batch, len(widths) * features]) and each width's activations as 'intermediates/feature_maps'
([batch, length, features], zero on padding).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jmed.models.recurrent import masked_max


class TextCNN(nn.Module):
  """Kim's CNN: embed, convolve at several widths, max-pool over time, classify.

  Attributes:
    num_classes: output logits.
    vocab_size: embedding rows; `pad_id` marks padding.
    embed_dim: token embedding size.
    widths: convolution widths in tokens (Kim: 3, 4, 5).
    features: filters per width (Kim: 100).
    dropout_rate: dropout on the pooled features (Kim: 0.5).
    pad_id: the padding token id.
    dtype: computation dtype; logits are float32.
  """

  num_classes: int
  vocab_size: int
  embed_dim: int = 128
  widths: Sequence[int] = (3, 4, 5)
  features: int = 100
  dropout_rate: float = 0.0
  pad_id: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids, train: bool = False):
    """Maps token ids [batch, length] (int) to logits [batch, num_classes]."""
    mask = ids != self.pad_id
    x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)(ids)
    x = x * mask[..., None].astype(x.dtype)  # padding reads as zeros, like 'SAME' padding
    pooled = []
    for width in self.widths:
      maps = nn.relu(nn.Conv(self.features, (width,), padding='SAME', dtype=self.dtype,
                             name=f'conv{width}')(x))
      maps = maps * mask[..., None].astype(maps.dtype)
      self.sow('intermediates', 'feature_maps', maps)
      pooled.append(masked_max(maps, mask))
    pooled = jnp.concatenate(pooled, -1)
    self.sow('intermediates', 'features', pooled)
    pooled = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled)
    return nn.Dense(self.num_classes, dtype=self.dtype)(pooled).astype(jnp.float32)
