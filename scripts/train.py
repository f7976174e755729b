#!/usr/bin/env python
"""Train a jmed model. Defaults: the seed's recipe (SGD lr 0.01, batch 32, 5 epochs) on
PneumoniaMNIST, read from $JMED_DATA_DIR (or --data-dir) when set, else downloaded.

  python scripts/train.py --data-dir ../shared/data
  python scripts/train.py --dataset mnist --data-dir ../shared/data --output-dir runs/mnist
  python scripts/train.py --model unet --dataset mnist_segmentation --data-dir ../shared/data \
      --model-kwargs '{"features": [16, 32, 64]}' --optimizer adam --learning-rate 3e-3 \
      --batch-size 8 --output-dir runs/unet_mnist_segmentation
"""

import argparse
import dataclasses
import json
import sys

from jmed import distributed
from jmed.configs import (MoleculeConfig, OptimizerConfig, PrivacyConfig, TextConfig, TrainConfig,
                          field_docs)
from jmed.data import DATASET_NAMES
from jmed.data.augment import PRESETS
from jmed.errors import NonFiniteLossError
from jmed.models import MODELS
from jmed.train.loop import fit
from jmed.train.report import format_summary


def _add_fields(parser, cls, skip=(), extra_help=None, prefix=''):
  """One --flag per dataclass field, typed, defaulted and documented from the dataclass
  (`prefix` + the field name, e.g. --dp-l2-clip; its value lands under the same name)."""
  docs = field_docs(cls)
  for name, text in (extra_help or {}).items():
    docs[name] = f'{docs.get(name, "")} {text}'.strip()
  for field in dataclasses.fields(cls):
    if field.name in skip:
      continue
    flag = '--' + (prefix + field.name).replace('_', '-')
    default = field.default
    if field.default_factory is dict:
      parser.add_argument(flag, type=json.loads, default={},
                          help=f'{docs.get(field.name)} (JSON)')
    elif isinstance(default, bool):
      parser.add_argument(flag, default=default, action=argparse.BooleanOptionalAction,
                          help=docs.get(field.name))
    else:
      kind = type(default) if default is not None else str
      parser.add_argument(flag, type=kind, default=default, help=docs.get(field.name))


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
  """(TrainConfig, the multi-host options as a dict of `distributed.initialize` arguments)."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  _add_fields(parser, TrainConfig, skip=('optimizer', 'text', 'molecule', 'privacy'), extra_help={
      'model': f'One of: {", ".join(MODELS)}.',
      'dataset': f'One of: {", ".join(DATASET_NAMES)}.',
      'augment': f'One of: {", ".join(PRESETS)}.'})
  opt = parser.add_argument_group('optimizer')
  opt.add_argument('--optimizer', default=OptimizerConfig.name,
                   help='sgd | adam | rmsprop | adamw | amsgrad')
  _add_fields(opt, OptimizerConfig, skip=('name',))
  _add_fields(parser.add_argument_group('text datasets'), TextConfig)
  _add_fields(parser.add_argument_group('molecule datasets (esol, bbbp, tox21)'), MoleculeConfig,
              prefix='molecule_')
  _add_fields(parser.add_argument_group('differential privacy (DP-SGD)'), PrivacyConfig,
              prefix='dp_')
  _add_distributed(parser)
  args = vars(parser.parse_args(argv))
  multihost = {k: args.pop(k) for k in _DISTRIBUTED_FLAGS}
  multihost['mode'] = multihost.pop('distributed')
  opt_fields = {f.name for f in dataclasses.fields(OptimizerConfig)}
  optimizer = OptimizerConfig(name=args.pop('optimizer'),
                              **{k: args.pop(k) for k in list(args) if k in opt_fields})
  text = TextConfig(**{f.name: args.pop(f.name) for f in dataclasses.fields(TextConfig)})
  molecule = MoleculeConfig(**{f.name: args.pop('molecule_' + f.name)
                               for f in dataclasses.fields(MoleculeConfig)})
  privacy = PrivacyConfig(**{f.name: args.pop('dp_' + f.name)
                             for f in dataclasses.fields(PrivacyConfig)})
  cfg = TrainConfig(optimizer=optimizer, text=text, molecule=molecule, privacy=privacy, **args)
  return cfg, multihost


def parse_config(argv=None) -> TrainConfig:
  return parse_args(argv)[0]


def main(argv=None) -> int:
  cfg, multihost = parse_args(argv)
  try:
    where = distributed.initialize(**multihost)
    print('process {process_index}/{process_count}: {local_devices} local and {global_devices} '
          'global {platform} devices'.format(**where), file=sys.stderr, flush=True)
    summary = fit(cfg)
  except (NonFiniteLossError, ValueError, FileNotFoundError, FileExistsError,
          NotImplementedError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  if distributed.is_primary():
    print(json.dumps(summary, indent=2))
    print(format_summary(summary))
  return 0


if __name__ == '__main__':
  sys.exit(main())
