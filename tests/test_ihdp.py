"""IHDP: the built-in loader, its errors, and the same file as a user table (--treatment-column)
trained through scripts/train.py and scored by scripts/predict.py.

The training test uses replication 4: TARNet's short run must beat predicting the training
split's true ATE for every unit, a baseline whose test sqrt(PEHE) is the spread of the true
effects, 1.42 there; replication 1's effects barely vary (0.59), too close for a run this short.
"""

import csv
import dataclasses
import importlib.util
import json

import numpy as np
import pytest

from conftest import REPO
from jmed.causal import metrics as cmetrics
from jmed.configs import DataConfig, TrainConfig
from jmed.data import ihdp, splits, user
from jmed.data.datasets import load_dataset
from jmed.errors import ConfigError, DataError, MissingDataError

SIZES = {'train': 470, 'validation': 202, 'test': 75}
# The CSV flags that reproduce the built-in split of replication k (see jmed.data.ihdp).
USER_FLAGS = ['--treatment-column', 'treatment', '--label-column', 'y_factual',
              '--potential-outcome-columns', 'mu0,mu1', '--ignore-columns', 'y_cfactual',
              '--split', 'random', '--validation-fraction', '0.27', '--test-fraction', '0.1']


def _script(name):
  spec = importlib.util.spec_from_file_location(f'{name}_script', REPO / 'scripts' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def ihdp_dir(data_dir):
  if not (data_dir / 'ihdp' / 'ihdp_npci_1.csv').is_file():
    pytest.skip(f'no IHDP files under {data_dir}/ihdp')
  return data_dir


def _user_config(path, k, **changes):
  data = DataConfig(path=str(path), treatment_column='treatment', label_column='y_factual',
                    potential_outcome_columns='mu0,mu1', ignore_columns='y_cfactual',
                    split='random', split_seed=k, validation_fraction=0.27, test_fraction=0.1)
  return TrainConfig(data=dataclasses.replace(data, **changes))


def test_loader_shapes_splits_and_determinism(ihdp_dir):
  first = load_dataset('ihdp', str(ihdp_dir))
  again = load_dataset('ihdp_1', str(ihdp_dir))
  other = load_dataset('ihdp_2', str(ihdp_dir))
  assert first.task == 'treatment_effect' and first.num_classes == 2
  assert first.sizes == SIZES and first.input_shape == (25,)
  assert first.split_info['seed'] == 1 and other.split_info['seed'] == 2
  for split, (x, y) in first.splits.items():
    assert x.dtype == np.float32 and y.dtype == np.float32 and y.shape == (SIZES[split], 4)
    assert set(np.unique(y[:, 0])) == {0.0, 1.0} and np.isfinite(y).all()
    np.testing.assert_array_equal(x, again.splits[split][0])  # 'ihdp' is replication 1
    np.testing.assert_array_equal(y, again.splits[split][1])
  x_train = first.splits['train'][0]
  np.testing.assert_allclose(x_train.mean(0), 0, atol=1e-5)  # standardised on train
  # Replications differ in outcomes and (seeded by k) in the split; covariates are shared.
  assert not np.array_equal(first.splits['test'][1], other.splits['test'][1])
  raw = ihdp.read(ihdp_dir / 'ihdp' / 'ihdp_npci_1.csv')
  labels = first.splits['test'][1]
  np.testing.assert_allclose(labels, raw[splits.random(747, 1, ihdp.FRACTIONS)['test']]
                             [:, [0, 1, 3, 4]], rtol=1e-6)


def test_missing_and_corrupt_files_are_named(tmp_path, ihdp_dir):
  with pytest.raises(MissingDataError, match=r'ihdp_npci_3\.csv.*raw\.githubusercontent\.com/'
                     r'AMLab-Amsterdam/CEVAE/.*ihdp_npci_3\.csv'):
    load_dataset('ihdp_3', str(tmp_path))
  with pytest.raises(DataError, match='valid names'):
    load_dataset('ihdp_11', str(tmp_path))
  folder = tmp_path / 'ihdp'
  folder.mkdir()
  lines = (ihdp_dir / 'ihdp' / 'ihdp_npci_3.csv').read_text().splitlines()
  path = folder / 'ihdp_npci_3.csv'
  for row, change, message in (
      (5, lambda cells: cells[:7] + ['oops'] + cells[8:], r'row 5, column 8 \(x3\).*oops'),
      (9, lambda cells: ['2'] + cells[1:], r'row 9, column 1 \(treatment\).*0 or 1'),
      (2, lambda cells: cells[:-1], r'row 2: 29 fields, expected 30'),
      (1, lambda cells: cells + ['1'], r'row 1: 31 fields, expected 30')):
    broken = list(lines)
    broken[row - 1] = ','.join(change(broken[row - 1].split(',')))
    path.write_text('\n'.join(broken) + '\n')
    with pytest.raises(DataError, match=f'{path}.*{message}'):
      load_dataset('ihdp_3', str(tmp_path))


def test_user_table_flags_and_bad_cells(tmp_path, ihdp_dir):
  table = ihdp.table(ihdp_dir / 'ihdp' / 'ihdp_npci_1.csv')
  path = tmp_path / 'ihdp_1.csv'
  table.to_csv(path, index=False)
  dataset = user.load(_user_config(path, 1))  # the task is inferred from --treatment-column
  builtin = load_dataset('ihdp_1', str(ihdp_dir))
  assert dataset.task == 'treatment_effect' and dataset.sizes == SIZES
  assert dataset.preprocessing['columns']['features'] == [f'x{i}' for i in range(1, 26)]
  for split, (x, y) in builtin.splits.items():  # the same split, inputs and labels
    np.testing.assert_allclose(dataset.splits[split][0], x, atol=1e-6)
    np.testing.assert_array_equal(dataset.splits[split][1], y)
  # Without potential outcomes (real observational data) mu0 and mu1 are NaN.
  plain = user.load(_user_config(path, 1, potential_outcome_columns='',
                                 ignore_columns='y_cfactual,mu0,mu1'))
  assert np.isnan(plain.splits['test'][1][:, 2:]).all()
  with pytest.raises(ConfigError, match='label column'):  # treatment is never a covariate
    user.load(_user_config(path, 1, feature_columns='treatment,x1'))
  with pytest.raises(ConfigError, match='two columns'):
    user.load(_user_config(path, 1, potential_outcome_columns='mu0'))
  with pytest.raises(ConfigError, match='does not fit'):
    user.load(_user_config(path, 1, task='regression'))
  table['treatment'] = table['treatment'].astype(object)
  table.loc[6, 'treatment'] = 'yes'
  table.to_csv(path, index=False)
  with pytest.raises(DataError, match=r"row 7, column 'treatment'.*'yes'"):
    user.load(_user_config(path, 1))


def test_short_tarnet_run_on_user_table_beats_the_mean_effect(tmp_path, ihdp_dir, capsys):
  """Replication 4 as a CSV with a header, through scripts/train.py (the task inferred) and
  scripts/predict.py; its arrays equal the built-in loader's (previous test's check)."""
  k = 4
  path = tmp_path / 'ihdp_4.csv'
  ihdp.table(ihdp_dir / 'ihdp' / f'ihdp_npci_{k}.csv').to_csv(path, index=False)
  run = tmp_path / 'run'
  argv = ['--data', str(path), *USER_FLAGS, '--split-seed', str(k), '--model', 'tarnet',
          '--model-kwargs', '{"representation": [32, 32], "head": [16]}', '--optimizer', 'adam',
          '--learning-rate', '3e-3', '--batch-size', '16', '--epochs', '5',
          '--eval-batch-size', '256', '--output-dir', str(run), '--no-progress']
  assert _script('train').main(argv) == 0
  summary = json.loads((run / 'summary.json').read_text())
  assert summary['task'] == 'treatment_effect' and summary['best'] is not None
  builtin = load_dataset(f'ihdp_{k}', str(ihdp_dir))
  train, test = builtin.splits['train'][1], builtin.splits['test'][1]
  effect = test[:, 3] - test[:, 2]
  mean_effect = cmetrics.pehe(np.full(len(test), (train[:, 3] - train[:, 2]).mean()), effect)
  assert summary['test_pehe'] < 0.8 * mean_effect, (summary['test_pehe'], mean_effect)
  # predict.py on the whole file: the test rows' effects give the run's test sqrt(PEHE).
  output = tmp_path / 'predictions.csv'
  capsys.readouterr()
  assert _script('predict').main(['--run-dir', str(run), '--data', str(path), '--output',
                                  str(output)]) == 0
  with open(output) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 747 and {'predicted_y0', 'predicted_y1', 'predicted_effect'} <= set(rows[0])
  positions = splits.random(747, k, ihdp.FRACTIONS)['test']
  predicted = np.array([float(rows[i]['predicted_effect']) for i in positions])
  assert cmetrics.pehe(predicted, effect) == pytest.approx(summary['test_pehe'], abs=1e-3)
  printed = capsys.readouterr().out
  assert 'pehe' in json.loads(printed[printed.index('{'):])


def test_compare_effects_table_format():
  compare = _script('compare_effects')
  runs = [{'model': m, 'replication': k, 'seed': 0, 'pehe_in': v, 'pehe_out': v + 1,
           'ate_in': 0.1, 'ate_out': 0.2, 'seconds': 1.0}
          for m, v in (('tarnet', 1.0), ('tarnet', 3.0)) for k in (1,)] + [
              {'model': 'tarnet', 'replication': 2, 'seed': 0, 'pehe_in': 2.0,
               'pehe_out': 3.0, 'ate_in': 0.3, 'ate_out': 0.4, 'seconds': 1.0}]
  rows = compare.summarize(runs)
  # Replication 1's two runs average to 2.0, replication 2 is 2.0: mean 2.0, standard error 0.
  assert rows[0]['pehe_in'] == {'mean': 2.0, 'se': 0.0} and rows[0]['replications'] == 2
  table = compare.format_table(rows)
  assert '| TARNet (jmed), measured | 2.000 ± 0.000 | 3.000 ± 0.000 |' in table
  assert 'CFR-Wass (Shalit et al. 2017) | .71 ± .02 | .76 ± .02' in table
  assert dataclasses.is_dataclass(compare.configs.EFFECT_RECIPES['tarnet'])
