"""Loading a finished run back: its config, model and variables, ready for `model.apply`.

A run directory is what `jmed.train.loop.fit` (`scripts/train.py`) writes: `config.json`, orbax
checkpoints of the training state in `checkpoints/` (the latest steps) and `best/` (the step the
validation metric picked; absent for datasets without a validation split), and `tokenizer.json`
for text. Only the parameters and model state (e.g. BatchNorm statistics) are read back, so
restoring needs neither the optimizer nor its state.

  cfg, model, variables = load_run('runs/seed_cnn_pneumoniamnist')
  logits = model.apply(variables, images)
"""

import dataclasses
import json
import logging
import os
import types
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from jmed import configs
from jmed import tasks
from jmed.configs import TrainConfig
from jmed.errors import MissingDataError
from jmed.train import loop
from jmed.train.state import split_variables

WHICH = ('best', 'latest')


def read_config(run_dir: str) -> TrainConfig:
  """The `TrainConfig` of the run in `run_dir` (its config.json; fields it lacks get defaults).

  Raises:
    FileNotFoundError: `run_dir` has no config.json.
  """
  path = os.path.join(run_dir, 'config.json')
  if not os.path.isfile(path):
    raise MissingDataError(f'{path} not found: {run_dir!r} is not a jmed run directory '
                            '(scripts/train.py --output-dir writes one).')
  return configs.load_config(path)


def read_preprocessing(run_dir: str) -> Optional[dict]:
  """The run's preprocessing.json (runs on the user's own data, `--data`), else None."""
  path = os.path.join(run_dir, 'preprocessing.json')
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def fitted_task(preprocessing: dict) -> tasks.Task:
  """The run's task as fitted to its training labels (e.g. regression's target scale)."""
  meta = preprocessing['dataset']
  fields = {k: tuple(v) if isinstance(v, list) else v
            for k, v in preprocessing.get('task_fields', {}).items()}
  return dataclasses.replace(tasks.get(meta['task']), **fields)


def _dataset_shape(preprocessing: dict):
  """What `build_model` and `load_run` read of a dataset (name, classes, model kwargs and a
  sample input), from preprocessing.json, so no training data is needed."""
  meta = preprocessing['dataset']
  token_ids = 'vocab_size' in meta.get('model_kwargs', {})
  sample = jnp.zeros((1, *meta['input_shape']), jnp.int32 if token_ids else jnp.float32)
  return types.SimpleNamespace(name=meta['name'], num_classes=meta['num_classes'],
                               model_kwargs=dict(meta.get('model_kwargs', {})),
                               splits={'train': (sample, None)})


def load_run_dataset(cfg: TrainConfig, data_dir: Optional[str] = None):
  """The run's dataset, loaded as `fit` loaded it (text: the same tokenizer is re-learned).

  Args:
    cfg: the run's config.
    data_dir: overrides `cfg.data_dir` (e.g. when the run was trained elsewhere).
  """
  return loop.load_dataset(dataclasses.replace(cfg, data_dir=data_dir or cfg.data_dir))


def checkpoint_dir(run_dir: str, which: str) -> str:
  if which not in WHICH:
    raise ValueError(f'which must be one of {WHICH}, got {which!r}.')
  best, latest = os.path.join(run_dir, 'best'), os.path.join(run_dir, 'checkpoints')
  if which == 'best' and _has_steps(best):
    return best
  if which == 'best':
    logging.warning('%s has no best checkpoint (no validation split?); using the latest.',
                    run_dir)
  if not _has_steps(latest):
    raise MissingDataError(f'no checkpoint in {latest}: the run saved none yet.')
  return latest


def _has_steps(directory: str) -> bool:
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def load_run(run_dir: str, which: str = 'best', *, dataset=None,
             data_dir: Optional[str] = None) -> Tuple[TrainConfig, object, dict]:
  """Loads a finished (or interrupted) run's model and variables.

  Args:
    run_dir: the run's output_dir.
    which: 'best' (the checkpoint validation picked; the latest one if the run has none) or
      'latest'.
    dataset: the run's dataset, if already loaded (it sizes the model: classes, vocabulary,
      input shape); by default read from the run's preprocessing.json (runs on the user's own
      data), else loaded with `load_run_dataset`.
    data_dir: where to load the dataset from when `dataset` is None (default: the config's).

  Returns:
    (cfg, model, variables): the run's `TrainConfig`, the flax module as `fit` built it, and
    `{'params': ..., **model state}` for `model.apply(variables, inputs)`.

  Raises:
    FileNotFoundError: no config.json or no checkpoint.
    ValueError: bad `which`.
  """
  cfg = read_config(run_dir)
  directory = checkpoint_dir(run_dir, which)
  if dataset is None:
    preprocessing = read_preprocessing(run_dir)
    if preprocessing is not None:
      dataset = _dataset_shape(preprocessing)
    else:
      dataset = load_run_dataset(cfg, data_dir)
  model = loop.build_model(cfg, dataset)
  sample = jnp.asarray(dataset.splits['train'][0][:1])
  shapes = jax.eval_shape(
      lambda x: model.init({'params': jax.random.key(0), 'dropout': jax.random.key(0)}, x,
                           train=False), sample)
  params, model_state = split_variables(shapes)
  target = {'params': params, 'model_state': model_state}  # as checkpoint.py stores it
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                        target)
  with ocp.CheckpointManager(os.path.abspath(directory)) as manager:
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True))
  variables = {'params': restored['params'], **restored['model_state']}
  return cfg, model, variables
