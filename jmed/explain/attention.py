"""Attention maps of jmed's Transformer, and attention rollout (Abnar & Zuidema 2020).

`jmed.models.TransformerClassifier` sows every layer's attention weights
[batch, heads, queries, keys] into the 'intermediates' collection; `attention_maps` reads them
back through `jmed.models.inspect`. Padding keys get ~0 weight (they are masked out); a padding
query attends uniformly to every key (all its keys are masked), so use the padding mask when
reading rows. `attention_rollout` and `token_relevance` are compiled with `jax.jit`.
"""

import functools
from typing import Dict, Optional, Sequence

import flax
import jax
import jax.numpy as jnp

from jmed import models

HEAD_FUSIONS = ('mean', 'max', 'min')


def collect(intermediates, name: str) -> Dict[str, jnp.ndarray]:
  """Every value sown under `name`, keyed by the sowing module's path, in call order.

  Args:
    intermediates: the 'intermediates' collection (e.g. from `jmed.models.inspect`).
    name: the sown name, e.g. 'attention_weights' or 'pooling_weights'.

  Returns:
    path -> array; a module that sowed several times gets keys 'path:0', 'path:1', ...
  """
  found = {}
  for keys, values in flax.traverse_util.flatten_dict(dict(intermediates)).items():
    if keys[-1] != name:
      continue
    path = '/'.join(keys[:-1])
    values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
    for i, value in enumerate(values):
      found[path if len(values) == 1 else f'{path}:{i}'] = value
  return found


def attention_maps(model, variables, inputs) -> Dict[str, jnp.ndarray]:
  """Each attention layer's weights, in layer order.

  Args:
    model: a flax module that sows 'attention_weights' (e.g. `TransformerClassifier`).
    variables: its variables.
    inputs: its inputs, e.g. token ids [batch, length].

  Returns:
    module path -> float [batch, heads, queries, keys]; each row sums to 1.

  Raises:
    ValueError: the model sowed no attention weights.
  """
  _, intermediates = models.inspect(model, variables, inputs)
  maps = collect(intermediates, 'attention_weights')
  if not maps:
    raise ValueError(f'{type(model).__name__} sowed no attention weights; attention maps need a '
                     "model whose attention is called with sow_weights=True (e.g. 'transformer').")
  return maps


@functools.partial(jax.jit, static_argnames=('head_fusion', 'residual'))
def attention_rollout(maps: Sequence[jnp.ndarray], *, head_fusion: str = 'mean',
                      residual: bool = True, mask: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Attention rollout: how much each output position draws on each input position.

  Per layer the heads are fused, the residual connection is added as 0.5 A + 0.5 I (rows
  renormalised), and the layers are multiplied from the first to the last.

  Args:
    maps: per layer, first to last, weights [batch, heads, queries, keys] (the values of
      `attention_maps`).
    head_fusion: 'mean' (the paper's) | 'max' | 'min' over heads.
    residual: account for the residual connections (the paper's rollout); False multiplies
      the raw attention ("attention flow" without residuals).
    mask: optional bool [batch, length], True on real tokens: padding rows and columns of the
      result are zeroed.

  Returns:
    float32 [batch, queries, keys]; rows of real queries sum to 1 (over real keys).
  """
  if head_fusion not in HEAD_FUSIONS:
    raise ValueError(f'head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}.')
  if not maps:
    raise ValueError('attention_rollout needs at least one layer of attention weights.')
  rollout = None
  for weights in maps:
    if weights.ndim != 4 or weights.shape[-1] != weights.shape[-2]:
      raise ValueError(f'attention weights must be [batch, heads, length, length], got shape '
                       f'{weights.shape}.')
    fused = getattr(jnp, head_fusion)(weights.astype(jnp.float32), axis=1)
    if residual:
      fused = 0.5 * fused + 0.5 * jnp.eye(fused.shape[-1], dtype=fused.dtype)
      fused = fused / fused.sum(-1, keepdims=True)
    rollout = fused if rollout is None else jnp.einsum('bqj,bjk->bqk', fused, rollout)
  if mask is not None:
    mask = jnp.asarray(mask, rollout.dtype)
    rollout = rollout * mask[:, :, None] * mask[:, None, :]
  return rollout


@jax.jit
def token_relevance(rollout: jnp.ndarray, mask: Optional[jnp.ndarray] = None,
                    query_weights: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Relevance of each input token to a pooled output: rollout rows averaged over queries.

  Args:
    rollout: [batch, queries, keys] from `attention_rollout`.
    mask: optional bool [batch, length], True on real tokens (padding queries are left out).
    query_weights: optional [batch, length] pooling weights of the queries (e.g. the sown
      'pooling_weights' of attention pooling); default: a mean over real queries (mean pooling).

  Returns:
    float32 [batch, keys], summing to 1 per example when rollout rows do.
  """
  batch, length, _ = rollout.shape
  weights = jnp.ones((batch, length), jnp.float32)
  if mask is not None:
    weights = weights * jnp.asarray(mask, jnp.float32)
  if query_weights is not None:
    weights = weights * jnp.asarray(query_weights, jnp.float32)
  weights = weights / jnp.maximum(weights.sum(-1, keepdims=True), 1e-12)
  return jnp.einsum('bq,bqk->bk', weights, rollout.astype(jnp.float32))
