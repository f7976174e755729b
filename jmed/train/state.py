"""The functional training state: everything a step reads and writes, in one pytree."""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """flax's TrainState (step, apply_fn, params, tx, opt_state) plus model state and a PRNG key.

  Attributes:
    model_state: the model's variable collections other than 'params', as flax names them:
      `{'batch_stats': ...}` for a model with BatchNorm, `{}` for one without. A model is
      applied to `{'params': state.params, **state.model_state}`.
    rng: base key; each step folds in its step number for dropout.
  """

  model_state: Any = flax.struct.field(default_factory=dict)
  rng: jax.Array = None

  @property
  def variables(self) -> dict:
    """`{'params': ..., **model_state}`: what `apply_fn` takes."""
    return {'params': self.params, **self.model_state}


def create_train_state(model, tx: optax.GradientTransformation, sample_input, seed: int):
  """Initialises parameters from `sample_input` ([batch, ...], one example suffices).

  The init key and the step key are split from `seed`, so a run is reproducible from its seed.
  The model's `init` runs as one compiled program, cached per model (a flax module with hashable
  hyperparameters: tuples, not lists) and input shape, so building the same model again costs
  nothing.
  """
  init_rng, step_rng = jax.random.split(jax.random.key(seed))
  params, model_state = split_variables(
      _init_variables(model, jnp.asarray(sample_input), init_rng))
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx, model_state=model_state,
                           rng=step_rng)


def split_variables(variables: dict):
  """(params, model state) of a model's variables: the model state is every collection but the
  parameters and what modules sow for inspection ('intermediates')."""
  model_state = {k: v for k, v in variables.items() if k not in ('params', 'intermediates')}
  return variables['params'], model_state


def _init_variables(model, sample_input, rng) -> dict:
  try:
    hash(model)
  except TypeError:  # unhashable hyperparameters: compiled, but not cached
    return jax.jit(functools.partial(_init, model))(sample_input, rng)
  return _cached_init(model, sample_input, rng)


def _init(model, sample_input, rng) -> dict:
  return model.init({'params': rng, 'dropout': rng}, sample_input, train=False)


_cached_init = jax.jit(_init, static_argnums=0)
