#!/usr/bin/env python
"""MoleculeNet (ESOL, BBBP, Tox21): SMILES Transformer, GRU and CNN against a random forest on
Morgan fingerprints, on MoleculeNet's split for each dataset, in one run; prints a Markdown table
of validation and test metrics beside MoleculeNet's published test numbers.

  python scripts/compare_molecules.py --data-dir ../shared/data --seeds 0 1 2
"""

import argparse
import json

from jmed.compare import compare_molecules, format_molecule_rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=None,
                      help='root with moleculenet/ (default: $JMED_DATA_DIR)')
  parser.add_argument('--output-dir', default='runs/compare_molecules')
  parser.add_argument('--seeds', type=int, nargs='+', default=[0])
  parser.add_argument('--datasets', nargs='+', default=['esol', 'bbbp', 'tox21'])
  parser.add_argument('--models', nargs='*', default=['transformer', 'gru', 'text_cnn'])
  parser.add_argument('--no-forest', action='store_true', help='skip the random forest')
  args = parser.parse_args(argv)
  rows = compare_molecules(args.data_dir, args.output_dir, args.seeds, args.datasets,
                           args.models, forest=not args.no_forest)
  print(json.dumps(rows, indent=1, default=str))
  print(format_molecule_rows(rows))


if __name__ == '__main__':
  main()
