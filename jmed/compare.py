"""Side-by-side result tables: jmed's models against a peer measured in the same run."""

import dataclasses
import os
import statistics
from typing import Dict, List, Optional, Sequence

from jmed import baselines
from jmed import configs
from jmed import data as jdata
from jmed.data import medical_abstracts
from jmed.train.loop import fit


def _mean_sd(values: Sequence[float]) -> str:
  if len(values) == 1:
    return f'{values[0]:.3f}'
  return f'{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}'


def _seeded(cfg, output_dir: str, name: str, seed: int, data_dir, tfds_dir):
  return dataclasses.replace(cfg, seed=seed, data_dir=data_dir, tfds_dir=tfds_dir, progress=False,
                             output_dir=os.path.join(output_dir, f'{name}_seed{seed}'))


def compare_text(data_dir: Optional[str], tfds_dir: Optional[str], output_dir: str,
                 seeds: Sequence[int] = (0,), models: Sequence[str] = ('transformer', 'gru')
                 ) -> List[Dict]:
  """Test macro-F1 on the Medical Abstracts split: TF-IDF + logistic regression (tuned on
  validation) and each model of `configs.TEXT_RECIPES` (checkpoint chosen by validation
  macro-F1), one row per model. Macro-F1 is `jmed.metrics`' F1 over all 5 classes, which
  equals scikit-learn's macro F1 when every class occurs in the test labels (it does)."""
  raw = medical_abstracts.load(jdata.datasets.resolve_data_dir(data_dir), tfds_dir)
  baseline, info = baselines.tfidf_logistic_regression(raw['train'], raw['validation'])
  test_texts, test_labels = raw['test']
  rows = [{'model': 'TF-IDF + logistic regression', 'test_macro_f1': [
      baselines.macro_f1(test_labels, baseline.predict(test_texts))], 'val_macro_f1':
           [info['val_f1']], 'settings': {k: v for k, v in info.items() if k != 'val_f1'}}]
  datasets = {}
  for name in models:
    recipe = configs.TEXT_RECIPES[name]
    key = dataclasses.astuple(recipe.text)
    if key not in datasets:
      datasets[key] = jdata.load_dataset('medical_abstracts', data_dir, tfds_dir, text=recipe.text)
    row = {'model': name, 'test_macro_f1': [], 'val_macro_f1': [], 'settings':
           recipe.model_kwargs}
    for seed in seeds:
      summary = fit(_seeded(recipe, output_dir, name, seed, data_dir, tfds_dir), datasets[key])
      row['test_macro_f1'].append(summary['test_f1'])
      row['val_macro_f1'].append(summary['best']['value'])
    rows.append(row)
  return rows


def compare_survival(data_dir: Optional[str], output_dir: str, seeds: Sequence[int] = (0,),
                     datasets: Sequence[str] = ('metabric', 'support')) -> List[Dict]:
  """Test C-index on DeepSurv's splits: a linear Cox model and the MLP of
  `configs.SURVIVAL_RECIPES`, both trained by `fit` (best validation C-index), next to the
  DeepSurv paper's CoxPH and DeepSurv rows."""
  rows = []
  for name in datasets:
    dataset = jdata.load_dataset(name, data_dir)
    recipe = configs.SURVIVAL_RECIPES[name]
    linear = dataclasses.replace(recipe, model_kwargs={'hidden': []}, dropout_rate=0.0)
    for label, cfg in (('linear Cox (jmed)', linear), ('MLP Cox (jmed)', recipe)):
      scores = [fit(_seeded(cfg, output_dir, f'{name}_{label.split()[0]}', seed, data_dir, None),
                    dataset)['test_c_index'] for seed in seeds]
      rows.append({'dataset': name, 'model': label, 'test_c_index': scores})
    for paper_row, value in configs.DEEPSURV_PAPER[name].items():
      rows.append({'dataset': name, 'model': f'{paper_row} (paper)', 'test_c_index': [value]})
  return rows


def format_rows(rows: List[Dict], metric: str) -> str:
  """A Markdown table of `rows` (mean ± sd over seeds for lists of several values)."""
  group = 'dataset' if 'dataset' in rows[0] else None
  head = ([group] if group else []) + ['model', metric, 'runs']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in rows:
    cells = ([row[group]] if group else []) + [row['model'], _mean_sd(row[metric]),
                                               str(len(row[metric]))]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)
