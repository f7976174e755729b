"""What the comparison scripts share: seeded run configs and Markdown tables of their rows.

The scripts import it as a sibling module:

  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import common
"""

import argparse
import dataclasses
import os
import re
import statistics
from typing import Dict, List, Optional, Sequence


def mean_sd(values: Sequence[float]) -> str:
  """'mean ± sd' of several values to 3 decimals; one value alone, without the sd."""
  if len(values) == 1:
    return f'{values[0]:.3f}'
  return f'{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}'


def seeded(cfg, output_dir: str, name: str, seed: int, data_dir: Optional[str],
           tfds_dir: Optional[str] = None, max_steps: int = 0):
  """`cfg` (a `jmed.configs.TrainConfig`) for one seed of a comparison: its own output folder
  `<output_dir>/<name>_seed<seed>`, the data folders, no progress bar, and at most `max_steps`
  training steps when `max_steps` > 0 (smoke runs)."""
  if max_steps > 0:
    cfg = dataclasses.replace(cfg, max_steps=min(max_steps, cfg.max_steps or max_steps))
  return dataclasses.replace(cfg, seed=seed, data_dir=data_dir, tfds_dir=tfds_dir,
                             progress=False,
                             output_dir=os.path.join(output_dir, f'{name}_seed{seed}'))


def add_max_steps_flag(parser: argparse.ArgumentParser) -> None:
  """--max-steps: caps every training run of a comparison (0: the recipes' full runs)."""
  parser.add_argument('--max-steps', type=int, default=0,
                      help='stop every training run after this many steps (0: run the '
                           "recipes' epochs); for smoke runs, not for reported numbers")


def format_rows(rows: List[Dict], metric: str) -> str:
  """A Markdown table of `rows`: [dataset,] model, `metric` (mean ± sd over its values), runs.

  Args:
    rows: dicts with 'model', `metric` (a list of one value per seed) and, in every row or in
      none, 'dataset'.
    metric: the row key of the values.
  """
  group = 'dataset' if 'dataset' in rows[0] else None
  head = ([group] if group else []) + ['model', metric, 'runs']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in rows:
    cells = ([row[group]] if group else []) + [row['model'], mean_sd(row[metric]),
                                               str(len(row[metric]))]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


PRETRAINED = '+pretrained'  # a model name's suffix: start from a pretrained run (--init-from)
_ENSEMBLE = re.compile(r'^(?P<base>.+)x(?P<members>[0-9]+)$')  # 'recipe' + 'x5': 5 members


def recipe(recipes: Dict, name: str, init_from: str = ''):
  """(`recipes[...]`, ensemble members) of a model name '<recipe>[x<K>][+pretrained]': a
  recipe of `recipes` (a `jmed.configs.TrainConfig`), 'x<K>' a deep ensemble of K members
  (`jmed.train.ensemble.fit_ensemble`; 1 without), '+pretrained' starting from `init_from`
  (`TrainConfig.init_from`: parameters taken by name and shape, text encoded with that run's
  tokenizer). Exits naming the valid names on an unknown one."""
  base = name[:-len(PRETRAINED)] if name.endswith(PRETRAINED) else name
  members = 1
  match = _ENSEMBLE.match(base)
  if match and match.group('base') in recipes:
    base, members = match.group('base'), int(match.group('members'))
  if base not in recipes or members < 1:
    raise SystemExit(f'unknown model {name!r}; valid: {", ".join(recipes)} (each optionally '
                     f'with x<members> and {PRETRAINED!r} with --init-from)')
  cfg = recipes[base]
  if name.endswith(PRETRAINED):
    if not init_from:
      raise SystemExit(f'{name} needs --init-from (a run of scripts/pretrain.py)')
    cfg = dataclasses.replace(cfg, init_from=init_from)
  return cfg, members


def fit(cfg, dataset, members: int = 1) -> Dict:
  """`jmed.train.loop.fit`, or a deep ensemble of `members` (> 1) trained at once."""
  from jmed.train import ensemble, loop  # pylint: disable=g-import-not-at-top
  if members > 1:
    return ensemble.fit_ensemble(cfg, members, dataset)[1]
  return loop.fit(cfg, dataset)
