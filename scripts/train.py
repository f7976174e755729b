#!/usr/bin/env python
r"""Train a jmed model. Defaults: the seed's recipe (SGD lr 0.01, batch 32, 5 epochs) on
PneumoniaMNIST, read from $JMED_DATA_DIR (or --data-dir) when set, else downloaded.

  python scripts/train.py --data-dir ../shared/data
  python scripts/train.py --dataset mnist --data-dir ../shared/data --output-dir runs/mnist
  python scripts/train.py --model unet --dataset mnist_segmentation --data-dir ../shared/data \
      --model-kwargs '{"features": [16, 32, 64]}' --optimizer adam --learning-rate 3e-3 \
      --batch-size 8 --output-dir runs/unet_mnist_segmentation
  python scripts/train.py --data patients.csv --label-column outcome --model mlp \
      --output-dir runs/patients
  python scripts/export_records.py --dataset pneumoniamnist --data-dir ../shared/data \
      --out records/pneumoniamnist
  python scripts/train.py --data records/pneumoniamnist --output-dir runs/streamed
  python scripts/train.py --dataset ihdp --data-dir ../shared/data --model tarnet \
      --model-kwargs '{"normalize": true}' --task-kwargs '{"ipm": "wasserstein"}' \
      --optimizer adam --learning-rate 3e-3 --l2 0.03 --batch-size 100 --eval-batch-size 200 \
      --epochs 60 --output-dir runs/cfr_wass_ihdp

--data DIR of records (a folder with spec.json, written by scripts/export_records.py) streams the
dataset from its ArrayRecord shards instead of holding it in memory: each process reads only its
rows of each global batch, threads reading ahead (jmed.data.records, jmed.data.stream); the
results equal training on the same dataset in memory. Each process then prints (stderr) how
many training examples it read.

Prints the table of validation and test metrics; summary.json, metrics.jsonl, TensorBoard
events (tensorboard/) and curves.png are in --output-dir. A mistake in a flag, a data file or
the output directory prints one line `error: ...` and exits 1 (--debug: the traceback).
"""

import argparse
import dataclasses
import json
import os
import sys

from jmed import configs
from jmed import distributed
from jmed import optim
from jmed import privacy as jprivacy
from jmed import tasks
from jmed.configs import (DataConfig, MoleculeConfig, OptimizerConfig, PrivacyConfig, TextConfig,
                          TrainConfig, field_docs)
from jmed.data import DATASET_NAMES
from jmed.data import moleculenet
from jmed.data import records
from jmed.data import user
from jmed.data.augment import PRESETS
from jmed.errors import UserError
from jmed.models import MODELS
from jmed.text import tokenizer as jtokenizer
from jmed.train import loop
from jmed.train.report import format_summary


def _metric_names() -> tuple:
  """'auto', then every metric of every task (each once), 'loss' among them."""
  names = {name: None for task in tasks.TASKS.values() for name in task.metric_names}
  return ('auto', *names, *(() if 'loss' in names else ('loss',)))


# The values each enumerated flag accepts, by its parsed name (its flag without the leading
# dashes, '-' as '_'; DataConfig's under 'data_' + its field). argparse checks them before any
# data is read.
CHOICES = {
    'model': tuple(MODELS),
    'dataset': tuple(DATASET_NAMES),
    'augment': tuple(PRESETS),
    'optimizer': tuple(optim.OPTIMIZERS),
    'schedule': optim.SCHEDULES,
    'dtype': ('float32', 'bfloat16'),
    'class_weights': ('none', 'balanced'),
    'select_metric': _metric_names(),
    'tokenizer': jtokenizer.KINDS,
    'molecule_features': moleculenet.FEATURES,
    'molecule_split': ('auto', *moleculenet.SPLIT_KINDS),
    'dp_accountant': jprivacy.ACCOUNTANTS,
    'data_source': configs.DATA_SOURCES,
    'data_task': configs.DATA_TASKS,
    'data_split': configs.SPLIT_RULES,
    'data_missing': configs.MISSING_POLICIES,
    'data_channels': (0, 1, 3),
}


def _add_fields(parser, cls, skip=(), prefix='', dest_prefix=None, rename=None):
  """One --flag per dataclass field, typed, defaulted and documented from the dataclass.

  The flag is `prefix` + the field name (or its `rename`), e.g. --dp-l2-clip; its value lands
  under `dest_prefix` (default `prefix`) + the field name. Fields in `CHOICES` accept only
  those values.
  """
  docs = field_docs(cls)
  dest_prefix = prefix if dest_prefix is None else dest_prefix
  for field in dataclasses.fields(cls):
    if field.name in skip:
      continue
    flag = prefix + (rename or {}).get(field.name, field.name)
    dest, text = dest_prefix + field.name, docs.get(field.name)
    options = {'dest': dest, 'default': field.default}
    if isinstance(field.default, bool):
      options['action'] = argparse.BooleanOptionalAction
    elif field.default_factory is dict:
      options.update(type=json.loads, default={}, metavar=flag.upper())
      text = f'{text} (JSON)'
    else:
      kind = type(field.default) if field.default is not None else str
      options.update(type=kind, metavar=flag.upper())
    if dest in CHOICES:
      options['choices'] = CHOICES[dest]
      text = f'{text} One of: {", ".join(map(str, CHOICES[dest]))}.'
    parser.add_argument('--' + flag.replace('_', '-'), help=text, **options)


def _add_distributed(parser) -> None:
  group = parser.add_argument_group(
      'multi-host (jax.distributed)',
      'One process per host (or per GPU). Run the same command on every host; the global '
      '--batch-size is split over every device of every process.')
  group.add_argument('--distributed', choices=distributed.MODES, default='auto',
                     help='auto: join a multi-process run when coordinator flags are given or '
                     'a Cloud TPU, SLURM or Open MPI launcher is detected; on: always call '
                     'jax.distributed.initialize() (JAX detects the cluster); off: one process.')
  group.add_argument('--coordinator-address', default=None,
                     help='host:port of process 0, for clusters JAX cannot detect.')
  group.add_argument('--num-processes', type=int, default=None, help='total processes.')
  group.add_argument('--process-id', type=int, default=None,
                     help="this process's index, 0 .. num-processes - 1.")


_DISTRIBUTED_FLAGS = ('distributed', 'coordinator_address', 'num_processes', 'process_id')


def parse_args(argv=None):
  """(TrainConfig, the multi-host options as a dict of `distributed.initialize` arguments,
  --debug)."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  _add_fields(parser, TrainConfig, skip=('optimizer', 'text', 'molecule', 'privacy', 'data'))
  parser.add_argument('--debug', action='store_true',
                      help='On a mistake in a flag, a data file or the output directory, show '
                      'the traceback instead of the one-line error.')
  _add_fields(parser.add_argument_group(
      'your own data file or folder (instead of --dataset)'), DataConfig, dest_prefix='data_',
              rename={'path': 'data'})
  opt = parser.add_argument_group('optimizer')
  opt.add_argument('--optimizer', default=OptimizerConfig.name, choices=CHOICES['optimizer'],
                   metavar='OPTIMIZER',
                   help=f'One of: {", ".join(CHOICES["optimizer"])}.')
  _add_fields(opt, OptimizerConfig, skip=('name',))
  _add_fields(parser.add_argument_group('text datasets'), TextConfig)
  _add_fields(parser.add_argument_group(
      'molecules (esol, bbbp, tox21, sider, clintox and SMILES files of your own)'),
      MoleculeConfig, prefix='molecule_')
  _add_fields(parser.add_argument_group('differential privacy (DP-SGD)'), PrivacyConfig,
              prefix='dp_')
  _add_distributed(parser)
  args = vars(parser.parse_args(argv))
  multihost = {k: args.pop(k) for k in _DISTRIBUTED_FLAGS}
  multihost['mode'] = multihost.pop('distributed')
  debug = args.pop('debug')
  opt_fields = {f.name for f in dataclasses.fields(OptimizerConfig)}
  optimizer = OptimizerConfig(name=args.pop('optimizer'),
                              **{k: args.pop(k) for k in list(args) if k in opt_fields})
  text = TextConfig(**{f.name: args.pop(f.name) for f in dataclasses.fields(TextConfig)})
  molecule = MoleculeConfig(**{f.name: args.pop('molecule_' + f.name)
                               for f in dataclasses.fields(MoleculeConfig)})
  privacy = PrivacyConfig(**{f.name: args.pop('dp_' + f.name)
                             for f in dataclasses.fields(PrivacyConfig)})
  data = DataConfig(**{f.name: args.pop('data_' + f.name) for f in dataclasses.fields(DataConfig)})
  cfg = TrainConfig(optimizer=optimizer, text=text, molecule=molecule, privacy=privacy, data=data,
                    **args)
  return cfg, multihost, debug


def parse_config(argv=None) -> TrainConfig:
  return parse_args(argv)[0]


def _is_records(cfg: TrainConfig) -> bool:
  """Whether `--data` is a records folder (scripts/export_records.py)."""
  return bool(cfg.data.path) and user.resolve_source(cfg.data) == 'records'


def _fit_records(cfg: TrainConfig, where: dict) -> dict:
  """`loop.fit` on a records folder, streamed from disk; prints (stderr) how many training
  examples this process read: its rows of each global batch (and the one example that shapes
  the model), not the whole split."""
  dataset = loop.load_dataset(cfg)
  before = records.rows_read(dataset)
  summary = loop.fit(cfg, dataset)
  print(f'process {where["process_index"]}/{where["process_count"]}: read '
        f'{records.rows_read(dataset) - before} of {len(dataset.splits["train"][1])} training '
        f'examples from {cfg.data.path}', file=sys.stderr, flush=True)
  return summary


def main(argv=None) -> int:
  """Trains as the flags say; returns the exit status (1: a `UserError`, printed as one line
  unless --debug). Any other exception is a bug and propagates with its traceback."""
  cfg, multihost, debug = parse_args(argv)
  try:
    where = distributed.initialize(**multihost)
    print('process {process_index}/{process_count}: {local_devices} local and {global_devices} '
          'global {platform} devices'.format(**where), file=sys.stderr, flush=True)
    summary = _fit_records(cfg, where) if _is_records(cfg) else loop.fit(cfg)
  except UserError as e:
    if debug:
      raise
    print(f'error: {e}', file=sys.stderr)
    return 1
  if distributed.is_primary():
    print(format_summary(summary))
    print(f'summary: {os.path.join(cfg.output_dir, "summary.json")}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
