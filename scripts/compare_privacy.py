#!/usr/bin/env python
"""DP-SGD's privacy / utility trade-off on PneumoniaMNIST (`jmed.configs.PRIVACY_RECIPE`): a
non-private reference, then DP-SGD at each noise multiplier, with epsilon at delta = 1 / n.

  python scripts/compare_privacy.py --data-dir ../shared/data
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

from jmed import configs
from jmed.data import datasets
from jmed.train.loop import fit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (scripts/common.py)


def compare_privacy(data_dir: Optional[str], output_dir: str,
                    noise_multipliers: Sequence[float] = (0.0, 0.6, 1.0, 2.0), seed: int = 0,
                    recipe: Optional[configs.TrainConfig] = None,
                    max_steps: int = 0) -> List[Dict]:
  """The privacy / utility trade-off of `configs.PRIVACY_RECIPE` (or `recipe`) with DP-SGD at
  each noise multiplier (0: clipping alone, no guarantee), after a non-private reference: the
  seed's recipe (`TrainConfig` defaults) for the same model, data and epochs.

  Args:
    data_dir: root with the recipe's dataset (None: $JMED_DATA_DIR).
    output_dir: each run writes to `<output_dir>/<run>_seed<seed>`.
    noise_multipliers: one DP-SGD run per value.
    seed: every run's seed.
    recipe: the DP-SGD config (default `configs.PRIVACY_RECIPE`).
    max_steps: caps every training run (0: the recipe's epochs).

  Returns:
    One row per run: 'run', 'noise_multiplier', 'epsilon' and 'delta' (None for the reference;
    epsilon None without noise), 'test_auroc' and 'test_accuracy' at the checkpoint validation
    picked, and 'steps'.
  """
  recipe = recipe or configs.PRIVACY_RECIPE
  dataset = datasets.load_dataset(recipe.dataset, data_dir)
  reference = configs.TrainConfig(model=recipe.model, dataset=recipe.dataset,
                                  epochs=recipe.epochs, eval_batch_size=recipe.eval_batch_size)
  runs = [('non-private (seed recipe)', reference)]
  for sigma in noise_multipliers:
    runs.append((f'dp_sigma{sigma:g}', dataclasses.replace(recipe, privacy=dataclasses.replace(
        recipe.privacy, enabled=True, noise_multiplier=sigma))))
  rows = []
  for name, cfg in runs:
    cfg = common.seeded(cfg, output_dir, name.split(' ')[0], seed, data_dir, None, max_steps)
    summary = fit(cfg, dataset)
    budget = summary.get('privacy', {})
    rows.append({'run': name, 'noise_multiplier': budget.get('noise_multiplier'),
                 'epsilon': budget.get('epsilon'), 'delta': budget.get('delta'),
                 'test_auroc': summary['test_auroc'], 'test_accuracy': summary['test_accuracy'],
                 'steps': summary['steps']})
  return rows


def format_privacy_rows(rows: List[Dict]) -> str:
  """A Markdown table of `compare_privacy` rows: run, sigma, epsilon, test AUROC and accuracy."""
  lines = ['| run | sigma | epsilon (delta = 1/n) | test AUROC | test accuracy |',
           '|---|---|---|---|---|']
  for row in rows:
    eps = '∞ (no guarantee)' if row['epsilon'] is None else f"{row['epsilon']:.2f}"
    sigma = '-' if row['noise_multiplier'] is None else f"{row['noise_multiplier']:g}"
    lines.append(f"| {row['run']} | {sigma} | {eps} | {row['test_auroc']:.3f} | "
                 f"{row['test_accuracy']:.3f} |")
  return '\n'.join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=None, help='Root of local data ($JMED_DATA_DIR).')
  parser.add_argument('--output-dir', default='runs/compare_privacy')
  parser.add_argument('--noise-multipliers', type=float, nargs='+', default=[0.0, 0.6, 1.0, 2.0],
                      help='DP-SGD noise multipliers to run (0: clipping only).')
  parser.add_argument('--seed', type=int, default=0)
  common.add_max_steps_flag(parser)
  args = parser.parse_args(argv)
  rows = compare_privacy(args.data_dir, args.output_dir, args.noise_multipliers, args.seed,
                         max_steps=args.max_steps)
  print(json.dumps(rows, indent=2))
  print(format_privacy_rows(rows))


if __name__ == '__main__':
  main()
