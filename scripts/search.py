#!/usr/bin/env python
"""Hyperparameter search over any training config field (grid, random or Bayesian).

The training flags of scripts/train.py set the base config; --space maps dotted field paths to
specs: ["loguniform", low, high], ["uniform", low, high], ["int", low, high] or
["choice", [values]]. Each trial trains in <search-dir>/trial_<NNN>; results.md/.csv,
best_config.json and best.json are written to --search-dir. Each trial is scored by the
validation metric --select-metric names; auto is the task's own, and the task says whether
lower is better (e.g. C-index maximised for survival, RMSE minimised for regression). Running
the same command again resumes an interrupted search (see jmed/search.py).

  python scripts/search.py --model mlp --dataset metabric --data-dir ../shared/data \\
      --optimizer adam --epochs 20 --batch-size 256 --model-kwargs '{"hidden": [41]}' \\
      --method bayes --trials 8 --search-dir runs/search/mlp_metabric \\
      --space '{"optimizer.learning_rate": ["loguniform", 1e-4, 1e-2],
                "dropout_rate": ["uniform", 0.0, 0.5]}'
"""

import argparse
import json
import os
import sys

from jmed import search
from jmed.errors import ConfigError, UserError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import parse_config  # noqa: E402  (scripts/train.py: the training flags)


def parse_args(argv=None):
  """(search options, the remaining training flags)."""
  parser = argparse.ArgumentParser(description=__doc__, add_help=False,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--space',
                      help='JSON object of field path -> spec, or a path to a JSON file.')
  parser.add_argument('--method', default='random', choices=search.METHODS)
  parser.add_argument('--trials', type=int, default=None,
                      help='Trials in total (default for grid: all its points).')
  parser.add_argument('--search-dir', default=None,
                      help='Where trials and results go (default: runs/search/<model>_<dataset>'
                      '_<method>). Re-running into it resumes the search.')
  parser.add_argument('--search-seed', type=int, default=0,
                      help='Seeds the random and Bayesian samplers.')
  parser.add_argument('--startup-trials', type=int, default=5,
                      help='bayes: trials sampled at random before TPE takes over.')
  parser.add_argument('-h', '--help', action='store_true')
  args, rest = parser.parse_known_args(argv)
  if args.help:
    parser.print_help()
    print('\nTraining flags (scripts/train.py) set the base config:\n')
    parse_config(['--help'])  # prints the training flags and exits
  if args.space is None:
    parser.error('--space is required.')
  return args, rest


def read_space(text: str) -> dict:
  """--space: a JSON object, or the path of a file holding one."""
  if os.path.exists(text):
    with open(text) as f:
      text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(f'--space is neither a JSON object nor a JSON file: {e}') from None


def main(argv=None) -> int:
  args, rest = parse_args(argv)
  base = parse_config(rest)
  search_dir = args.search_dir or os.path.join(
      'runs', 'search', f'{base.model}_{base.dataset}_{args.method}')
  try:
    result = search.search(
        base, read_space(args.space), method=args.method, trials=args.trials,
        search_dir=search_dir, seed=args.search_seed, startup_trials=args.startup_trials)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print(f'\ninterrupted: {search_dir}/results.md holds the trials so far; run the same command '
          'again to resume.', file=sys.stderr)
    return 130
  print(search.format_table(result['trials'], result['best']))
  best = result['best']
  if best is None:
    print(f'No trial finished; see {search_dir}/results.md.')
    return 1
  print(f"best: trial {best['number']} {best['metric']} {best['objective']:.4f} "
        f"({result['direction']}); config in {os.path.join(search_dir, 'best_config.json')}")
  return 0


if __name__ == '__main__':
  sys.exit(main())
