"""Orbax checkpoints of a `TrainState`: save every N steps, resume from the latest."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from jmed.train import parallel


def make_manager(directory: str, keep: int = 2) -> ocp.CheckpointManager:
  """An orbax CheckpointManager over `directory` (created if missing) keeping `keep` steps."""
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def _to_saveable(state):
  """The pytree we store: arrays only (the PRNG key as its raw uint32 data)."""
  return {
      'step': state.step,
      'params': state.params,
      'model_state': state.model_state,
      'opt_state': state.opt_state,
      'rng': jax.random.key_data(state.rng),
  }


def step_of(state) -> int:
  """The step of a state on the host (of its first member, for an ensemble's stacked state)."""
  return int(np.ravel(parallel.to_host(state.step))[0])


def save(manager: ocp.CheckpointManager, state, *, wait: bool = False) -> None:
  """Saves `state` under its step (asynchronously unless `wait`)."""
  step = step_of(state)
  manager.save(step, args=ocp.args.StandardSave(_to_saveable(state)))
  if wait:
    manager.wait_until_finished()


def restore_latest(manager: ocp.CheckpointManager, state):
  """Returns `state` with the latest checkpoint's values, or `state` unchanged if there is none.

  `state` is a freshly created TrainState: it supplies the structure, shardings and the static
  parts (apply_fn, tx) that are not stored.
  """
  step = manager.latest_step()
  if step is None:
    return state
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_saveable(state))
  restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  return state.replace(
      step=restored['step'], params=restored['params'], model_state=restored['model_state'],
      opt_state=restored['opt_state'], rng=jax.random.wrap_key_data(restored['rng']))
