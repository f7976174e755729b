"""Side-by-side result tables: jmed's models against a peer measured in the same run."""

import dataclasses
import os
import statistics
from typing import Dict, List, Optional, Sequence

import numpy as np

from jmed import baselines
from jmed import configs
from jmed import data as jdata
from jmed import metrics as jmetrics
from jmed.data import medical_abstracts
from jmed.data import moleculenet
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


MOLECULE_METRICS = {'regression': 'rmse', 'binary': 'auroc', 'multilabel': 'auroc'}


def compare_molecules(data_dir: Optional[str], output_dir: str, seeds: Sequence[int] = (0,),
                      datasets: Sequence[str] = ('esol', 'bbbp', 'tox21'),
                      models: Sequence[str] = ('transformer', 'gru', 'text_cnn'),
                      forest: bool = True) -> List[Dict]:
  """MoleculeNet on MoleculeNet's split for each dataset (ESOL random, RMSE; BBBP scaffold,
  ROC-AUC; Tox21 random, mean ROC-AUC over its 12 tasks): the SMILES models of
  `configs.MOLECULE_RECIPES` trained by `fit` (checkpoint chosen on validation), and a random
  forest on 1024-bit Morgan fingerprints (MoleculeNet's RF baseline, see
  `molecule_random_forest`) on the very same molecules, next to `configs.MOLECULENET_PAPER`.

  Returns:
    One row per (dataset, model): 'dataset', 'model', 'metric', 'split', 'test' and 'val'
    (one value per seed), and for Tox21 'test_per_task' (task -> one value per seed).
  """
  rows = []
  for name in datasets:
    recipes = configs.MOLECULE_RECIPES[name]
    molecule = recipes[models[0]].molecule if models else configs.MoleculeConfig()
    if forest:
      fps = jdata.load_dataset(name, data_dir, molecule=dataclasses.replace(
          molecule, features='fingerprint', fingerprint_bits=1024))
      rows.append(_forest_row(fps, seeds, molecule.split))
    loaded = {}
    for model in models:
      recipe = recipes[model]
      key = dataclasses.astuple(recipe.molecule)
      if key not in loaded:
        loaded[key] = jdata.load_dataset(name, data_dir, molecule=recipe.molecule)
      rows.append(_model_row(recipe, loaded[key], output_dir, seeds, data_dir))
    for paper_model, value in configs.MOLECULENET_PAPER[name].items():
      rows.append({'dataset': name, 'model': f'{paper_model} (MoleculeNet paper)',
                   'metric': MOLECULE_METRICS[_task(name)], 'test': [value], 'val': []})
  return rows


def _task(name: str) -> str:
  return moleculenet.SPECS[name].task


def _model_row(recipe, dataset, output_dir: str, seeds, data_dir) -> Dict:
  metric = MOLECULE_METRICS[dataset.task]
  row = {'dataset': dataset.name, 'model': f'SMILES {recipe.model} (jmed)', 'metric': metric,
         'split': moleculenet.resolve_split(dataset.name, recipe.molecule.split),
         'test': [], 'val': [], 'settings': recipe.model_kwargs}
  per_task = []
  for seed in seeds:
    summary = fit(_seeded(recipe, output_dir, f'{dataset.name}_{recipe.model}', seed, data_dir,
                          None), dataset)
    row['test'].append(summary[f'test_{metric}'])
    row['val'].append(summary['best']['value'])
    per_task.append(summary.get('test_auroc_per_label'))
  _add_per_task(row, per_task)
  return row


def _forest_row(fingerprints, seeds, split: str) -> Dict:
  metric = MOLECULE_METRICS[fingerprints.task]
  row = {'dataset': fingerprints.name, 'model': 'random forest, ECFP4 1024 bits (jmed)',
         'metric': metric, 'split': moleculenet.resolve_split(fingerprints.name, split),
         'test': [], 'val': []}
  per_task = []
  for seed in seeds:
    result = molecule_random_forest(fingerprints, seed=seed)
    row['test'].append(result['test'][metric])
    row['val'].append(result['val'][metric])
    row['settings'] = result['settings']
    per_task.append(result['test'].get('auroc_per_label'))
  _add_per_task(row, per_task)
  return row


def _add_per_task(row: Dict, per_task: List) -> None:
  if per_task and per_task[0] is not None:
    tasks = moleculenet.SPECS[row['dataset']].targets
    row['test_per_task'] = {task: [values[i] for values in per_task]
                            for i, task in enumerate(tasks)}


def molecule_random_forest(fingerprints, *, min_samples_leaf: Sequence[int] = (1, 3),
                           n_estimators: int = 500, seed: int = 0, n_jobs: int = 2) -> Dict:
  """A scikit-learn random forest on a fingerprint `Dataset` (MoleculeNet's RF baseline:
  500 trees, balanced class weights for classification, one forest per Tox21 task fitted on
  that task's measured labels), `min_samples_leaf` chosen on the validation split.

  Args:
    fingerprints: a 'regression', 'binary' or 'multilabel' `Dataset` with float32 fingerprint
      inputs `[n, bits]`.
    min_samples_leaf: the grid searched by validation RMSE (regression) or mean ROC-AUC.
    n_estimators, seed, n_jobs: forest size, its random state and its worker processes.

  Returns:
    {'val': metrics, 'test': metrics, 'settings': the chosen settings}: metrics as
    `jmed.metrics.regression_metrics` or `classification_metrics` (with 'auroc_per_label' for
    multilabel) of the chosen forest.
  """
  task = fingerprints.task
  metric = MOLECULE_METRICS[task]
  best = None
  for leaf in min_samples_leaf:
    settings = {'n_estimators': n_estimators, 'min_samples_leaf': leaf,
                'max_features': 1 / 3 if task == 'regression' else 'sqrt'}
    forests = _fit_forests(fingerprints.splits['train'], task, settings, seed, n_jobs)
    val = _forest_metrics(forests, fingerprints.splits['validation'], task)
    better = best is None or (val[metric] < best[1][metric] if task == 'regression'
                              else val[metric] > best[1][metric])
    if better:
      best = (forests, val, settings)
  forests, val, settings = best
  test = _forest_metrics(forests, fingerprints.splits['test'], task)
  return {'val': val, 'test': test, 'settings': settings}


def _fit_forests(split, task: str, settings: Dict, seed: int, n_jobs: int) -> List:
  from sklearn import ensemble  # pylint: disable=g-import-not-at-top
  x, y = split
  if task == 'regression':
    forest = ensemble.RandomForestRegressor(random_state=seed, n_jobs=n_jobs, **settings)
    return [forest.fit(x, y[:, 0] if y.shape[1] == 1 else y)]
  columns = [y] if task == 'binary' else list(y.T)
  forests = []
  for labels in columns:
    measured = labels != moleculenet.MISSING
    forest = ensemble.RandomForestClassifier(random_state=seed, n_jobs=n_jobs,
                                             class_weight='balanced', **settings)
    forests.append(forest.fit(x[measured], labels[measured]))
  return forests


def _forest_metrics(forests: List, split, task: str) -> Dict:
  x, y = split
  if task == 'regression':
    predictions = forests[0].predict(x).reshape(len(x), -1)
    return jmetrics.regression_metrics(predictions, y)
  positive = np.stack([f.predict_proba(x)[:, list(f.classes_).index(1)] for f in forests], 1)
  if task == 'binary':
    return jmetrics.classification_metrics(np.concatenate([1 - positive, positive], 1), y,
                                           task='binary')
  return jmetrics.classification_metrics(positive, y, task='multilabel')


def format_molecule_rows(rows: List[Dict]) -> str:
  """A Markdown table of `compare_molecules` rows (mean ± sd over seeds), then Tox21's
  per-task test ROC-AUC of each measured model."""
  lines = ['| dataset | split | metric | model | val | test | runs |', '|' + '---|' * 7]
  for row in rows:
    split = row.get('split') or moleculenet.SPECS[row['dataset']].split
    val = _mean_sd(row['val']) if row['val'] else '—'
    lines.append(f"| {row['dataset']} | {split} | {row['metric']} | {row['model']} | {val} | "
                 f"{_mean_sd(row['test'])} | {len(row['test'])} |")
  per_task = [row for row in rows if 'test_per_task' in row]
  if per_task:
    tasks = list(per_task[0]['test_per_task'])
    lines += ['', '| model | ' + ' | '.join(tasks) + ' |', '|' + '---|' * (len(tasks) + 1)]
    for row in per_task:
      cells = [_mean_sd(row['test_per_task'][t]) if None not in row['test_per_task'][t]
               else 'n/a' for t in tasks]
      lines.append(f"| {row['dataset']}: {row['model']} | " + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


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


def compare_privacy(data_dir: Optional[str], output_dir: str,
                    noise_multipliers: Sequence[float] = (0.0, 0.6, 1.0, 2.0), seed: int = 0,
                    recipe: Optional[configs.TrainConfig] = None) -> List[Dict]:
  """The privacy / utility trade-off of `configs.PRIVACY_RECIPE` (or `recipe`) with DP-SGD at
  each noise multiplier (0: clipping alone, no guarantee), after a non-private reference: the
  seed's recipe (`TrainConfig` defaults) for the same model, data and epochs. One row per run:
  epsilon at delta = 1 / n and the test metrics at the checkpoint validation picked."""
  recipe = recipe or configs.PRIVACY_RECIPE
  dataset = jdata.load_dataset(recipe.dataset, data_dir)
  reference = configs.TrainConfig(model=recipe.model, dataset=recipe.dataset,
                                  epochs=recipe.epochs, eval_batch_size=recipe.eval_batch_size)
  runs = [('non-private (seed recipe)', reference)]
  for sigma in noise_multipliers:
    runs.append((f'dp_sigma{sigma:g}', dataclasses.replace(recipe, privacy=dataclasses.replace(
        recipe.privacy, enabled=True, noise_multiplier=sigma))))
  rows = []
  for name, cfg in runs:
    summary = fit(_seeded(cfg, output_dir, name.split(' ')[0], seed, data_dir, None), dataset)
    budget = summary.get('privacy', {})
    rows.append({'run': name, 'noise_multiplier': budget.get('noise_multiplier'),
                 'epsilon': budget.get('epsilon'), 'delta': budget.get('delta'),
                 'test_auroc': summary['test_auroc'], 'test_accuracy': summary['test_accuracy'],
                 'steps': summary['steps']})
  return rows
