"""word2vec's skip-gram with negative sampling (Mikolov et al. 2013), for cheap in-domain word
embeddings.

It reads the same packed corpus rows as masked-LM pretraining (`jmed.data.corpus`, token ids
[batch, length], 0 padding) and draws its training pairs on device, each step anew: for every
real token a context token at a random offset within a window whose size is drawn uniformly from
1..`window` (word2vec's dynamic window, which weights near words more), and `negatives` noise
tokens drawn from the tokens of the batch (so, from the corpus' unigram distribution; word2vec
uses its 3/4 power). The input vectors are named 'Embed_0' like the word embeddings of the
Transformer classifier and the taggers, which start from them through `init_from`; the context
vectors ('context') stay behind.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class SkipGram(nn.Module):
  """Scores (word, context) pairs against (word, noise) pairs.

  Attributes:
    num_classes: the vocabulary size (what `fit` passes as the dataset's classes); must equal
      `vocab_size`.
    vocab_size: embedding rows; `pad_id` marks padding.
    embed_dim: embedding size.
    window: the largest context offset.
    negatives: noise tokens per pair.
    dropout_rate: unused (the training loop passes every model one).
    pad_id: the padding token id.
    dtype: computation dtype; scores are float32.
  """

  num_classes: int
  vocab_size: int
  embed_dim: int = 128
  window: int = 5
  negatives: int = 5
  dropout_rate: float = 0.0
  pad_id: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids, train: bool = False):
    """Draws the pairs of a batch and scores them.

    Args:
      ids: int [batch, length] token ids.
      train: draw new pairs from rng 'dropout' (else a fixed key: a deterministic validation
        loss).

    Returns:
      {'scores': float32 [batch, length, 1 + negatives] (the context's score first, then the
       noise tokens'), 'weights': bool [batch, length] (true where the token and its context are
       real)}.
    """
    if self.num_classes != self.vocab_size:
      raise ValueError(f'num_classes ({self.num_classes}) must equal vocab_size '
                       f'({self.vocab_size}).')
    ids = jnp.asarray(ids)
    key = self.make_rng('dropout') if train else jax.random.key(0)
    size_key, offset_key, sign_key, noise_key = jax.random.split(key, 4)
    batch, length = ids.shape
    mask = ids != self.pad_id
    size = jax.random.randint(size_key, ids.shape, 1, self.window + 1)
    offset = jnp.ceil(jax.random.uniform(offset_key, ids.shape) * size).astype(jnp.int32)
    offset = jnp.maximum(offset, 1) * jnp.where(jax.random.bernoulli(sign_key, 0.5, ids.shape),
                                                1, -1)
    where = jnp.arange(length) + offset
    inside = (where >= 0) & (where < length)
    context = jnp.take_along_axis(ids, jnp.clip(where, 0, length - 1), axis=1)
    weights = mask & inside & (context != self.pad_id)
    flat = ids.reshape(-1)
    real_first = jnp.argsort(flat == self.pad_id, stable=True)  # the real tokens' positions first
    count = jnp.maximum((flat != self.pad_id).sum(), 1)
    picks = jnp.floor(jax.random.uniform(noise_key, (batch, length, self.negatives)) * count)
    noise = flat[real_first[picks.astype(jnp.int32)]]  # uniform over the batch's real tokens
    targets = jnp.concatenate([context[..., None], noise], -1)  # [b, L, 1 + negatives]
    words = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, name='Embed_0')(ids)
    contexts = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                        embedding_init=nn.initializers.zeros, name='context')(targets)
    scores = jnp.einsum('bld,blkd->blk', words, contexts)
    return {'scores': scores.astype(jnp.float32), 'weights': weights}
