"""The training loop: epochs of the pure data-parallel step, evaluation, checkpoints, logs.

`fit(config)` is what `scripts/train.py` calls; everything it does is built from the pure pieces
in `steps.py`, `parallel.py` and `checkpoint.py`, which a larger program can use on their own.
"""

import dataclasses
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jmed import data as jdata
from jmed import distributed
from jmed import metrics as jmetrics
from jmed import models
from jmed import privacy as jprivacy
from jmed import survival
from jmed.configs import TrainConfig
from jmed.data import augment as jaugment
from jmed.optim import make_optimizer
from jmed.train import checkpoint, parallel, steps
from jmed.train.state import create_train_state


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite."""


def _dispatch_groups(dataset_split, cfg: TrainConfig, epoch: int, first_step: int, last_step: int,
                     rows: slice = slice(None)):
  """Yields (global_step, batches [k, rows, ...]) for steps [first_step, last_step) of `epoch`.

  Batches come from the epoch's seeded permutation, so a run resumed mid-epoch sees exactly the
  batches an uninterrupted run would. `rows` is this process's share of each global batch.
  """
  images, labels = dataset_split
  it = jdata.train_batches(images, labels, cfg.batch_size, seed=cfg.seed, epoch=epoch, rows=rows)
  steps_per_epoch = len(images) // cfg.batch_size
  start = epoch * steps_per_epoch
  group, group_start = [], None
  for i, batch in enumerate(it):
    step = start + i
    if step < first_step:
      continue
    if step >= last_step:
      break
    if not group:
      group_start = step
    group.append(batch)
    if len(group) == cfg.steps_per_dispatch:
      yield group_start, _stack(group)
      group = []
  if group:
    yield group_start, _stack(group)


def _stack(batches):
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


SELECT_METRICS = ('auto', 'auroc', 'accuracy', 'auprc', 'f1', 'c_index', 'rmse', 'mae', 'r2',
                  'loss')
MINIMIZED = ('loss', 'rmse', 'mae')  # validation metrics where lower is better


def select_metric(name: str, task: str) -> str:
  """The validation metric that picks the best checkpoint: 'auto' is the C-index for survival,
  the RMSE for regression and AUROC otherwise."""
  if name not in SELECT_METRICS:
    raise ValueError(f'select_metric must be one of {SELECT_METRICS}, got {name!r}.')
  if name == 'auto':
    return {'survival': 'c_index', 'regression': 'rmse'}.get(task, 'auroc')
  if name != 'loss' and name not in _TASK_METRICS.get(task, _CLASSIFICATION_METRICS):
    raise ValueError(f'select_metric {name!r} does not apply to task {task!r}.')
  return name


_CLASSIFICATION_METRICS = ('auroc', 'accuracy', 'auprc', 'f1')
_TASK_METRICS = {'survival': ('c_index',), 'regression': ('rmse', 'mae', 'r2')}


def target_scale(labels):
  """(mean, std) of regression targets [n, targets] as float32 [targets] each (std 1 where a
  target is constant): training fits (y - mean) / std, and predictions are mapped back."""
  mean = labels.mean(0).astype(np.float32)
  std = labels.std(0).astype(np.float32)
  return mean, np.where(std > 0, std, 1).astype(np.float32)


def evaluate(state, eval_fn, images, labels, batch_size: int, mesh, task: str,
             scale=None) -> dict:
  """Loss and `jmed.metrics.classification_metrics` of `state` over every example (for
  'survival': `jmed.survival.survival_metrics`, the C-index and the Cox loss over the split; for
  'regression': `jmed.metrics.regression_metrics` in the targets' own units, where `scale` is
  `target_scale` of the training targets and the loss is the MSE of standardised targets)."""
  totals = {'loss_sum': 0.0, 'correct': 0.0, 'count': 0.0}
  probs = []
  scaled = labels if scale is None else (labels - scale[0]) / scale[1]
  rows = parallel.local_rows(batch_size, mesh)  # this process's share of each batch
  for batch in jdata.eval_batches(images, scaled, batch_size, rows=rows):
    out = parallel.to_host(eval_fn(state, parallel.shard_batch(batch, mesh)))
    for k in totals:
      totals[k] += float(out[k])
    probs.append(out['probs'])  # the whole global batch, gathered from every process
  if not math.isclose(totals['count'], len(labels)):
    raise AssertionError(f'evaluated {totals["count"]} examples of {len(labels)}')
  probs = np.concatenate(probs)[:len(labels)]  # padding is at the end of the last batch only
  if task == 'survival':  # the Cox loss couples examples: compute it over the whole split
    return survival.survival_metrics(probs, labels[:, 0], labels[:, 1])
  if task == 'regression':
    predictions = probs
    if scale is not None:
      predictions = predictions * scale[1] + scale[0]
    result = jmetrics.regression_metrics(predictions, labels)
  else:
    result = jmetrics.classification_metrics(probs, labels, task=task)
  result['loss'] = totals['loss_sum'] / totals['count']
  return result


class _MetricsLog:
  """Appends one JSON object per line to `path` (flushed at once: nothing lost on a crash).

  On resume (`resumed_step` not None) records past the restored step are dropped first: an
  epoch logged just before an interruption, whose checkpoint was not saved, is run and logged
  again. With `path` None (processes other than 0 of a multi-host run) nothing is written.
  """

  def __init__(self, path, resumed_step=None):
    self._file = None
    if path is None:
      return
    kept = []
    if resumed_step is not None and os.path.exists(path):
      with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)['step'] <= resumed_step]
    self._file = open(path, 'w')
    self._file.writelines(kept)
    self._file.flush()

  def write(self, record: dict) -> None:
    if self._file:
      self._file.write(json.dumps(record) + '\n')
      self._file.flush()

  def close(self) -> None:
    if self._file:
      self._file.close()


def _raise_if_non_finite(losses, first_step: int, ckpt_dir: str, manager) -> None:
  bad = np.flatnonzero(~np.isfinite(losses))
  if bad.size:
    step = first_step + int(bad[0])
    last = manager.latest_step()
    saved = f'the last checkpoint (step {last}) is in {ckpt_dir}' if last is not None else (
        'no checkpoint was saved yet')
    raise NonFiniteLossError(
        f'Training loss is {losses[bad[0]]} at step {step}; stopping. Metrics so far are in the '
        f'metrics log and {saved}. Try a lower learning rate or gradient clipping.')


def fit(cfg: TrainConfig, dataset=None) -> dict:
  """Trains `cfg.model` on `cfg.dataset`; returns the final summary (also in summary.json).

  Args:
    cfg: the run's config.
    dataset: an already loaded `jmed.data.Dataset` (default: `load_dataset(cfg.dataset, ...)`).
  """
  wall_start = time.perf_counter()
  for field in ('epochs', 'batch_size', 'eval_batch_size', 'steps_per_dispatch'):
    if getattr(cfg, field) < 1:
      raise ValueError(f'{field} must be >= 1, got {getattr(cfg, field)}.')
  if cfg.early_stopping_patience < 0:
    raise ValueError(f'early_stopping_patience must be >= 0, got {cfg.early_stopping_patience}.')
  if dataset is None:
    dataset = jdata.load_dataset(cfg.dataset, data_dir=cfg.data_dir, tfds_dir=cfg.tfds_dir,
                                 text=cfg.text, molecule=cfg.molecule)
  metric = select_metric(cfg.select_metric, dataset.task)
  class_weights = class_weights_for(cfg, dataset)  # checked before anything is written
  privacy = _privacy(cfg, dataset.task)
  augment = None if cfg.augment == 'none' else jaugment.get_augment(cfg.augment)
  train_images, train_labels = dataset.splits['train']
  scale = target_scale(train_labels) if dataset.task == 'regression' else None
  if scale is not None:  # train on standardised targets; metrics map predictions back
    train_labels = (train_labels - scale[0]) / scale[1]
  steps_per_epoch = len(train_images) // cfg.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'batch_size {cfg.batch_size} exceeds the {len(train_images)} training '
                     'examples.')
  total_steps = cfg.epochs * steps_per_epoch
  last_step = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps

  mesh = parallel.make_mesh()
  parallel.check_batch_size(cfg.batch_size, mesh)
  parallel.check_batch_size(cfg.eval_batch_size, mesh)

  model = build_model(cfg, dataset)
  tx = make_optimizer(cfg.optimizer, total_steps)
  state = create_train_state(model, tx, train_images[:1], cfg.seed)
  if privacy and state.batch_stats:
    raise ValueError(f'DP-SGD needs per-example gradients, which BatchNorm statistics do not '
                     f'allow: model {cfg.model!r} has {sorted(state.batch_stats)}; use a model '
                     'without BatchNorm.')
  state = parallel.replicate(state, mesh)

  primary = distributed.is_primary()  # one process writes the logs and JSON files
  os.makedirs(cfg.output_dir, exist_ok=True)
  ckpt_dir = os.path.join(cfg.output_dir, 'checkpoints')
  manager = checkpoint.make_manager(ckpt_dir, cfg.keep_checkpoints)
  if cfg.resume:
    state = checkpoint.restore_latest(manager, state)
  elif manager.latest_step() is not None:
    raise FileExistsError(f'{ckpt_dir} already holds checkpoints; pass resume=True (--resume) to '
                          'continue that run or choose another output_dir.')
  step = int(parallel.to_host(state.step))
  if primary:
    write_json(os.path.join(cfg.output_dir, 'config.json'), dataclasses.asdict(cfg))
    if dataset.tokenizer is not None:  # what turns new text into this model's inputs
      dataset.tokenizer.save(os.path.join(cfg.output_dir, 'tokenizer.json'))
  log = _MetricsLog(os.path.join(cfg.output_dir, 'metrics.jsonl') if primary else None,
                    step if cfg.resume else None)

  task = dataset.task
  train_fn = parallel.data_parallel(
      steps.bind(steps.train_steps, task, augment, class_weights, privacy), mesh,
      batch_axis=1)
  eval_fn = jax.jit(steps.bind(steps.eval_step, task))
  best = _read_best(cfg.output_dir) if cfg.resume else None
  stopped_early = False
  timing = {'train_seconds': 0.0, 'train_images': 0, 'compile_seconds': 0.0, 'compiled': set()}
  val_split = 'validation' if 'validation' in dataset.splits else None
  best_manager = (checkpoint.make_manager(os.path.join(cfg.output_dir, 'best'), 1)
                  if val_split else None)  # the best checkpoint by validation metric
  if best_manager and not cfg.resume and best_manager.latest_step() is not None:
    raise FileExistsError(f'{cfg.output_dir}/best already holds a checkpoint of another run; '
                          'pass resume=True (--resume) or choose another output_dir.')
  bar = tqdm(total=last_step, initial=step, unit='step', disable=not (cfg.progress and primary),
             dynamic_ncols=True)
  try:
    for epoch in range(step // steps_per_epoch, cfg.epochs):
      if step >= last_step:
        break
      state, record = _train_epoch(
          cfg, state, train_fn, mesh, manager, ckpt_dir, (train_images, train_labels), epoch,
          step, min(last_step, (epoch + 1) * steps_per_epoch), timing, bar)
      step = record['step']
      if task == 'regression':  # no notion of right or wrong
        record.pop('train_accuracy')
      if privacy:
        record['epsilon'] = _budget(cfg, len(train_images), step)['epsilon']
      if val_split:
        val = evaluate(state, eval_fn, *dataset.splits[val_split], cfg.eval_batch_size, mesh,
                       task, scale)
        record.update({f'val_{k}': v for k, v in val.items()})
        if _improves(val[metric], best, metric):
          best = {'epoch': epoch, 'step': step, 'metric': f'val_{metric}',
                  'value': val[metric], 'val': val}
          checkpoint.save(best_manager, state, wait=True)
          if primary:
            write_json(os.path.join(cfg.output_dir, 'best.json'), best)
        record['best_epoch'] = best['epoch'] if best else None
      log.write(record)
      checkpoint.save(manager, state)
      if (best and cfg.early_stopping_patience
          and epoch - best['epoch'] >= cfg.early_stopping_patience):
        stopped_early = True
        break
  finally:
    bar.close()
    manager.wait_until_finished()
    log.close()

  split_data = (*dataset.splits['test'], cfg.eval_batch_size, mesh, task, scale)
  last_test = evaluate(state, eval_fn, *split_data)
  if best is not None:  # report the test split at the checkpoint validation picked
    test = evaluate(checkpoint.restore_latest(best_manager, state), eval_fn, *split_data)
  else:
    test = last_test
  summary = {
      'model': cfg.model, 'dataset': dataset.name, 'task': task, 'steps': step,
      'epochs': cfg.epochs, 'batch_size': cfg.batch_size, 'devices': mesh.devices.size,
      'processes': jax.process_count(), 'dtype': cfg.dtype,
      'best': best, 'stopped_early': stopped_early,
      **({'target_scale': {'mean': scale[0].tolist(), 'std': scale[1].tolist()}}
         if scale is not None else {}),
      **({'privacy': _budget(cfg, len(train_images), step)} if privacy else {}),
      **{f'test_{k}': v for k, v in test.items()},
      **{f'last_test_{k}': v for k, v in last_test.items()},
      'train_images_per_sec': timing['train_images'] / max(timing['train_seconds'], 1e-9),
      'compile_seconds': timing['compile_seconds'],
      'wall_seconds': time.perf_counter() - wall_start,
  }
  if primary:
    write_json(os.path.join(cfg.output_dir, 'summary.json'), summary)
  return summary


def class_weights_for(cfg: TrainConfig, dataset):
  """`cfg.class_weights` resolved on `dataset`'s training labels: None or a tuple per class."""
  if cfg.class_weights == 'none':
    return None
  if cfg.class_weights != 'balanced' or dataset.task not in ('binary', 'multiclass'):
    raise ValueError(f"class_weights must be 'none', or 'balanced' for a single-label task; got "
                     f'{cfg.class_weights!r} for {dataset.task!r}.')
  return steps.balanced_class_weights(dataset.splits['train'][1], dataset.num_classes)


def _privacy(cfg: TrainConfig, task: str):
  """(l2_clip, noise_multiplier) for a DP-SGD run, else None; checked before anything is
  written."""
  if not cfg.privacy.enabled:
    return None
  jprivacy.check_config(cfg.privacy)
  if task == 'survival':
    raise ValueError("DP-SGD needs per-example gradients; the Cox loss of task 'survival' "
                     'couples examples in a batch.')
  return (float(cfg.privacy.l2_clip), float(cfg.privacy.noise_multiplier))


def _budget(cfg: TrainConfig, num_examples: int, step: int) -> dict:
  """The privacy spent after `step` steps (epsilon is None without noise: no guarantee)."""
  if cfg.privacy.noise_multiplier == 0:
    return {'epsilon': None, 'noise_multiplier': 0.0, 'steps': step}
  return jprivacy.budget(cfg.privacy, cfg.batch_size, num_examples, step)


def build_model(cfg: TrainConfig, dataset):
  """`cfg.model` sized for `dataset` (classes, vocabulary, ...) with `cfg.model_kwargs`."""
  kwargs = dict(num_classes=dataset.num_classes, dropout_rate=cfg.dropout_rate,
                dtype=jnp.dtype(cfg.dtype), **dataset.model_kwargs)
  kwargs.update(cfg.model_kwargs)
  try:
    return models.get_model(cfg.model, **kwargs)
  except TypeError as e:
    hint = ''
    if 'vocab_size' in str(e):
      hint = (' (the inputs are token ids: use a sequence model such as transformer, gru or '
              'text_cnn, or fingerprints for molecules: --molecule-features fingerprint)')
    raise ValueError(f'model {cfg.model!r} does not fit dataset {dataset.name!r} with '
                     f'{sorted(kwargs)}: {e}{hint}') from None


def _improves(value, best, metric: str) -> bool:
  """Whether validation `value` beats the best so far (`MINIMIZED` metrics are minimised, the
  rest maximised)."""
  if value is None or not math.isfinite(value):
    return False
  if best is None:
    return True
  return value < best['value'] if metric in MINIMIZED else value > best['value']


def _read_best(output_dir: str):
  path = os.path.join(output_dir, 'best.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_json(path: str, obj) -> None:
  """Writes `obj` as indented JSON to `path` through a temporary file, so `path` is never left
  half-written, even by an interruption."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def _train_epoch(cfg, state, train_fn, mesh, manager, ckpt_dir, train_split, epoch,
                 first_step, last_step, timing, bar):
  """Runs steps [first_step, last_step) of `epoch`; returns (state, the epoch's record).

  The loss of each dispatch is read one dispatch later, so checking it for NaN never stalls
  the device. The first dispatch of each size (which compiles) is timed apart from training.
  """
  sums = {'loss_sum': 0.0, 'correct': 0.0, 'count': 0}
  pending = None  # (first step, metrics) of the dispatch whose results are not yet read
  epoch_start = steady_start = time.perf_counter()
  groups = jdata.prefetch(
      _dispatch_groups(train_split, cfg, epoch, first_step, last_step,
                       parallel.local_rows(cfg.batch_size, mesh)),
      transform=lambda g: (g[0], parallel.shard_batch(g[1], mesh, batch_axis=1)))

  def consume(pending):
    group_step, metrics = pending
    metrics = parallel.to_host(metrics)
    _raise_if_non_finite(metrics['loss_sum'] / metrics['count'], group_step, ckpt_dir, manager)
    for k in metrics:
      sums[k] = sums.get(k, 0) + metrics[k].sum()

  step = first_step
  try:
    for group_step, batches in groups:
      k = int(batches['label'].shape[0])
      compiles = k not in timing['compiled']  # a new dispatch size compiles: time it apart
      if compiles:
        jax.block_until_ready(state.step)
        t0 = time.perf_counter()
        timing['train_seconds'] += t0 - steady_start
      state, metrics = train_fn(state, batches)
      if compiles:
        jax.block_until_ready(state.step)
        steady_start = time.perf_counter()
        timing['compile_seconds'] += steady_start - t0
        timing['compiled'].add(k)
      else:
        timing['train_images'] += k * cfg.batch_size
      if pending is not None:
        consume(pending)
      pending = (group_step, metrics)
      step = group_step + k
      if cfg.checkpoint_every and step // cfg.checkpoint_every > group_step // cfg.checkpoint_every:
        consume(pending)  # never checkpoint a state whose loss was not checked
        pending = None
        checkpoint.save(manager, state)
      bar.update(k)
      if sums['count']:
        seconds = timing['train_seconds'] + time.perf_counter() - steady_start
        rate = timing['train_images'] / max(seconds, 1e-9)  # compilation excluded
        bar.set_postfix(epoch=epoch, loss=f'{sums["loss_sum"] / sums["count"]:.4f}',
                        img_s=f'{rate:.0f}', refresh=False)
  finally:
    groups.close()  # stops the producer thread on an error too
  if pending is not None:
    consume(pending)
  jax.block_until_ready(state.step)
  end = time.perf_counter()
  timing['train_seconds'] += end - steady_start
  count = max(sums['count'], 1)
  record = {'epoch': epoch, 'step': step, 'train_loss': float(sums['loss_sum'] / count),
            'train_accuracy': float(sums['correct'] / count),
            'epoch_seconds': end - epoch_start,
            'images_per_sec': float(sums['count'] / (end - epoch_start))}
  if 'clipped' in sums:  # DP-SGD: share of per-example gradients the clip bound cut
    record['train_clipped_fraction'] = float(sums['clipped'] / count)
  return state, record
