"""A BERT-style masked language model on `TransformerEncoder`, for in-domain pretraining.

The masking happens inside the model, on device: each step draws which tokens of each row to
predict, so the corpus is stored once as plain token ids [n, length] and every epoch sees new
masks. Of the chosen tokens (BERT's 80/10/10, Devlin et al. 2019) 80% are replaced by a learned
mask vector (the vocabulary has no [MASK] token), 10% by a random token and 10% kept; the model
predicts the original ids there.

Parameter names match `TransformerClassifier`'s ('Embed_0', 'TransformerEncoder_0'), so a
classifier or a tagger starts from a pretrained run's encoder with `jmed.train.init_from`; the
MLM head ('mlm_dense', 'mlm_norm', 'mlm_bias', decoder tied to the embedding) stays behind.
"""

from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmed.models.transformer import TransformerEncoder

# What happens to a chosen token (see `corruption_kinds`).
MASKED, RANDOM, KEPT = 0, 1, 2


def num_targets(length: int, mask_rate: float) -> int:
  """Tokens predicted per row of `length`: max(1, round(mask_rate * length)), at most length."""
  return min(length, max(1, round(mask_rate * length)))


def select_positions(key, mask, k: int) -> Tuple[jax.Array, jax.Array]:
  """k distinct positions per row, uniformly among the real tokens.

  Args:
    key: a PRNG key.
    mask: bool [batch, length], True on real tokens.
    k: positions per row.

  Returns:
    (positions int32 [batch, k], chosen bool [batch, k]): `chosen` is False where a row has
    fewer than k real tokens and the pick fell on padding (those come last).
  """
  scores = jnp.where(mask, jax.random.uniform(key, mask.shape), -1.0)
  top, positions = jax.lax.top_k(scores, k)
  return positions.astype(jnp.int32), top >= 0


def corruption_kinds(key, shape, masked: float = 0.8, random: float = 0.1) -> jax.Array:
  """int32 [*shape]: MASKED with probability `masked`, RANDOM with `random`, else KEPT."""
  u = jax.random.uniform(key, shape)
  return jnp.where(u < masked, MASKED, jnp.where(u < masked + random, RANDOM, KEPT))


class MaskedLM(nn.Module):
  """Token ids -> masked-token logits at k positions per row.

  Attributes:
    num_classes: logits per position: the vocabulary size (what `fit` passes as the dataset's
      classes); must equal `vocab_size`.
    vocab_size: embedding rows; `pad_id` marks padding (never chosen, masked out of attention).
    embed_dim, num_layers, num_heads, mlp_dim, positions, max_length, dropout_rate, dtype: as
      `TransformerClassifier`'s.
    mask_rate: share of each row's length predicted (k = max(1, round(mask_rate * length))).
    pad_id: the padding token id.
  """

  num_classes: int
  vocab_size: int
  embed_dim: int = 128
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  positions: str = 'learned'
  max_length: int = 512
  mask_rate: float = 0.15
  dropout_rate: float = 0.0
  pad_id: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids, train: bool = False):
    """ids [batch, length] (int) -> {'logits': float32 [batch, k, vocab_size],
    'targets': int32 [batch, k]} (the original ids, -1 where a row had no k-th real token).

    The positions and corruptions are drawn from the 'dropout' rng in training, and from a
    fixed key in evaluation, so a validation loss is deterministic.
    """
    if self.num_classes != self.vocab_size:
      raise ValueError(f'MaskedLM predicts the vocabulary: num_classes {self.num_classes} must '
                       f'equal vocab_size {self.vocab_size}.')
    ids = ids.astype(jnp.int32)
    mask = ids != self.pad_id
    k = num_targets(ids.shape[1], self.mask_rate)
    key = self.make_rng('dropout') if train else jax.random.key(0)
    position_key, kind_key, token_key = jax.random.split(key, 3)
    positions, chosen = select_positions(position_key, mask, k)
    targets = jnp.where(chosen, jnp.take_along_axis(ids, positions, 1), -1)

    embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)  # 'Embed_0'
    mask_embedding = self.param('mask_embedding', nn.initializers.normal(0.02),
                                (self.embed_dim,))
    x = embed(ids)
    # Corrupt the chosen tokens; decided on the [batch, length] grid (no scatter), so batch
    # sharding needs no communication.
    selected = jnp.any((positions[..., None] == jnp.arange(ids.shape[1]))
                       & chosen[..., None], axis=1)  # [batch, length]
    kinds = corruption_kinds(kind_key, ids.shape)
    random_ids = jax.random.randint(token_key, ids.shape, 0, self.vocab_size - 1)
    random_ids = random_ids + (random_ids >= self.pad_id)  # never the padding id
    x = jnp.where((selected & (kinds == RANDOM))[..., None], embed(random_ids), x)
    x = jnp.where((selected & (kinds == MASKED))[..., None],
                  mask_embedding.astype(x.dtype), x)

    x = TransformerEncoder(self.num_layers, self.num_heads, self.mlp_dim, self.dropout_rate,
                           self.positions, self.max_length, self.dtype)(x, mask, train)
    h = jnp.take_along_axis(x, positions[..., None], 1)  # [batch, k, dim]
    h = nn.gelu(nn.Dense(self.embed_dim, dtype=self.dtype, name='mlm_dense')(h))
    h = nn.LayerNorm(dtype=self.dtype, name='mlm_norm')(h)
    bias = self.param('mlm_bias', nn.initializers.zeros, (self.vocab_size,))
    logits = embed.attend(h).astype(jnp.float32) + bias
    return {'logits': logits, 'targets': targets.astype(jnp.int32)}
