#!/usr/bin/env python
"""METABRIC and SUPPORT on DeepSurv's own splits: jmed's linear and MLP Cox models next to the
DeepSurv paper's CoxPH and DeepSurv rows; prints a Markdown table of test C-index.

  python scripts/compare_survival.py --data-dir ../shared/data --seeds 0 1 2
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

from jmed import configs
from jmed.data import datasets as jdatasets
from jmed.train.loop import fit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (scripts/common.py)

# Test C-index reported by Katzman et al. 2018 (DeepSurv), Table 2: linear Cox PH and DeepSurv.
DEEPSURV_PAPER = {
    'metabric': {'CoxPH': 0.631, 'DeepSurv': 0.654},
    'support': {'CoxPH': 0.583, 'DeepSurv': 0.618},
}


def compare_survival(data_dir: Optional[str], output_dir: str, seeds: Sequence[int] = (0,),
                     datasets: Sequence[str] = ('metabric', 'support'),
                     max_steps: int = 0) -> List[Dict]:
  """Test C-index on DeepSurv's splits: a linear Cox model and the MLP of
  `configs.SURVIVAL_RECIPES`, both trained by `fit` (best validation C-index), next to the
  DeepSurv paper's CoxPH and DeepSurv rows (`DEEPSURV_PAPER`).

  Args:
    data_dir: root with survival/ (None: $JMED_DATA_DIR).
    output_dir: each run writes to `<output_dir>/<dataset>_<model>_seed<seed>`.
    seeds: one run per seed for each model.
    datasets: keys of `configs.SURVIVAL_RECIPES`.
    max_steps: caps every training run (0: the recipes' epochs).

  Returns:
    One row per (dataset, model): 'dataset', 'model', 'test_c_index' (one value per seed; the
    paper's single value for its rows).
  """
  rows = []
  for name in datasets:
    dataset = jdatasets.load_dataset(name, data_dir)
    recipe = configs.SURVIVAL_RECIPES[name]
    linear = dataclasses.replace(recipe, model_kwargs={'hidden': []}, dropout_rate=0.0)
    for label, cfg in (('linear Cox (jmed)', linear), ('MLP Cox (jmed)', recipe)):
      run_name = f'{name}_{label.split()[0]}'
      scores = [fit(common.seeded(cfg, output_dir, run_name, seed, data_dir, None, max_steps),
                    dataset)['test_c_index'] for seed in seeds]
      rows.append({'dataset': name, 'model': label, 'test_c_index': scores})
    for paper_row, value in DEEPSURV_PAPER[name].items():
      rows.append({'dataset': name, 'model': f'{paper_row} (paper)', 'test_c_index': [value]})
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=None, help='root with survival/ (default: '
                      '$JMED_DATA_DIR)')
  parser.add_argument('--output-dir', default='runs/compare_survival')
  parser.add_argument('--seeds', type=int, nargs='+', default=[0])
  parser.add_argument('--datasets', nargs='+', default=['metabric', 'support'])
  common.add_max_steps_flag(parser)
  args = parser.parse_args(argv)
  rows = compare_survival(args.data_dir, args.output_dir, args.seeds, args.datasets,
                          args.max_steps)
  print(json.dumps(rows, indent=1))
  print(common.format_rows(rows, 'test_c_index'))


if __name__ == '__main__':
  main()
