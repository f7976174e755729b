"""The training loop: epochs of the pure data-parallel step, validation, checkpoints, logs.

`fit(config)` is what `scripts/train.py` calls. It reads top to bottom as big_vision's trainer
does: `_setup` (every check that can fail on bad input, then the output directory), then per
epoch `_train_epoch` and `_validate`, then `_finish` (the test split at the best and the last
checkpoint, summary.json). What depends on the kind of task is asked of the task
(`jmed.tasks`). Everything is built from the pure pieces in `steps.py`, `parallel.py` and
`checkpoint.py`, which a larger program can use on their own.

A deep ensemble (`jmed.train.ensemble.fit_ensemble`) runs through the same loop: its state is
K models stacked on a leading [members] axis and its steps are the same steps under `jax.vmap`.

What a run writes in `output_dir` (the primary process): config.json, metrics.jsonl (one
record per epoch), tensorboard/ (the same scalars plus the learning rate, as TensorBoard
events), checkpoints/ and best/ (orbax, every process), best.json, summary.json, curves.png
(loss and selection metric per epoch), overlays/test_<i>.png after segmentation (image, ground
truth, prediction), and where the data has them tokenizer.json and
preprocessing.json (what turns a new file of the same format into this model's inputs).

Resuming (`cfg.resume`) needs config.json and a checkpoint in `output_dir`, and a config equal
to the saved one except for `RESUMABLE_FIELDS` (the run's length, where files are, how often it
saves, evaluation batch and patience); otherwise it refuses before writing anything, naming
each differing field.
"""

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jmed import distributed
from jmed import models
from jmed import privacy as jprivacy
from jmed import tasks
from jmed.configs import TrainConfig
from jmed.data import augment as jaugment
from jmed.data import pipeline
from jmed.errors import ConfigError, NonFiniteLossError, RunDirError
from jmed.optim import make_optimizer, make_schedule
from jmed.train import checkpoint, init_from, logs, parallel, steps
from jmed.train.state import create_train_state

__all__ = ['Ensemble', 'NonFiniteLossError', 'RESUMABLE_FIELDS', 'build_model', 'check_config',
           'check_resume', 'configured_task', 'evaluate', 'fit', 'has_checkpoint', 'load_dataset',
           'train_and_evaluate', 'write_json']

# TrainConfig fields a resumed run may change: its length, where files are, how often it saves,
# the evaluation batch and the early-stopping patience. Any other difference from the saved
# config.json is refused (`check_resume`).
RESUMABLE_FIELDS = ('epochs', 'max_steps', 'progress', 'output_dir', 'data_dir', 'tfds_dir',
                    'keep_checkpoints', 'checkpoint_every', 'eval_batch_size',
                    'early_stopping_patience', 'resume')


@dataclasses.dataclass(frozen=True)
class Ensemble:
  """Train `members` models at once, one vmapped state (see `jmed.train.ensemble`).

  Attributes:
    members: ensemble size K; member m has seed `cfg.seed + m`.
    independent_shuffles: each member its own epoch order (seeded by its own seed) instead of
      every member training on the same batches.
  """

  members: int
  independent_shuffles: bool = False

  def seeds(self, seed: int):
    return [seed + m for m in range(self.members)]

  def describe(self, seed: int) -> dict:
    """What config.json and summary.json record of the ensemble."""
    return {'members': self.members, 'seeds': self.seeds(seed),
            'independent_shuffles': self.independent_shuffles}


def _batch_axis(ensemble: Optional[Ensemble]) -> int:
  """The batch axis of a dispatch: [steps, batch, ...], or [steps, members, batch, ...] for an
  ensemble whose members each draw their own batches."""
  return 2 if ensemble and ensemble.independent_shuffles else 1


@dataclasses.dataclass
class _Run:
  """What stays fixed for the length of a `fit`: built by `_setup`, read by every step after."""

  cfg: TrainConfig
  dataset: Any
  task: tasks.Task  # fitted to the training labels
  metric: str  # the validation metric that picks the best checkpoint
  mesh: Any
  ensemble: Optional[Ensemble]
  train_fn: Callable
  eval_fn: Callable
  steps_per_epoch: int
  last_step: int
  privacy: Optional[tuple]
  primary: bool  # the process that writes logs and JSON files
  init_report: Optional[dict] = None  # the parameters taken from cfg.init_from
  manager: Any = None
  best_manager: Any = None
  log: Any = None
  board: Any = None  # TensorBoard events
  bar: Any = None
  timing: Dict = dataclasses.field(default_factory=lambda: {
      'train_seconds': 0.0, 'train_examples': 0, 'compile_seconds': 0.0, 'compiled': set()})

  @property
  def train_split(self):
    return self.dataset.splits['train']

  def path(self, name: str) -> str:
    return os.path.join(self.cfg.output_dir, name)

  def close(self) -> None:
    self.bar.close()
    self.manager.wait_until_finished()
    self.log.close()
    self.board.close()


# ---------------------------------------------------------------- fit


def fit(cfg: TrainConfig, dataset=None) -> dict:
  """Trains `cfg.model` on `cfg.dataset`; returns the final summary (also in summary.json).

  Args:
    cfg: the run's config.
    dataset: an already loaded `jmed.data.Dataset` (default: `load_dataset(cfg)`).
  """
  return train_and_evaluate(cfg, dataset)[1]


def train_and_evaluate(cfg: TrainConfig, dataset=None, ensemble: Optional[Ensemble] = None):
  """`fit`, returning (the final state, replicated over the mesh, and the summary).

  With `ensemble`, trains that many members at once in one vmapped state.
  """
  wall_start = time.perf_counter()
  check_config(cfg)
  if cfg.resume:
    check_resume(cfg, ensemble)
  dataset = load_dataset(cfg) if dataset is None else dataset
  run, state = _setup(cfg, dataset, ensemble)
  best = _read_best(cfg.output_dir) if cfg.resume else None
  step = checkpoint.step_of(state)
  stopped_early = False
  try:
    for epoch in range(step // run.steps_per_epoch, cfg.epochs):
      if step >= run.last_step:
        break
      state, record = _train_epoch(run, state, epoch, step)
      step = record['step']
      best = _validate(run, state, record, best)
      run.log.write(record)
      run.board.write(record)
      checkpoint.save(run.manager, state)
      if best and cfg.early_stopping_patience and (
          epoch - best['epoch'] >= cfg.early_stopping_patience):
        stopped_early = True
        break
  finally:
    run.close()
  return state, _finish(run, state, best, step, stopped_early, wall_start)


def check_config(cfg: TrainConfig) -> None:
  """Raises `ConfigError` on config values no run can train with."""
  for field in ('epochs', 'batch_size', 'eval_batch_size', 'steps_per_dispatch'):
    if getattr(cfg, field) < 1:
      raise ConfigError(f'{field} must be >= 1, got {getattr(cfg, field)}.')
  if cfg.early_stopping_patience < 0:
    raise ConfigError(f'early_stopping_patience must be >= 0, got {cfg.early_stopping_patience}.')
  if cfg.micro_batch_size < 0 or (cfg.micro_batch_size and cfg.batch_size % cfg.micro_batch_size):
    raise ConfigError(f'micro_batch_size must be 0 (automatic) or divide batch_size '
                      f'{cfg.batch_size}, got {cfg.micro_batch_size}.')


def check_resume(cfg: TrainConfig, ensemble: Optional[Ensemble] = None) -> None:
  """Refuses to resume a run with another config. Writes nothing.

  With no checkpoint in `cfg.output_dir` there is nothing to resume: the run starts from
  scratch, so one command both starts a run and continues it (preemptible TPUs, SLURM
  requeues, an interrupted search trial).

  Raises:
    ConfigError: `cfg` (with the ensemble's description) differs from the saved config.json
      in fields other than `RESUMABLE_FIELDS`; the message names each as
      `name: saved -> now` (nested fields as optimizer.learning_rate).
  """
  path = os.path.join(cfg.output_dir, 'config.json')
  if not (os.path.exists(path) and has_checkpoint(cfg.output_dir)):
    return
  with open(path) as f:
    saved = json.load(f)
  now = json.loads(json.dumps(_config_record(cfg, ensemble)))  # tuples -> lists, as saved
  defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig())))
  changed = [f'{name}: {old!r} -> {new!r}'
             for name, old, new in _differences(saved, now, defaults)
             if name.split('.')[0] not in RESUMABLE_FIELDS]
  if changed:
    raise ConfigError(
        f'--resume: the config differs from the one in {path} in: {"; ".join(changed)}. '
        'Resume with the saved values, or start a new run in another output_dir (fields that '
        f'may change on resume: {", ".join(RESUMABLE_FIELDS[:-1])}).')


def _differences(old: dict, new: dict, defaults: dict, prefix: str = ''):
  """(dotted name, old, new) of each leaf that differs; a field missing from `old` (a
  config.json of an earlier version) counts as its default."""
  for key in [*new, *(k for k in old if k not in new)]:  # in the config's field order
    default = defaults.get(key) if isinstance(defaults, dict) else None
    a, b = old.get(key, default), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict) and key not in ('model_kwargs',
                                                                   'task_kwargs'):
      yield from _differences(a, b, default or {}, f'{prefix}{key}.')
    elif a != b:
      yield f'{prefix}{key}', a, b


def has_checkpoint(output_dir: str) -> bool:
  """Whether the run in `output_dir` saved a checkpoint (checkpoints/<step>/, orbax's finished
  steps), i.e. whether `resume=True` has something to continue."""
  directory = os.path.join(output_dir, 'checkpoints')
  return os.path.isdir(directory) and any(
      name.isdigit() and os.path.isdir(os.path.join(directory, name))
      for name in os.listdir(directory))


def _config_record(cfg: TrainConfig, ensemble: Optional[Ensemble]) -> dict:
  """What config.json records: the config's fields, and the ensemble's description."""
  config = dataclasses.asdict(cfg)
  if ensemble:
    config.update(ensemble.describe(cfg.seed))
  return config


def load_dataset(cfg: TrainConfig):
  """The run's data, loaded as `fit` loads it: the user's file `cfg.data.path` when set
  (`jmed.data.user`), else the built-in dataset `cfg.dataset`."""
  if cfg.data.path:
    from jmed.data import user  # pylint: disable=g-import-not-at-top
    return user.load(dataclasses.replace(cfg, text=text_config(cfg)))
  from jmed.data.datasets import load_dataset as load  # pylint: disable=g-import-not-at-top
  return load(cfg.dataset, data_dir=cfg.data_dir, tfds_dir=cfg.tfds_dir, text=text_config(cfg),
              molecule=cfg.molecule)


def text_config(cfg: TrainConfig):
  """`cfg.text`, encoding with the tokenizer of run `cfg.init_from` when that run has one (a
  pretrained encoder's embedding rows are that tokenizer's ids) and no tokenizer_path is set."""
  if not cfg.init_from or cfg.text.tokenizer_path:
    return cfg.text
  path = os.path.join(cfg.init_from, 'tokenizer.json')
  if not os.path.isfile(path):
    return cfg.text
  return dataclasses.replace(cfg.text, tokenizer_path=path)


# ---------------------------------------------------------------- setup


def _setup(cfg: TrainConfig, dataset, ensemble: Optional[Ensemble]):
  """Checks everything that can fail on bad input, then creates the output directory, the
  state (restored on resume), the compiled steps and the logs. Returns (run, state)."""
  task = configured_task(cfg, dataset.task, getattr(dataset, 'task_kwargs', None)).fit_to(
      dataset.splits['train'][1])
  metric = task.select_metric(cfg.select_metric)
  class_weights = _class_weights(cfg, task, dataset)
  augment = _augment(cfg, task)
  privacy = _privacy(cfg)
  steps_per_epoch = len(dataset.splits['train'][0]) // cfg.batch_size
  if steps_per_epoch == 0:
    raise ConfigError(f'batch_size {cfg.batch_size} exceeds the '
                      f'{len(dataset.splits["train"][0])} training examples.')
  total_steps = cfg.epochs * steps_per_epoch
  mesh = parallel.make_mesh()
  for field in ('batch_size', 'eval_batch_size'):
    _check_divisible(field, getattr(cfg, field), mesh)

  model = build_model(cfg, dataset)
  tx = make_optimizer(cfg.optimizer, total_steps)
  state = _init_state(model, tx, dataset.splits['train'][0][:1], cfg.seed, ensemble)
  init_report = None
  if cfg.init_from and not cfg.resume:
    state, init_report = _init_from(cfg, state, ensemble)
  if privacy:
    jprivacy.check_applies(task, state.model_state)
  state = parallel.replicate(state, mesh)
  _check_windows(cfg, dataset)
  train_fn, eval_fn = _compiled_steps(cfg, task, augment, class_weights, privacy, mesh,
                                      ensemble, _micro_batches(cfg, state, privacy))
  run = _Run(cfg=cfg, dataset=dataset, task=task, metric=metric, mesh=mesh, ensemble=ensemble,
              train_fn=train_fn, eval_fn=eval_fn, steps_per_epoch=steps_per_epoch,
              last_step=min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps,
              privacy=privacy, primary=distributed.is_primary(), init_report=init_report)
  state = _open_output_dir(run, state, make_schedule(cfg.optimizer, total_steps))
  return run, state


def configured_task(cfg: TrainConfig, name: str, data_kwargs=None) -> tasks.Task:
  """The task `name` with the fields the dataset sets (`Dataset.task_kwargs`, e.g. tag names),
  then those `cfg.task_kwargs` sets (before `fit_to`).

  Raises:
    ConfigError: a key that is not a field of the task; the message lists the valid ones.
  """
  task = tasks.get(name)
  kwargs = {**(data_kwargs or {}), **cfg.task_kwargs}
  if not kwargs:
    return task
  valid = [f.name for f in dataclasses.fields(task)]
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise ConfigError(f'task_kwargs {unknown} do not apply to task {task.name!r}; valid keys: '
                      f'{", ".join(valid) or "none"}.')
  # JSON gives lists; tuples keep the task hashable (a static argument of the steps).
  return dataclasses.replace(task, **{k: tuple(v) if isinstance(v, list) else v
                                      for k, v in kwargs.items()})


def _init_from(cfg: TrainConfig, state, ensemble: Optional[Ensemble]):
  """(state with the parameters of run `cfg.init_from` that match by name and shape, what was
  taken). Raises `ConfigError` for an ensemble or when nothing matches."""
  if ensemble is not None:
    raise ConfigError('init_from applies to single models, not to ensembles.')
  params, report = init_from.merge(state.params, init_from.pretrained_params(cfg.init_from))
  return state.replace(params=params), {'run': cfg.init_from, **report}


def _check_divisible(field: str, batch_size: int, mesh) -> None:
  """`parallel.check_batch_size` as a `ConfigError` naming the flag."""
  try:
    parallel.check_batch_size(batch_size, mesh)
  except ValueError as e:
    raise ConfigError(f'{field}: {e}') from None


def _class_weights(cfg: TrainConfig, task, dataset):
  """`cfg.class_weights` resolved on the training labels: None or a tuple per class."""
  if cfg.class_weights == 'none':
    return None
  if cfg.class_weights != 'balanced':
    raise ConfigError(f"class_weights must be 'none' or 'balanced', got {cfg.class_weights!r}.")
  return task.class_weights(dataset.splits['train'][1], dataset.num_classes)


def _augment(cfg: TrainConfig, task):
  """The augmentation config, or None. For tasks with spatial labels (segmentation) the train
  step moves the masks with the images (`jmed.data.augment.augment_batch(..., labels)`)."""
  del task
  if cfg.augment == 'none':
    return None
  return jaugment.get_augment(cfg.augment)  # raises listing the presets


def _check_windows(cfg: TrainConfig, dataset) -> None:
  """patch_size and eval_window need 2D images [height, width, channels] at least that large."""
  shape = tuple(dataset.input_shape)
  for field in ('patch_size', 'eval_window', 'eval_stride'):
    value = getattr(cfg, field)
    if value < 0:
      raise ConfigError(f'{field} must be >= 0, got {value}.')
    if value and len(shape) != 3:
      raise ConfigError(f'{field} {value} needs 2D images [height, width, channels]; dataset '
                        f'{dataset.name!r} has inputs {shape}.')
  if cfg.patch_size > min(shape[:2], default=0):
    raise ConfigError(f'patch_size {cfg.patch_size} exceeds the images {shape}.')
  if cfg.eval_stride > cfg.eval_window:
    raise ConfigError(f'eval_stride {cfg.eval_stride} needs an eval_window at least as large, '
                      f'got {cfg.eval_window}.')


def _privacy(cfg: TrainConfig):
  """(l2_clip, noise_multiplier) for a DP-SGD run, else None."""
  if not cfg.privacy.enabled:
    return None
  jprivacy.check_config(cfg.privacy)
  return (float(cfg.privacy.l2_clip), float(cfg.privacy.noise_multiplier))


def build_model(cfg: TrainConfig, dataset):
  """`cfg.model` sized for `dataset` (classes, vocabulary, ...) with `cfg.model_kwargs`."""
  kwargs = dict(num_classes=dataset.num_classes, dropout_rate=cfg.dropout_rate,
                dtype=jnp.dtype(cfg.dtype), **dataset.model_kwargs)
  # JSON gives lists; tuples keep the module hashable (its compiled init is then reused).
  kwargs.update({k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model_kwargs.items()})
  try:
    return models.get_model(cfg.model, **kwargs)
  except TypeError as e:
    hint = ''
    if 'vocab_size' in str(e):
      hint = (' (the inputs are token ids: use a sequence model such as transformer, gru or '
              'text_cnn, or fingerprints for molecules: --molecule-features fingerprint)')
    raise ConfigError(f'model {cfg.model!r} does not fit dataset {dataset.name!r} with '
                      f'{sorted(kwargs)}: {e}{hint}') from None


def _init_state(model, tx, sample, seed: int, ensemble: Optional[Ensemble]):
  if ensemble is None:
    return create_train_state(model, tx, sample, seed)
  from jmed.train import ensemble as jensemble  # pylint: disable=g-import-not-at-top
  return jensemble.create_ensemble_state(model, tx, sample, ensemble.seeds(seed))


def _micro_batches(cfg: TrainConfig, state, privacy) -> int:
  """Micro-batches per train step (`TrainConfig.micro_batch_size`; 1: the whole batch)."""
  if not cfg.micro_batch_size:
    return steps.auto_micro_batches(cfg.batch_size, state, privacy)
  micro_batches = cfg.batch_size // cfg.micro_batch_size
  if micro_batches > 1:
    try:
      steps.check_micro_batches(micro_batches, cfg.batch_size, state, privacy)
    except ValueError as e:
      raise ConfigError(f'micro_batch_size {cfg.micro_batch_size}: {e}') from None
  return micro_batches


def _compiled_steps(cfg, task, augment, class_weights, privacy, mesh, ensemble,
                    micro_batches: int = 1):
  """(train_fn, eval_fn): the data-parallel train step over [steps, batch, ...] dispatches and
  the jitted eval step (through sliding windows when `cfg.eval_window`); under `ensemble`,
  both vmapped over the members."""
  train = steps.bind(steps.train_steps, task, augment, class_weights, privacy,
                     patch_size=cfg.patch_size, micro_batches=micro_batches)
  evaluate_ = steps.bind(steps.eval_step, task, window=cfg.eval_window,
                         stride=cfg.eval_stride)
  if ensemble is None:
    return parallel.data_parallel(train, mesh, batch_axis=1), jax.jit(evaluate_)
  # Members own axis 1 of the batches when each draws its own, else share them.
  train = jax.vmap(train, in_axes=(0, 1 if ensemble.independent_shuffles else None))
  return (parallel.data_parallel(train, mesh, batch_axis=_batch_axis(ensemble)),
          jax.jit(jax.vmap(evaluate_, in_axes=(0, None))))


def _open_output_dir(run: _Run, state, learning_rate: Callable):
  """Creates the output directory, checkpoint managers, logs and progress bar; restores the
  latest checkpoint on resume. Returns the state to start from.

  `learning_rate` is the optimizer's schedule (step -> rate), logged to TensorBoard.
  """
  cfg = run.cfg
  os.makedirs(cfg.output_dir, exist_ok=True)
  ckpt_dir = run.path('checkpoints')
  run.manager = checkpoint.make_manager(ckpt_dir, cfg.keep_checkpoints)
  if cfg.resume:
    state = checkpoint.restore_latest(run.manager, state)
  elif run.manager.latest_step() is not None:
    raise RunDirError(f'{ckpt_dir} already holds checkpoints; pass resume=True (--resume) to '
                      'continue that run or choose another output_dir.')
  if 'validation' in run.dataset.splits:  # the best checkpoint by validation metric
    run.best_manager = checkpoint.make_manager(run.path('best'), 1)
    if not cfg.resume and run.best_manager.latest_step() is not None:
      raise RunDirError(f'{cfg.output_dir}/best already holds a checkpoint of another run; '
                        'pass resume=True (--resume) or choose another output_dir.')
  step = checkpoint.step_of(state)
  if run.primary:
    write_json(run.path('config.json'), _config_record(cfg, run.ensemble))
    if run.dataset.tokenizer is not None:  # what turns new text into this model's inputs
      run.dataset.tokenizer.save(run.path('tokenizer.json'))
    if getattr(run.dataset, 'preprocessing', None) is not None:
      write_json(run.path('preprocessing.json'), _preprocessing(run))
  resumed = step if cfg.resume else None
  run.log = logs.MetricsLog(run.path('metrics.jsonl') if run.primary else None, resumed)
  run.board = logs.TensorBoardLog(run.path('tensorboard') if run.primary else None,
                                  learning_rate, resumed)
  run.bar = tqdm(total=run.last_step, initial=step, unit='step',
                  disable=not (cfg.progress and run.primary), dynamic_ncols=True)
  return state


def _preprocessing(run: _Run) -> dict:
  """preprocessing.json: the dataset's shape and task (fitted to the training labels, e.g.
  regression's target mean and std) and its own `preprocessing` (column statistics, classes,
  image size, ...): what turns a new file of the same format into this model's inputs."""
  dataset = run.dataset
  return {
      'dataset': {'name': dataset.name, 'task': dataset.task,
                  'num_classes': int(dataset.num_classes),
                  'input_shape': [int(d) for d in dataset.input_shape],
                  'model_kwargs': dict(dataset.model_kwargs)},
      'task_fields': dataclasses.asdict(run.task),
      **dataset.preprocessing,
  }


# ---------------------------------------------------------------- one epoch


def _train_epoch(run: _Run, state, epoch: int, first_step: int):
  """Runs the steps of `epoch` from `first_step`; returns (state, the epoch's record).

  The loss of each dispatch is read one dispatch later, so checking it for NaN never stalls
  the device. The first dispatch of each size (which compiles) is timed apart from training.
  """
  cfg, timing = run.cfg, run.timing
  last_step = min(run.last_step, (epoch + 1) * run.steps_per_epoch)
  sums = {}
  pending = None  # (first step, metrics) of the dispatch whose results are not yet read
  epoch_start = steady_start = time.perf_counter()
  batch_axis = _batch_axis(run.ensemble)
  groups = pipeline.prefetch(
      _dispatch_groups(run, epoch, first_step, last_step),
      transform=lambda g: (g[0], parallel.shard_batch(g[1], run.mesh, batch_axis=batch_axis)))

  def consume(pending):
    group_step, metrics = pending
    metrics = {k: _steps_first(np.asarray(v), run.ensemble)
               for k, v in parallel.to_host(metrics).items()}
    _raise_if_non_finite(metrics['loss_sum'] / metrics['count'], group_step, run)
    for k, v in metrics.items():
      sums[k] = sums.get(k, 0) + v.sum(0)

  step = first_step
  try:
    for group_step, batches in groups:
      k = int(jax.tree.leaves(batches)[0].shape[0])
      compiles = k not in timing['compiled']  # a new dispatch size compiles: time it apart
      if compiles:
        jax.block_until_ready(state.step)
        t0 = time.perf_counter()
        timing['train_seconds'] += t0 - steady_start
      state, metrics = run.train_fn(state, batches)
      if compiles:
        jax.block_until_ready(state.step)
        steady_start = time.perf_counter()
        timing['compile_seconds'] += steady_start - t0
        timing['compiled'].add(k)
      else:
        timing['train_examples'] += k * cfg.batch_size
      if pending is not None:
        consume(pending)
      pending = (group_step, metrics)
      step = group_step + k
      if cfg.checkpoint_every and step // cfg.checkpoint_every > group_step // cfg.checkpoint_every:
        consume(pending)  # never checkpoint a state whose loss was not checked
        pending = None
        checkpoint.save(run.manager, state)
      run.bar.update(k)
      if sums:
        seconds = timing['train_seconds'] + time.perf_counter() - steady_start
        rate = timing['train_examples'] / max(seconds, 1e-9)  # compilation excluded
        loss = np.mean(sums['loss_sum'] / np.maximum(sums['count'], 1))
        run.bar.set_postfix(epoch=epoch, loss=f'{loss:.4f}', img_s=f'{rate:.0f}', refresh=False)
  finally:
    groups.close()  # stops the producer thread on an error too
  if pending is not None:
    consume(pending)
  jax.block_until_ready(state.step)
  end = time.perf_counter()
  timing['train_seconds'] += end - steady_start
  return state, _epoch_record(epoch, step, sums, end - epoch_start)


def _dispatch_groups(run: _Run, epoch: int, first_step: int, last_step: int):
  """Yields (global_step, batches [k, rows, ...]) for steps [first_step, last_step) of `epoch`
  ([k, members, rows, ...] for an ensemble with independent shuffles).

  Batches come from the epoch's seeded permutation, so a run resumed mid-epoch sees exactly the
  batches an uninterrupted run would. `rows` is this process's share of each global batch.
  Both readers start at the first step's batch (those before it are not read). Inputs marked
  `streamed` (`jmed.data.records.RecordArray`: shards on disk) are read by `jmed.data.stream`
  (grain threads reading ahead), only this process's rows; others by `pipeline.train_batches`.
  Both give the same batches.
  """
  cfg = run.cfg
  inputs, labels = run.train_split
  rows = parallel.local_rows(cfg.batch_size, run.mesh)
  seeds = [cfg.seed]
  if run.ensemble and run.ensemble.independent_shuffles:
    seeds = run.ensemble.seeds(cfg.seed)
  first_batch = first_step - epoch * run.steps_per_epoch  # of this epoch; earlier ones unread
  if getattr(inputs, 'streamed', False):
    from jmed.data import stream  # pylint: disable=g-import-not-at-top
    orders = [stream.train_batches(inputs, labels, cfg.batch_size, seed=seed, epoch=epoch,
                                   rows=rows, start=first_batch,
                                   stop=last_step - epoch * run.steps_per_epoch)
              for seed in seeds]
  else:
    orders = [pipeline.train_batches(inputs, labels, cfg.batch_size, seed=seed, epoch=epoch,
                                     rows=rows, start=first_batch) for seed in seeds]
  batches = orders[0] if len(orders) == 1 else (_stack(group) for group in zip(*orders))
  group, group_start = [], None
  for step, batch in enumerate(batches, start=first_step):
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


def _steps_first(values: np.ndarray, ensemble) -> np.ndarray:
  """Per-dispatch metrics as [steps] (single model) or [steps, members] (ensemble, whose
  vmapped metrics come out [members, steps])."""
  return values if ensemble is None else np.moveaxis(values, 0, 1)


def _raise_if_non_finite(losses, first_step: int, run: _Run) -> None:
  """Raises `NonFiniteLossError` naming the step (and member) of the first NaN/inf loss."""
  bad = np.argwhere(~np.isfinite(losses))
  if not bad.size:
    return
  index = tuple(bad[0])
  member = f' of member {index[1]}' if len(index) > 1 else ''
  last = run.manager.latest_step()
  saved = (f'the last checkpoint (step {last}) is in {run.path("checkpoints")}'
           if last is not None else 'no checkpoint was saved yet')
  raise NonFiniteLossError(
      f'Training loss{member} is {losses[index]} at step {first_step + index[0]}; stopping. '
      f'Metrics so far are in the metrics log and {saved}. Try a lower learning rate or '
      'gradient clipping.')


def _epoch_record(epoch: int, step: int, sums: dict, seconds: float) -> dict:
  """The epoch's metrics-log record: train loss and each train metric's mean, DP-SGD's clipped
  fraction, time and examples/s. Ensembles give one value per member."""
  count = np.maximum(sums.get('count', 0), 1)

  def mean(total):
    value = total / count
    return value.tolist() if np.ndim(value) else float(value)

  record = {'epoch': epoch, 'step': step, 'train_loss': mean(sums.get('loss_sum', 0.0))}
  for key, total in sums.items():
    if key.endswith('_sum') and key != 'loss_sum':
      record[f'train_{key[:-len("_sum")]}'] = mean(total)
  if 'clipped' in sums:  # DP-SGD: share of per-example gradients the clip bound cut
    record['train_clipped_fraction'] = mean(sums['clipped'])
  record['epoch_seconds'] = seconds
  record['images_per_sec'] = float(np.max(sums.get('count', 0)) / seconds)
  return record


# ---------------------------------------------------------------- validation and selection


def _validate(run: _Run, state, record: dict, best: Optional[dict]) -> Optional[dict]:
  """Adds the epoch's validation metrics (and DP-SGD's epsilon) to `record`; saves the best
  checkpoint when the selection metric improves. Returns the best so far."""
  if run.privacy:
    record['epsilon'] = _budget(run.cfg, len(run.train_split[0]), record['step'])['epsilon']
  if run.best_manager is None:
    return best
  val, _ = _evaluate_split(run, state, 'validation')
  record.update({f'val_{k}': v for k, v in val.items() if _loggable(v)})
  value = val[run.metric]
  if _improves(value, best, run.task.lower_is_better(run.metric)):
    best = {'epoch': record['epoch'], 'step': record['step'], 'metric': f'val_{run.metric}',
            'value': value, 'lower_is_better': run.task.lower_is_better(run.metric),
            'val': val}
    checkpoint.save(run.best_manager, state, wait=True)
    if run.primary:
      write_json(run.path('best.json'), best)
  record['best_epoch'] = best['epoch'] if best else None
  return best


def _loggable(value) -> bool:
  """Whether a metric goes in the metrics log: numbers and lists of numbers (per label or
  class), not an ensemble's per-member dicts."""
  if isinstance(value, dict):
    return False
  return not (isinstance(value, list) and value and isinstance(value[0], dict))


def _improves(value, best: Optional[dict], lower_is_better: bool) -> bool:
  """Whether validation `value` beats the best so far (ties keep the earlier checkpoint)."""
  if value is None or not math.isfinite(value):
    return False
  if best is None:
    return True
  return value < best['value'] if lower_is_better else value > best['value']


def _evaluate_split(run: _Run, state, split: str):
  """(`evaluate`'s metrics, the predictions they score) of one of the run's splits."""
  inputs, labels = run.dataset.splits[split]
  members = run.ensemble is not None
  totals, predictions = _predict(state, run.eval_fn, inputs, labels, run.cfg.eval_batch_size,
                                 run.mesh, members)
  return _split_metrics(run.task, totals, predictions, labels, members), predictions


def evaluate(state, eval_fn, inputs, labels, batch_size: int, mesh, task,
             members: bool = False) -> dict:
  """The task's metrics of `state` over every example of a split, plus the mean 'loss' (unless
  the task computes the split's own, as the Cox loss).

  Args:
    state: a `TrainState` replicated over `mesh` (an ensemble state when `members`).
    eval_fn: the jitted `steps.eval_step` with `task` bound (vmapped for an ensemble).
    inputs, labels: the split, [n, ...].
    batch_size: global eval batch, a multiple of the mesh's devices.
    mesh: the device mesh.
    task: a `jmed.tasks.Task` (or its name).
    members: `state` is an ensemble: the metrics are those of the combined prediction
      (`task.combine`), with 'members' (each member's metrics) and 'mean_member' added, and for
      probabilistic tasks the NLL, mean predictive entropy and mutual information.
  """
  totals, predictions = _predict(state, eval_fn, inputs, labels, batch_size, mesh, members)
  return _split_metrics(tasks.get(task), totals, predictions, labels, members)


def _split_metrics(task, totals, predictions, labels, members: bool) -> dict:
  losses = totals['loss_sum'] / totals['count']  # [members] for an ensemble
  if members:
    from jmed import uncertainty  # pylint: disable=g-import-not-at-top
    return uncertainty.ensemble_metrics(task, predictions, labels, losses)
  metrics = task.evaluate(predictions, labels)
  metrics.setdefault('loss', float(losses))
  return metrics


def _predict(state, eval_fn, inputs, labels, batch_size, mesh, members: bool):
  """(summed 'loss_sum' and 'count', predictions [n, ...] or [members, n, ...]) of a split."""
  totals = {'loss_sum': 0.0, 'count': 0.0}
  predictions = []
  rows = parallel.local_rows(batch_size, mesh)  # this process's share of each batch
  for batch in pipeline.eval_batches(inputs, labels, batch_size, rows=rows):
    out = parallel.to_host(eval_fn(state, parallel.shard_batch(batch, mesh)))
    for k in totals:
      totals[k] = totals[k] + np.asarray(out[k], np.float64)
    predictions.append(out['predictions'])  # the whole global batch, gathered from every process
  count = np.ravel(totals['count'])[0]
  if not math.isclose(count, len(labels)):
    raise AssertionError(f'evaluated {count} examples of {len(labels)}')
  axis = 1 if members else 0
  predictions = np.concatenate(predictions, axis=axis)  # padding: only at the end
  return totals, np.take(predictions, np.arange(len(labels)), axis=axis)


# ---------------------------------------------------------------- the end of a run


def _finish(run: _Run, state, best: Optional[dict], step: int, stopped_early: bool,
            wall_start: float) -> dict:
  """Scores the test split at the best checkpoint and at the last step; writes summary.json
  (and for an ensemble of classifiers reliability.png, at the reported checkpoint)."""
  cfg, timing = run.cfg, run.timing
  last_test, predictions = _evaluate_split(run, state, 'test')
  test = last_test
  if best is not None and best['step'] != step:  # the test split where validation picked
    best_state = checkpoint.restore_latest(run.best_manager, state)
    test, predictions = _evaluate_split(run, best_state, 'test')
  summary = {
      'model': cfg.model, 'dataset': run.dataset.name, 'task': run.task.name, 'steps': step,
      'epochs': cfg.epochs, 'batch_size': cfg.batch_size, 'devices': run.mesh.devices.size,
      'processes': jax.process_count(), 'dtype': cfg.dtype,
      'best': best, 'stopped_early': stopped_early, **run.task.summary(),
      **({'init_from': run.init_report} if run.init_report else {}),
      **({'split': run.dataset.split_info}
         if getattr(run.dataset, 'split_info', None) is not None else {}),
      **({'privacy': _budget(cfg, len(run.train_split[0]), step)} if run.privacy else {}),
      **{f'test_{k}': v for k, v in test.items()},
      **{f'last_test_{k}': v for k, v in last_test.items()},
      'train_images_per_sec': timing['train_examples'] / max(timing['train_seconds'], 1e-9),
      'compile_seconds': timing['compile_seconds'],
      'wall_seconds': time.perf_counter() - wall_start,
  }
  if run.ensemble:
    summary.update(run.ensemble.describe(cfg.seed))
  if run.primary:
    write_json(run.path('summary.json'), summary)
    if run.ensemble and run.task.probabilistic:
      _reliability_diagram(run, predictions)
    if run.task.spatial_labels and not run.ensemble:
      _overlays(run, predictions)
    _training_curves(run)
  return summary


def _training_curves(run: _Run) -> None:
  """curves.png: train and validation loss and the selection metric per epoch, from the
  metrics log (which holds the epochs before a resume too)."""
  from jmed import plots  # pylint: disable=g-import-not-at-top
  plots.training_curves(logs.read_records(run.path('metrics.jsonl')), run.path('curves.png'),
                        run.metric)


OVERLAYS = 8  # test images drawn as overlays/test_<i>.png after a segmentation run


def _overlays(run: _Run, probabilities) -> None:
  """overlays/test_<i>.png for the first `OVERLAYS` test images: image, ground truth and the
  reported checkpoint's prediction side by side."""
  from jmed import plots  # pylint: disable=g-import-not-at-top
  images, masks = run.dataset.splits['test']
  n = min(OVERLAYS, len(masks))
  plots.segmentation_overlays(np.asarray(images[:n]), np.asarray(masks[:n]),
                              np.argmax(probabilities[:n], -1), run.path('overlays'), 'test')


def _reliability_diagram(run: _Run, member_probs) -> None:
  """reliability.png: the ensemble's combined test predictions [members, n, classes]."""
  from jmed import plots  # pylint: disable=g-import-not-at-top
  labels = run.dataset.splits['test'][1]
  plots.reliability_diagram(
      *run.task.calibration_inputs(run.task.combine(member_probs), labels),
      run.path('reliability.png'),
      title=f'{run.ensemble.members}-member ensemble, {run.dataset.name} test')


def _budget(cfg: TrainConfig, num_examples: int, step: int) -> dict:
  """The privacy spent after `step` steps (epsilon is None without noise: no guarantee)."""
  if cfg.privacy.noise_multiplier == 0:
    return {'epsilon': None, 'noise_multiplier': 0.0, 'steps': step}
  return jprivacy.budget(cfg.privacy, cfg.batch_size, num_examples, step)


# ---------------------------------------------------------------- files


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
