#!/usr/bin/env python
"""Score a new file with a finished run: per-row predictions to CSV, metrics when it has labels.

The run must have been trained on a file of your own (scripts/train.py --data FILE): its saved
preprocessing (column statistics, categories, classes, tokenizer, image size) turns the new
file into inputs exactly as training did.

  python scripts/train.py --data patients.csv --label-column outcome --model mlp \
      --output-dir runs/patients
  python scripts/predict.py --run-dir runs/patients --data new_patients.csv \
      --output new_patients_predictions.csv
"""

import argparse
import json
import os
import sys

from jmed import predict
from jmed.errors import UserError
from jmed.train.restore import WHICH


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--run-dir', required=True, help='the run (scripts/train.py --output-dir)')
  parser.add_argument('--data', required=True,
                      help="a file (or image folder) in the training file's format; label "
                           'columns are optional')
  parser.add_argument('--output', default=None,
                      help='predictions CSV (default: <run-dir>/predictions_<file stem>.csv)')
  parser.add_argument('--which', choices=WHICH, default='best',
                      help='the checkpoint validation picked, or the latest')
  parser.add_argument('--batch-size', type=int, default=256)
  parser.add_argument('--debug', action='store_true',
                      help='show the traceback of an input error instead of one line')
  return parser.parse_args(argv)


def _default_output(run_dir: str, data: str) -> str:
  stem = os.path.basename(os.path.normpath(data)).split('.')[0]
  return os.path.join(run_dir, f'predictions_{stem}.csv')


def main(argv=None) -> int:
  args = parse_args(argv)
  output = args.output or _default_output(args.run_dir, args.data)
  try:
    result = predict.predict_file(args.run_dir, args.data, args.which, args.batch_size)
  except UserError as error:
    if args.debug:
      raise
    print(f'error: {error}', file=sys.stderr)
    return 1
  predict.write_csv(result, output)
  print(f'{len(result.ids)} predictions written to {output}')
  if result.metrics is not None:
    print(json.dumps({k: v for k, v in result.metrics.items()
                      if isinstance(v, (int, float)) or v is None}, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())
