#!/usr/bin/env python
"""MedMNIST 3D: jmed's 3D ResNet-18 (`configs.MEDMNIST3D_RECIPES`) on every 3D subset present in
<data_dir>/medmnist3d/, several seeds, beside the MedMNIST v2 paper's 3D rows; prints a Markdown
table of test AUC and ACC (mean ± sd over seeds). The checkpoint is chosen by the validation
loss (the recipe's select_metric).

  python scripts/compare_medmnist3d.py --data-dir ../shared/data --seeds 0 1 2

--reuse reads a run's summary.json when its folder already holds one (to assemble the table
from runs made one seed at a time); --max-steps for smoke runs.
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

from jmed import configs
from jmed.data import datasets as jdatasets
from jmed.data import medmnist3d
from jmed.train.loop import fit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (scripts/common.py)

# Test (AUC, ACC) of Yang et al., "MedMNIST v2", Scientific Data 10, 41 (2023), its table of
# MedMNIST3D results (28^3 inputs), for AdrenalMNIST3D. NOT verified against the paper's text
# in this session: the stored copies of the paper (ar5iv.org/html/2110.14795, PMC9852451,
# nature.com/articles/s41597-022-01721-8, medmnist.com) returned only their opening sections
# to the search tool, not the table. These four rows are as recalled by the brief
# (the other rows, 2.5D, ResNet-50+ACS and AutoKeras, are left out rather than guessed); check
# them against the paper before quoting. The paper has no 64^3 rows.
PAPER_3D = {
    'adrenalmnist3d': {
        'ResNet-18+3D': (0.827, 0.721), 'ResNet-18+ACS': (0.839, 0.754),
        'ResNet-50+3D': (0.828, 0.745), 'auto-sklearn': (0.828, 0.802),
    },
}
# The augmentation preset per subset: shape masks vs CT / EM intensities.
AUGMENT = {'adrenalmnist3d': 'shape_volume', 'vesselmnist3d': 'shape_volume'}


def present(data_dir: str) -> List[str]:
  """The MedMNIST 3D names whose npz is in `<data_dir>/medmnist3d/`."""
  return [n for n in medmnist3d.NAMES if os.path.isfile(medmnist3d.local_path(n, data_dir))]


def recipe_for(name: str, model: str = 'resnet18_3d'):
  """The recipe of `model` for subset `name` (its augmentation preset)."""
  base = name[:-3] if name.endswith('_64') else name
  return dataclasses.replace(configs.MEDMNIST3D_RECIPES[model], dataset=name,
                             augment=AUGMENT.get(base, 'ct_volume'))


def _run(cfg, dataset, reuse: bool) -> Dict:
  path = os.path.join(cfg.output_dir, 'summary.json')
  if reuse and os.path.isfile(path):
    with open(path) as f:
      return json.load(f)
  return fit(cfg, dataset)


def compare(data_dir: str, output_dir: str, seeds: Sequence[int] = (0, 1, 2),
            names: Optional[Sequence[str]] = None, max_steps: int = 0,
            reuse: bool = False) -> List[Dict]:
  """One row per (subset, model): 'dataset', 'model', 'test_auc' and 'test_acc' (a value per
  seed; the paper's single value for its rows).

  Args:
    data_dir: root with medmnist3d/.
    output_dir: each run writes to `<output_dir>/<subset>_<model>_seed<seed>`.
    seeds: one run per seed.
    names: subsets (default: every one present).
    max_steps: caps every training run (0: the recipe's epochs).
    reuse: read a run's existing summary.json instead of training it again.
  """
  rows = []
  for name in names or present(data_dir):
    dataset = jdatasets.load_dataset(name, data_dir)
    cfg = recipe_for(name)
    runs = [_run(common.seeded(cfg, output_dir, f'{name}_{cfg.model}', seed, data_dir, None,
                               max_steps), dataset, reuse) for seed in seeds]
    width = cfg.model_kwargs.get('width')
    rows.append({'dataset': name, 'model': f'jmed {cfg.model} (width {width}, {cfg.augment})',
                 'test_auc': [r['test_auroc'] for r in runs],
                 'test_acc': [r['test_accuracy'] for r in runs]})
    for label, (auc, acc) in PAPER_3D.get(name, {}).items():
      rows.append({'dataset': name, 'model': f'{label} (paper)', 'test_auc': [auc],
                   'test_acc': [acc]})
  return rows


def format_table(rows: List[Dict]) -> str:
  """Markdown: dataset, model, test AUC, test ACC (mean ± sd), runs."""
  lines = ['| dataset | model | test AUC | test ACC | runs |', '|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['dataset']} | {r['model']} | {common.mean_sd(r['test_auc'])} | "
                 f"{common.mean_sd(r['test_acc'])} | {len(r['test_auc'])} |")
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-dir', default=jdatasets.resolve_data_dir())
  parser.add_argument('--output-dir', default='runs/compare_medmnist3d')
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--datasets', nargs='+', default=None,
                      help='subsets (default: every one in <data-dir>/medmnist3d/)')
  parser.add_argument('--reuse', action='store_true',
                      help="read runs' existing summary.json instead of training again")
  common.add_max_steps_flag(parser)
  args = parser.parse_args(argv)
  if not args.data_dir:
    parser.error('--data-dir (or $JMED_DATA_DIR) is required')
  rows = compare(args.data_dir, args.output_dir, args.seeds, args.datasets, args.max_steps,
                 args.reuse)
  print(format_table(rows))


if __name__ == '__main__':
  main()
