#!/usr/bin/env python
r"""Export a dataset to ArrayRecord shards, for training that streams it from disk.

  python scripts/export_records.py --dataset pneumoniamnist --data-dir ../shared/data \
      --out records/pneumoniamnist
  python scripts/export_records.py --data scans/ --image-size 224 --channels 3 \
      --out records/scans
  python scripts/train.py --data records/pneumoniamnist --output-dir runs/streamed

Takes the dataset flags of scripts/train.py (--dataset with --data-dir, or your own --data file
or folder with its flags, text and molecule flags); the dataset is made exactly as train.py makes
it, then written split by split, shard by shard (jmed.data.records.write): a lazy source such as
a folder of images is never in memory at once. --out must be new or empty. Prints each split's
examples, shards and encoding.
"""

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # pylint: disable=g-import-not-at-top,wrong-import-position

from jmed.configs import DataConfig, MoleculeConfig, TextConfig, TrainConfig
from jmed.data import records
from jmed.errors import UserError
from jmed.train import loop

_DATASET_FIELDS = ('dataset', 'data_dir', 'tfds_dir')


def parse_args(argv=None):
  """(TrainConfig holding the dataset flags, the output options)."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  train._add_fields(parser, TrainConfig, skip=[  # pylint: disable=protected-access
      f.name for f in dataclasses.fields(TrainConfig) if f.name not in _DATASET_FIELDS])
  parser.add_argument('--out', required=True, help='the records folder to write (new or empty).')
  parser.add_argument('--examples-per-shard', type=int, default=records.EXAMPLES_PER_SHARD,
                      help='records per ArrayRecord file.')
  parser.add_argument('--encoding', default='auto', choices=('auto', *records.ENCODINGS),
                      help="how input rows are stored: auto ('uint8/255' for float32 pixels that "
                      "are all k / 255, a quarter of the bytes, else 'raw').")
  parser.add_argument('--progress', action=argparse.BooleanOptionalAction, default=True,
                      help='show a progress bar per split.')
  parser.add_argument('--debug', action='store_true', help='show tracebacks of user errors.')
  train._add_fields(parser.add_argument_group(  # pylint: disable=protected-access
      'your own data file or folder (instead of --dataset)'), DataConfig, dest_prefix='data_',
                    rename={'path': 'data'})
  train._add_fields(parser.add_argument_group('text datasets'),  # pylint: disable=protected-access
                    TextConfig)
  train._add_fields(parser.add_argument_group(  # pylint: disable=protected-access
      'molecules (esol, bbbp, tox21, sider, clintox and SMILES files of your own)'),
      MoleculeConfig, prefix='molecule_')
  args = vars(parser.parse_args(argv))
  options = {k: args.pop(k) for k in ('out', 'examples_per_shard', 'encoding', 'progress',
                                      'debug')}
  data = DataConfig(**{f.name: args.pop('data_' + f.name) for f in dataclasses.fields(DataConfig)})
  text = TextConfig(**{f.name: args.pop(f.name) for f in dataclasses.fields(TextConfig)})
  molecule = MoleculeConfig(**{f.name: args.pop('molecule_' + f.name)
                               for f in dataclasses.fields(MoleculeConfig)})
  return TrainConfig(data=data, text=text, molecule=molecule, **args), options


def main(argv=None) -> int:
  cfg, options = parse_args(argv)
  try:
    dataset = loop.load_dataset(cfg)
    spec = records.write(dataset, options['out'], examples_per_shard=options['examples_per_shard'],
                         encoding=options['encoding'], progress=options['progress'])
  except UserError as e:
    if options['debug']:
      raise
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'{spec["name"]} ({spec["task"]}, {spec["num_classes"]} outputs) -> {options["out"]}')
  print(records.describe(spec))
  print(f'train on it: python scripts/train.py --data {options["out"]} ...')
  return 0


if __name__ == '__main__':
  sys.exit(main())
