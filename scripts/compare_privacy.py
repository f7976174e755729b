#!/usr/bin/env python
"""DP-SGD's privacy / utility trade-off on PneumoniaMNIST (`jmed.configs.PRIVACY_RECIPE`): a
non-private reference, then DP-SGD at each noise multiplier, with epsilon at delta = 1 / n.

  python scripts/compare_privacy.py --data-dir ../shared/data
"""

import argparse
import json

from jmed import compare


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=None, help='Root of local data ($JMED_DATA_DIR).')
  parser.add_argument('--output-dir', default='runs/compare_privacy')
  parser.add_argument('--noise-multipliers', type=float, nargs='+', default=[0.0, 0.6, 1.0, 2.0],
                      help='DP-SGD noise multipliers to run (0: clipping only).')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  rows = compare.compare_privacy(args.data_dir, args.output_dir, args.noise_multipliers,
                                 args.seed)
  print(json.dumps(rows, indent=2))
  print('| run | sigma | epsilon (delta = 1/n) | test AUROC | test accuracy |')
  print('|---|---|---|---|---|')
  for row in rows:
    eps = '∞ (no guarantee)' if row['epsilon'] is None else f"{row['epsilon']:.2f}"
    sigma = '-' if row['noise_multiplier'] is None else f"{row['noise_multiplier']:g}"
    print(f"| {row['run']} | {sigma} | {eps} | {row['test_auroc']:.3f} | "
          f"{row['test_accuracy']:.3f} |")


if __name__ == '__main__':
  main()
