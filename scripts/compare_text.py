#!/usr/bin/env python
"""Medical Abstracts: the Transformer and the GRU against TF-IDF + logistic regression, on the
same stratified split, in one run; prints a Markdown table of test macro-F1.

  python scripts/compare_text.py --data-dir ../shared/data --seeds 0 1 2
"""

import argparse
import json

from jmed.compare import compare_text, format_rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=None, help='root with medical_abstracts/ '
                      '(default: $JMED_DATA_DIR, else download)')
  parser.add_argument('--tfds-dir', default=None, help='where TFDS prepares the dataset')
  parser.add_argument('--output-dir', default='runs/compare_text')
  parser.add_argument('--seeds', type=int, nargs='+', default=[0])
  parser.add_argument('--models', nargs='+', default=['transformer', 'gru'])
  args = parser.parse_args(argv)
  rows = compare_text(args.data_dir, args.tfds_dir, args.output_dir, args.seeds, args.models)
  print(json.dumps(rows, indent=1, default=str))
  print(format_rows(rows, 'test_macro_f1'))


if __name__ == '__main__':
  main()
