#!/usr/bin/env python
"""METABRIC and SUPPORT on DeepSurv's own splits: jmed's linear and MLP Cox models next to the
DeepSurv paper's CoxPH and DeepSurv rows; prints a Markdown table of test C-index.

  python scripts/compare_survival.py --data-dir ../shared/data --seeds 0 1 2
"""

import argparse
import json

from jmed.compare import compare_survival, format_rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=None, help='root with survival/ (default: '
                      '$JMED_DATA_DIR)')
  parser.add_argument('--output-dir', default='runs/compare_survival')
  parser.add_argument('--seeds', type=int, nargs='+', default=[0])
  parser.add_argument('--datasets', nargs='+', default=['metabric', 'support'])
  args = parser.parse_args(argv)
  rows = compare_survival(args.data_dir, args.output_dir, args.seeds, args.datasets)
  print(json.dumps(rows, indent=1))
  print(format_rows(rows, 'test_c_index'))


if __name__ == '__main__':
  main()
