"""Deep ensembles (Lakshminarayanan et al. 2017) trained in one program by `jax.vmap`.

An ensemble is one `TrainState` whose every leaf has a leading [members] axis: member m is
exactly the state `create_train_state(model, tx, sample, seeds[m])` would give. Training vmaps
the pure `steps.train_step` over that axis, so members differ in their initialisation and their
dropout (and augmentation) keys, all derived from their seeds.

`fit_ensemble` is `fit` with such a state: the same loop, checks, logs, checkpoints,
validation-picked best checkpoint, early stopping and resumption (`jmed.train.loop`).

Shuffling, the choice made here: by default every member sees the same batches in the same
order: one host pipeline, one host-to-device copy, the batch broadcast to the members inside the
program; member m trains as a single model initialised from `seeds[m]` would on `cfg.seed`'s
batch order (up to float rounding). Random initialisation is the main source of a deep
ensemble's diversity (Fort et al. 2019). With `independent_shuffles=True` each member gets its
own epoch order, seeded by its own seed: `members` times the host work and copies.

Under a device mesh (`jmed.train.parallel`) the stacked state is replicated and the batch is
sharded over 'data' along its batch axis, exactly as for one model.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jmed.configs import TrainConfig
from jmed.data import pipeline
from jmed.train import loop, parallel, steps
from jmed.train.state import TrainState, create_train_state


def create_ensemble_state(model, tx, sample_input, seeds: Sequence[int]) -> TrainState:
  """`create_train_state` for every seed, vmapped: each leaf gets a leading [members] axis.

  Args:
    model: a flax module.
    tx: the optax optimizer shared by all members.
    sample_input: [batch, ...] (one example suffices).
    seeds: distinct ints in [0, 2**31), one per member.

  Returns:
    A `TrainState` whose leaf `x[m]` equals the leaf of `create_train_state(..., seeds[m])`.
  """
  seeds = np.asarray(seeds)
  if seeds.ndim != 1 or len(seeds) == 0 or not np.issubdtype(seeds.dtype, np.integer):
    raise ValueError(f'seeds must be a non-empty sequence of ints, got {seeds!r}.')
  if seeds.min() < 0 or seeds.max() >= 2**31 or len(np.unique(seeds)) != len(seeds):
    raise ValueError(f'seeds must be distinct ints in [0, 2**31) (equal seeds give equal '
                     f'members), got {seeds.tolist()}.')
  init = jax.vmap(lambda seed: create_train_state(model, tx, sample_input, seed))
  return jax.jit(init)(jnp.asarray(seeds, jnp.int32))


def num_members(state: TrainState) -> int:
  """The size of the leading [members] axis of an ensemble state."""
  return int(state.step.shape[0])


def member_state(state: TrainState, index: int) -> TrainState:
  """Member `index` of an ensemble as an ordinary single-model `TrainState`."""
  if not 0 <= index < num_members(state):
    raise ValueError(f'index {index} outside the ensemble of {num_members(state)} members.')
  return jax.tree.map(lambda x: x[index], state)


def ensemble_train_step(state, batch, *, task='multiclass', augment=None, class_weights=None,
                        shared_batch: bool = True):
  """`steps.train_step` for every member at once; returns (new_state, metrics).

  Args:
    state: an ensemble `TrainState` (leading [members] axis).
    batch: {'inputs': [batch, ...], 'labels': [batch, ...]}, or with a leading [members] axis
      on both when `shared_batch` is False.
    task, augment, class_weights: as in `steps.train_step` (static).
    shared_batch: whether every member trains on the same batch (static).

  Returns:
    The new ensemble state and `steps.train_step`'s metrics, each [members].
  """
  step = functools.partial(steps.train_step, task=task, augment=augment,
                           class_weights=class_weights)
  return jax.vmap(step, in_axes=(0, None if shared_batch else 0))(state, batch)


def ensemble_eval_step(state, batch, *, task='multiclass'):
  """`steps.eval_step` for every member on one shared padded batch.

  Returns:
    {'loss_sum', 'count'}: [members] masked sums; 'predictions': [members, batch, ...].
  """
  return jax.vmap(functools.partial(steps.eval_step, task=task), in_axes=(0, None))(state, batch)


def ensemble_predict(state, eval_fn, inputs, labels, batch_size: int, mesh) -> np.ndarray:
  """Every member's predictions on a whole split, padding removed.

  Args:
    state: an ensemble `TrainState`, replicated over `mesh`.
    eval_fn: jit-compiled `ensemble_eval_step` with its task bound.
    inputs: [n, ...]; labels: [n, ...].
    batch_size: global eval batch, a multiple of the mesh's devices.
    mesh: the device mesh batches are sharded over.

  Returns:
    [members, n, ...] predictions (probabilities for classification tasks).
  """
  predictions = []
  for batch in pipeline.eval_batches(inputs, labels, batch_size):
    out = jax.device_get(eval_fn(state, parallel.shard_batch(batch, mesh)))
    predictions.append(out['predictions'][:, batch['valid'] > 0])
  return np.concatenate(predictions, axis=1)


def fit_ensemble(cfg: TrainConfig, members: int, dataset=None, *,
                 independent_shuffles: bool = False):
  """Trains a `members`-model deep ensemble of `cfg.model` on `cfg.dataset` in one program.

  `fit` with a vmapped state: member m has seed `cfg.seed + m`; the ensemble's prediction is
  the mean of its members' (`task.combine`), whose validation metric picks the best checkpoint.
  Writes what `fit` writes; summary.json's `test_*` metrics are the ensemble's, with
  `test_members` (each member alone) and `test_mean_member` (their mean) beside them, and for
  classification tasks the NLL, mean predictive entropy and mutual information. For
  classification tasks it also writes reliability.png, the ensemble's reliability diagram on
  the test split (at the best checkpoint).

  Args:
    cfg: the run's config (as for `fit`; DP-SGD is not supported).
    members: ensemble size, >= 1.
    dataset: an already loaded `jmed.data.Dataset` (default: `loop.load_dataset(cfg)`).
    independent_shuffles: give each member its own epoch order.

  Returns:
    (the trained ensemble state, replicated over the mesh; the summary dict).
  """
  if isinstance(members, bool) or not isinstance(members, (int, np.integer)) or members < 1:
    raise ValueError(f'members must be a positive int, got {members!r}.')
  if jax.process_count() > 1:
    raise NotImplementedError('fit_ensemble runs in one process (all its local devices); a '
                              'multi-host run can train the members as separate fit runs.')
  if cfg.privacy.enabled:
    raise ValueError('fit_ensemble does not train with DP-SGD; train each member with fit.')
  return loop.train_and_evaluate(cfg, dataset, loop.Ensemble(int(members), independent_shuffles))
