"""Deep ensembles (Lakshminarayanan et al. 2017) trained in one program by `jax.vmap`.

An ensemble is one `TrainState` whose every leaf has a leading [members] axis: member m is
exactly the state `create_train_state(model, tx, sample, seeds[m])` would give. Training vmaps
the pure `steps.train_step` over that axis, so members differ in their initialisation and their
dropout (and augmentation) keys, all derived from their seeds.

Shuffling, the choice made here: by default every member sees the same batches in the same
order (`shared_batch=True`): one host pipeline, one host-to-device copy, the batch broadcast to
the members inside the program; member m trains as a single model initialised from `seeds[m]`
would on `cfg.seed`'s batch order (up to float rounding). Random initialisation is the main
source of a deep ensemble's diversity (Fort et al. 2019). With `independent_shuffles=True`
(`shared_batch=False` for the step) each member gets its own epoch order, seeded by its own
seed, as [members, batch, ...] batches: `members` times the host work and copies.

Under a device mesh (`jmed.train.parallel`) the stacked state is replicated and the batch is
sharded over 'data' along its batch axis, exactly as for one model.
"""

import dataclasses
import functools
import json
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jmed import data as jdata
from jmed import metrics as jmetrics
from jmed import plots
from jmed import uncertainty
from jmed.configs import TrainConfig
from jmed.data import augment as jaugment
from jmed.optim import make_optimizer
from jmed.train import parallel, steps
from jmed.train.loop import NonFiniteLossError, build_model, class_weights_for, write_json
from jmed.train.state import TrainState, create_train_state

TASKS = ('binary', 'multiclass', 'multilabel')


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


def vmap_members(step_fn, shared_batch: bool = True):
  """Maps `step_fn(state, batch) -> (state, outputs)` over the [members] axis of the state.

  The batch is shared by all members (`shared_batch`) or has its own leading [members] axis.
  """
  return jax.vmap(step_fn, in_axes=(0, None if shared_batch else 0))


def ensemble_train_step(state, batch, *, task: str = 'multiclass', augment=None,
                        class_weights=None, shared_batch: bool = True):
  """`steps.train_step` for every member at once; returns (new_state, metrics).

  Args:
    state: an ensemble `TrainState` (leading [members] axis).
    batch: {'image': [batch, ...], 'label': [batch, ...]}, or with a leading [members] axis on
      both when `shared_batch` is False.
    task, augment, class_weights: as in `steps.train_step` (static).
    shared_batch: whether every member trains on the same batch (static).

  Returns:
    The new ensemble state and metrics {'loss_sum', 'correct', 'count'}, each [members].
  """
  step = functools.partial(steps.train_step, task=task, augment=augment,
                           class_weights=class_weights)
  return vmap_members(step, shared_batch)(state, batch)


def ensemble_eval_step(state, batch, *, task: str = 'multiclass'):
  """`steps.eval_step` for every member on one shared padded batch.

  Returns:
    {'loss_sum', 'correct', 'count'}: [members] masked sums; 'probs': [members, batch, classes].
  """
  return vmap_members(functools.partial(steps.eval_step, task=task))(state, batch)


def ensemble_predict(state, eval_fn, images, labels, batch_size: int, mesh) -> np.ndarray:
  """Every member's probabilities on a whole split, padding removed.

  Args:
    state: an ensemble `TrainState`, replicated over `mesh`.
    eval_fn: jit-compiled `ensemble_eval_step` with its task bound.
    images: [n, ...]; labels: [n, ...].
    batch_size: global eval batch, a multiple of the mesh's devices.
    mesh: the device mesh batches are sharded over.

  Returns:
    [members, n, classes] probabilities.
  """
  probs = []
  for batch in jdata.eval_batches(images, labels, batch_size):
    out = jax.device_get(eval_fn(state, parallel.shard_batch(batch, mesh)))
    probs.append(out['probs'][:, batch['mask'] > 0])
  return np.concatenate(probs, axis=1)


def evaluate_members(member_probs, labels, task: str) -> dict:
  """Per-member, mean-of-members and ensemble metrics (`uncertainty.prediction_metrics`).

  Args:
    member_probs: [members, n, classes].
    labels: [n] or [n, labels].
    task: 'binary' | 'multiclass' | 'multilabel'.

  Returns:
    {'members': one metrics dict per member, 'mean_member': their mean, 'ensemble': the metrics
    of the mean probabilities, plus for softmax tasks the mean predictive entropy and mutual
    information over the split}.
  """
  members = [uncertainty.prediction_metrics(p, labels, task) for p in member_probs]
  ensemble = uncertainty.prediction_metrics(member_probs.mean(0), labels, task)
  if task != 'multilabel':
    summary = uncertainty.ensemble_summary(member_probs)
    ensemble['mean_predictive_entropy'] = float(summary['predictive_entropy'].mean())
    ensemble['mean_mutual_information'] = float(summary['mutual_information'].mean())
  mean_member = {k: float(np.mean([m[k] for m in members])) for k, v in members[0].items()
                 if isinstance(v, float) and all(m[k] is not None for m in members)}
  return {'members': members, 'mean_member': mean_member, 'ensemble': ensemble}


def _epoch_batches(images, labels, cfg: TrainConfig, seeds, epoch: int, independent: bool):
  """The epoch's shared batches, or [members, batch, ...] batches of per-member orders."""
  if not independent:
    return jdata.train_batches(images, labels, cfg.batch_size, seed=cfg.seed, epoch=epoch)
  orders = [jdata.train_batches(images, labels, cfg.batch_size, seed=int(s), epoch=epoch)
            for s in seeds]
  return ({k: np.stack([b[k] for b in group]) for k in group[0]} for group in zip(*orders))


def fit_ensemble(cfg: TrainConfig, members: int, dataset=None, *,
                 independent_shuffles: bool = False):
  """Trains a `members`-model deep ensemble of `cfg.model` on `cfg.dataset` in one program.

  Member m has seed `cfg.seed + m`. Every epoch runs the shuffled training split (see the
  module docstring for `independent_shuffles`), one vmapped step per batch, data-parallel over
  all devices, checking the loss for NaN one step behind; with a validation split the
  ensemble's validation metrics are logged each epoch. No checkpoints or model selection: the
  test split is evaluated after the last step.

  Writes into `cfg.output_dir`: config.json, metrics.jsonl (per epoch: each member's train
  loss, the ensemble's validation metrics), summary.json (per-member, mean-of-members and
  ensemble test metrics, each with ECE and NLL) and reliability.png (the ensemble's reliability
  diagram on the test split).

  Args:
    cfg: the run's config (`epochs`, `batch_size`, `optimizer`, `dropout_rate`, `max_steps`, ...;
      `steps_per_dispatch`, checkpointing and early stopping are not used).
    members: ensemble size, >= 1.
    dataset: an already loaded `jmed.data.Dataset` (default: `load_dataset(cfg.dataset, ...)`).
    independent_shuffles: give each member its own epoch order.

  Returns:
    (the trained ensemble state, replicated over the mesh; the summary dict).
  """
  wall_start = time.perf_counter()
  _check_args(cfg, members)
  members = int(members)
  if dataset is None:
    dataset = jdata.load_dataset(cfg.dataset, data_dir=cfg.data_dir, tfds_dir=cfg.tfds_dir,
                                 text=cfg.text, molecule=cfg.molecule)
  if dataset.task not in TASKS:
    raise ValueError(f'fit_ensemble supports tasks {TASKS}, not {dataset.task!r} '
                     f'({dataset.name}).')
  class_weights = class_weights_for(cfg, dataset)
  augment = None if cfg.augment == 'none' else jaugment.get_augment(cfg.augment)
  images = dataset.splits['train'][0]
  steps_per_epoch = len(images) // cfg.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'batch_size {cfg.batch_size} exceeds the {len(images)} training examples.')
  total_steps = cfg.epochs * steps_per_epoch
  mesh = parallel.make_mesh()
  parallel.check_batch_size(cfg.batch_size, mesh)
  parallel.check_batch_size(cfg.eval_batch_size, mesh)

  seeds = [cfg.seed + m for m in range(members)]
  tx = make_optimizer(cfg.optimizer, total_steps)
  state = create_ensemble_state(build_model(cfg, dataset), tx, images[:1], seeds)
  state = parallel.replicate(state, mesh)
  os.makedirs(cfg.output_dir, exist_ok=True)
  write_json(os.path.join(cfg.output_dir, 'config.json'),
              {**dataclasses.asdict(cfg), 'members': members, 'seeds': seeds,
               'independent_shuffles': independent_shuffles})
  train_fn = parallel.data_parallel(functools.partial(
      ensemble_train_step, task=dataset.task, augment=augment, class_weights=class_weights,
      shared_batch=not independent_shuffles), mesh)
  eval_fn = jax.jit(functools.partial(ensemble_eval_step, task=dataset.task))

  def predict(state, split):
    return ensemble_predict(state, eval_fn, *dataset.splits[split], cfg.eval_batch_size, mesh)

  last_step = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
  train_start = time.perf_counter()
  state, step = _train(cfg, dataset, state, train_fn, predict, seeds, last_step, mesh,
                       independent_shuffles)
  train_seconds = time.perf_counter() - train_start

  test_labels = dataset.splits['test'][1]
  member_probs = predict(state, 'test')
  test = evaluate_members(member_probs, test_labels, dataset.task)
  plots.reliability_diagram(
      *jmetrics.calibration_inputs(member_probs.mean(0), test_labels, dataset.task),
      os.path.join(cfg.output_dir, 'reliability.png'),
      title=f'{members}-member ensemble, {dataset.name} test')
  summary = {
      'model': cfg.model, 'dataset': dataset.name, 'task': dataset.task, 'members': members,
      'seeds': seeds, 'independent_shuffles': independent_shuffles, 'steps': step,
      'epochs': cfg.epochs, 'batch_size': cfg.batch_size, 'devices': mesh.devices.size,
      **{f'test_{k}': v for k, v in test.items()},
      'train_seconds': train_seconds,  # compilation and validation included
      'wall_seconds': time.perf_counter() - wall_start,
  }
  write_json(os.path.join(cfg.output_dir, 'summary.json'), summary)
  return state, summary


def _check_args(cfg: TrainConfig, members) -> None:
  if isinstance(members, bool) or not isinstance(members, (int, np.integer)) or members < 1:
    raise ValueError(f'members must be a positive int, got {members!r}.')
  if jax.process_count() > 1:
    raise NotImplementedError('fit_ensemble runs in one process (all its local devices); a '
                              'multi-host run can train the members as separate fit runs.')
  for field in ('epochs', 'batch_size', 'eval_batch_size'):
    if getattr(cfg, field) < 1:
      raise ValueError(f'{field} must be >= 1, got {getattr(cfg, field)}.')
  if cfg.privacy.enabled:
    raise ValueError('fit_ensemble does not train with DP-SGD; train each member with fit.')


def _train(cfg, dataset, state, train_fn, predict, seeds, last_step, mesh, independent):
  """The epochs of `fit_ensemble`, logged to metrics.jsonl; returns (state, steps run)."""
  images, labels = dataset.splits['train']
  step = 0
  bar = tqdm(total=last_step, unit='step', disable=not cfg.progress, dynamic_ncols=True)
  with open(os.path.join(cfg.output_dir, 'metrics.jsonl'), 'w') as log:
    try:
      for epoch in range(cfg.epochs):
        if step >= last_step:
          break
        start = time.perf_counter()
        batches = jdata.prefetch(
            _epoch_batches(images, labels, cfg, seeds, epoch, independent),
            transform=lambda b: parallel.shard_batch(b, mesh, 1 if independent else 0))
        state, losses, step = _train_epoch(state, train_fn, batches, step, last_step, bar, epoch)
        record = {'epoch': epoch, 'step': step, 'train_loss': losses.tolist(),
                  'epoch_seconds': time.perf_counter() - start}
        if 'validation' in dataset.splits:
          val = evaluate_members(predict(state, 'validation'), dataset.splits['validation'][1],
                                 dataset.task)
          record.update({f'val_{k}': v for k, v in val['ensemble'].items()})
        log.write(json.dumps(record) + '\n')
        log.flush()
    finally:
      bar.close()
  return state, step


def _train_epoch(state, train_fn, batches, step: int, last_step: int, bar, epoch: int):
  """Runs the epoch's batches until `last_step`; returns (state, mean losses [members], step).

  Each step's loss is read (and checked for NaN) one step later, so reading never stalls the
  device.
  """
  sums, count, pending = 0.0, 0, None
  try:
    for batch in batches:
      if step >= last_step:
        break
      state, metrics = train_fn(state, batch)
      if pending is not None:
        sums, count = sums + _read_loss(pending, step - 1), count + 1
        bar.set_postfix(epoch=epoch, loss=f'{np.mean(sums) / count:.4f}', refresh=False)
      pending, step = metrics, step + 1
      bar.update(1)
  finally:
    batches.close()
  if pending is not None:
    sums, count = sums + _read_loss(pending, step - 1), count + 1
  return state, np.asarray(sums) / max(count, 1), step


def _read_loss(metrics, step: int) -> np.ndarray:
  """Per-member mean loss [members] of one step's metrics; raises `NonFiniteLossError` naming
  the member and step of a NaN or infinite loss."""
  metrics = jax.device_get(metrics)
  losses = np.asarray(metrics['loss_sum']) / np.maximum(np.asarray(metrics['count']), 1)
  bad = np.flatnonzero(~np.isfinite(losses))
  if bad.size:
    raise NonFiniteLossError(
        f'Training loss of member {bad[0]} is {losses[bad[0]]} at step {step}; stopping. Try a '
        'lower learning rate or gradient clipping.')
  return losses
