"""Neural treatment-effect models for covariates [batch, features]: TARNet/CFR and Dragonnet.

Both map covariates to a shared representation Phi(x) and predict the two potential outcomes
from it with one head per arm. They return a dict (the task `jmed.tasks.TreatmentEffect`
reads it):

  'outcomes':       [batch, 2] (y0, y1), on the task's standardised outcome scale;
  'representation': [batch, d] Phi(x), what CFR's IPM penalty compares across arms;
  'propensity':     [batch] logit of P(t = 1 | x) (Dragonnet only);
  'epsilon':        [batch] the targeted-regularisation scalar, broadcast (Dragonnet only).

CFR (counterfactual regression) is TARNet trained with an IPM penalty on the representation;
the penalty is the task's (`ipm` in `task_kwargs`), the network is the same.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


def _check_inputs(x, name: str):
  if x.ndim < 2:
    raise ValueError(f'{name} expects covariates [batch, features], got shape {x.shape}.')
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f'{name} takes float covariates, got {x.dtype} inputs.')
  return x.reshape((x.shape[0], -1))


class _Stack(nn.Module):
  """Dense-ELU-Dropout per width."""

  widths: Sequence[int]
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    for width in self.widths:
      x = nn.elu(nn.Dense(width, dtype=self.dtype)(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return x


class _OutcomeHeads(nn.Module):
  """One stack and a linear output per arm: [batch, d] -> [batch, 2] (y0, y1)."""

  widths: Sequence[int]
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, rep, train: bool = False):
    outcomes = []
    for arm in (0, 1):
      h = _Stack(self.widths, self.dropout_rate, self.dtype, name=f'y{arm}_hidden')(rep, train)
      outcomes.append(nn.Dense(1, dtype=self.dtype, name=f'y{arm}_out')(h)[:, 0])
    return jnp.stack(outcomes, -1)


class TARNet(nn.Module):
  """Treatment-agnostic representation network (Shalit et al. 2017): a shared ELU MLP, then
  one ELU outcome head per arm. Trained with an IPM penalty it is CFR.

  Attributes:
    num_classes: accepted for `build_model`'s sake and unused (always two outcomes).
    representation: widths of the shared layers (Shalit et al.: 3 of 200).
    head: widths of each outcome head's hidden layers (3 of 100).
    normalize: divide the representation by its L2 norm (CFRNet's 'divide' normalisation), so
      the IPM penalty cannot shrink by scaling it down.
    dropout_rate: dropout after every hidden layer in training.
    dtype: computation dtype; outputs are float32.
  """

  num_classes: int = 2
  representation: Sequence[int] = (200, 200, 200)
  head: Sequence[int] = (100, 100, 100)
  normalize: bool = False
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Covariates [batch, features] -> {'outcomes': [batch, 2], 'representation': [batch, d]}."""
    x = _check_inputs(x, 'TARNet').astype(self.dtype)
    rep = _Stack(self.representation, self.dropout_rate, self.dtype, name='phi')(x, train)
    if self.normalize:
      rep = rep / jnp.sqrt(jnp.maximum(jnp.square(rep).sum(-1, keepdims=True), 1e-10))
    outcomes = _OutcomeHeads(self.head, self.dropout_rate, self.dtype, name='heads')(rep, train)
    return {'outcomes': outcomes.astype(jnp.float32), 'representation': rep.astype(jnp.float32)}


class Dragonnet(nn.Module):
  """Dragonnet (Shi, Blei and Veitch, NeurIPS 2019): a shared ELU representation, two outcome
  heads and a propensity head (a linear logit of the representation), plus the trainable scalar
  epsilon of targeted regularisation.

  Attributes:
    num_classes: accepted for `build_model`'s sake and unused.
    representation: widths of the shared layers (Shi et al.: 3 of 200).
    head: widths of each outcome head's hidden layers (2 of 100).
    dropout_rate: dropout after every hidden layer in training.
    dtype: computation dtype; outputs are float32.
  """

  num_classes: int = 2
  representation: Sequence[int] = (200, 200, 200)
  head: Sequence[int] = (100, 100)
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Covariates [batch, features] -> {'outcomes': [batch, 2], 'representation': [batch, d],
    'propensity': [batch] (logit), 'epsilon': [batch]}."""
    x = _check_inputs(x, 'Dragonnet').astype(self.dtype)
    rep = _Stack(self.representation, self.dropout_rate, self.dtype, name='phi')(x, train)
    outcomes = _OutcomeHeads(self.head, self.dropout_rate, self.dtype, name='heads')(rep, train)
    propensity = nn.Dense(1, dtype=self.dtype, name='propensity')(rep)[:, 0]
    epsilon = self.param('epsilon', nn.initializers.zeros, (), jnp.float32)
    return {'outcomes': outcomes.astype(jnp.float32),
            'representation': rep.astype(jnp.float32),
            'propensity': propensity.astype(jnp.float32),
            'epsilon': jnp.broadcast_to(epsilon, (x.shape[0],))}
