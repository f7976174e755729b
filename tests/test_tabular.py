"""The user source 'table': CSV / Parquet / JSON Lines features and labels (jmed.data.tabular)."""

import dataclasses
import json
import logging

import numpy as np
import pandas as pd
import pytest

from jmed.configs import DataConfig, TrainConfig
from jmed.data import deepsurv, splits, tabular, user
from jmed.data.datasets import load_dataset
from jmed.errors import ConfigError, DataError, MissingDataError

# 20 rows: 14 train, 3 validation, 3 test (by the split column). age has gaps in train rows 3
# and 9; sex has a gap in train row 5 and a category only the test rows have ('x'); bp has a
# gap only in a test row.
AGE = ['50', '61.5', '', '47', '70', '38', '55', '66', '', '59', '42', '73', '49', '64',
       '58', '45', '71', '52', '60', '39']
SEX = ['f', 'm', 'm', 'f', '', 'f', 'm', 'f', 'm', 'f', 'm', 'f', 'm', 'f',
       'm', 'f', 'm', 'x', 'f', 'm']
BP = [str(110 + 3 * i) for i in range(19)] + ['']
OUTCOME = ['yes', 'no'] * 10
SPLIT = ['train'] * 14 + ['val', 'validation', 'valid'] + ['test'] * 3


def _write_csv(path, columns: dict):
  pd.DataFrame(columns).to_csv(path, index=False)
  return str(path)


@pytest.fixture
def table(tmp_path):
  return _write_csv(tmp_path / 'cohort.csv', {'age': AGE, 'sex': SEX, 'bp': BP,
                                               'outcome': OUTCOME, 'split': SPLIT})


def _load(path, **fields):
  return tabular.load_user(DataConfig(path=str(path), **fields))


def test_train_statistics_one_hot_and_imputation(table, caplog):
  with caplog.at_level(logging.WARNING):
    dataset = _load(table, label_column='outcome')
  assert dataset.name == 'cohort' and dataset.task == 'binary' and dataset.num_classes == 2
  assert dataset.sizes == {'train': 14, 'validation': 3, 'test': 3}
  assert dataset.split_info['rule'] == 'column' and dataset.split_info['column'] == 'split'
  names = ['age', 'age_missing', 'sex=f', 'sex=m', 'sex=(missing)', 'bp']
  assert dataset.preprocessing['features'] == names and dataset.input_shape == (6,)
  assert dataset.preprocessing['source'] == 'table'
  assert dataset.preprocessing['labels']['classes'] == ['no', 'yes']

  ages = np.array([float(a) if a else np.nan for a in AGE])
  mean, std = np.nanmean(ages[:14]), np.nanstd(ages[:14])  # the training rows only
  bp = np.array([float(b) if b else np.nan for b in BP])
  bp_mean, bp_std = bp[:14].mean(), bp[:14].std()
  x_train, y_train = dataset.splits['train']
  assert x_train.dtype == np.float32
  np.testing.assert_allclose(x_train[:, 0], np.nan_to_num((ages[:14] - mean) / std), atol=1e-6)
  np.testing.assert_array_equal(x_train[:, 1], np.isnan(ages[:14]))
  np.testing.assert_array_equal(x_train[:, 2:5].sum(1), 1)
  np.testing.assert_array_equal(x_train[4, 2:5], [0, 0, 1])  # the gap in sex
  np.testing.assert_array_equal(y_train, [1, 0] * 7)
  x_test = dataset.splits['test'][0]
  np.testing.assert_allclose(x_test[:, 0], (ages[17:] - mean) / std, atol=1e-6)
  np.testing.assert_array_equal(x_test[0, 2:5], [0, 0, 0])  # 'x' was never seen in training
  np.testing.assert_allclose(x_test[:2, 5], (bp[17:19] - bp_mean) / bp_std, atol=1e-6)
  assert x_test[2, 5] == 0  # imputed with the train mean; bp had no gap in train: no indicator
  assert "column 'sex': 1 row(s) have categories the training rows lack ('x')" in caplog.text


def test_refuse_names_the_first_gap(table):
  with pytest.raises(DataError, match=r"cohort\.csv, row 3, column 'age': the value is "
                     'missing'):
    _load(table, label_column='outcome', missing='refuse')
  with pytest.raises(ConfigError, match='missing'):
    _load(table, label_column='outcome', missing='drop')


@pytest.mark.parametrize('labels, fields, task, shape', [
    ({'y': ['a', 'b'] * 15}, {'label_column': 'y'}, 'binary', (30,)),
    ({'y': ['a', 'b', 'c'] * 10}, {'label_column': 'y'}, 'multiclass', (30,)),
    ({'y': [f'{0.37 * i:.2f}' for i in range(30)]}, {'label_column': 'y'}, 'regression',
     (30, 1)),
    ({'t': [str(i + 1) for i in range(30)], 'e': ['1', '0', '1'] * 10},
     {'time_column': 't', 'event_column': 'e'}, 'survival', (30, 2)),
    ({'a': ['1', '0', ''] * 10, 'b': ['0', '1', '1'] * 10}, {'label_column': 'a, b'},
     'multilabel', (30, 2)),
])
def test_task_inference(tmp_path, labels, fields, task, shape):
  rng = np.random.default_rng(0)
  path = _write_csv(tmp_path / 'data.csv', {'f1': rng.normal(size=30), **labels,
                                            'f2': rng.normal(size=30)})
  dataset = _load(path, split='random', **fields)
  assert dataset.task == task
  assert dataset.preprocessing['features'] == ['f1', 'f2']
  assert sum(len(y) for _, y in dataset.splits.values()) == shape[0]
  assert dataset.splits['train'][1].shape[1:] == shape[1:]


def test_parquet_and_jsonl_read_as_csv(tmp_path, table):
  csv = _load(table, label_column='outcome')
  numbers = lambda cells: [float(c) if c else None for c in cells]
  frame = pd.DataFrame({'age': numbers(AGE), 'sex': [s or None for s in SEX],
                        'bp': numbers(BP), 'outcome': OUTCOME, 'split': SPLIT})
  frame.to_parquet(tmp_path / 'cohort.parquet')
  frame.to_json(tmp_path / 'cohort.jsonl', orient='records', lines=True)
  for suffix in ('parquet', 'jsonl'):
    other = _load(tmp_path / f'cohort.{suffix}', label_column='outcome')
    assert other.name == 'cohort'
    assert other.preprocessing['features'] == csv.preprocessing['features']
    for split in splits.SPLITS:
      np.testing.assert_allclose(other.splits[split][0], csv.splits[split][0], atol=1e-6)
      np.testing.assert_array_equal(other.splits[split][1], csv.splits[split][1])


def test_group_and_stratified_splits(tmp_path):
  rng = np.random.default_rng(1)
  n = 200
  columns = {'patient': [f'p{i // 4}' for i in range(n)], 'f': rng.normal(size=n),
             'y': np.where(rng.random(n) < 0.3, 'pos', 'neg')}
  path = _write_csv(tmp_path / 'visits.csv', columns)
  grouped = _load(path, label_column='y', group_column='patient')
  assert grouped.split_info['rule'] == 'group'
  assert grouped.preprocessing['features'] == ['f']  # the group column is no feature
  positions, _ = splits.assign(pd.read_csv(path, dtype=str), path,
                               DataConfig(group_column='patient'))
  patients = [set(np.asarray(columns['patient'])[positions[s]]) for s in splits.SPLITS]
  assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
  np.testing.assert_array_equal(grouped.splits['test'][0][:, 0],
                                tabular.fit(pd.read_csv(path, dtype=str).iloc[
                                    positions['train']], path, ['f']).transform(
                                        pd.read_csv(path, dtype=str).iloc[positions['test']],
                                        path)[:, 0])

  first = _load(path, label_column='y')
  assert first.split_info['rule'] == 'stratified' and first.split_info['seed'] == 0
  again = _load(path, label_column='y')
  other = _load(path, label_column='y', split_seed=1)
  np.testing.assert_array_equal(first.splits['test'][0], again.splits['test'][0])
  assert not np.array_equal(first.splits['test'][0], other.splits['test'][0])
  rates = [first.splits[s][1].mean() for s in splits.SPLITS]
  assert max(rates) - min(rates) < 0.05

  named = _write_csv(tmp_path / 'named.csv', {**columns, 'fold': ['train'] * 160 + ['dev'] * 20
                                              + ['test'] * 20})
  by_column = _load(named, label_column='y', split_column='fold')
  assert by_column.sizes == {'train': 160, 'validation': 20, 'test': 20}
  assert 'fold' not in by_column.preprocessing['features']


def test_featurize_test_rows_equals_training_inputs(tmp_path, table):
  dataset = _load(table, label_column='outcome')
  preprocessing = json.loads(json.dumps(dataset.preprocessing))
  frame = pd.read_csv(table, dtype=str, keep_default_na=False)
  new = tmp_path / 'new.csv'
  frame[frame['split'] == 'test'].drop(columns='split').to_csv(new, index=False)
  cfg = TrainConfig(data=DataConfig(path=table, label_column='outcome'))
  rows = user.featurize(str(new), cfg, preprocessing, str(tmp_path))
  np.testing.assert_array_equal(rows.inputs, dataset.splits['test'][0])
  np.testing.assert_array_equal(rows.labels, dataset.splits['test'][1])
  assert rows.ids == ['row 1', 'row 2', 'row 3']

  unlabelled = tmp_path / 'unlabelled.csv'
  frame[['bp', 'sex', 'age']].iloc[:2].to_csv(unlabelled, index=False)  # order may differ
  rows = user.featurize(str(unlabelled), cfg, preprocessing, str(tmp_path))
  assert rows.labels is None
  np.testing.assert_array_equal(rows.inputs, dataset.splits['train'][0][:2])

  lacking = tmp_path / 'lacking.csv'
  frame[['age', 'outcome']].to_csv(lacking, index=False)
  with pytest.raises(DataError, match=r"lacking\.csv: no feature column 'sex', 'bp'"):
    user.featurize(str(lacking), cfg, preprocessing, str(tmp_path))


def _bad(tmp_path, changes: dict, name='bad.csv', **fields):
  """Loads the cohort with `changes` (column -> {0-based data row: cell}) applied."""
  columns = {'age': list(AGE), 'sex': list(SEX), 'bp': list(BP), 'outcome': list(OUTCOME),
             'split': list(SPLIT), 't': [str(5 + i) for i in range(20)], 'e': ['1', '0'] * 10}
  for column, cells in changes.items():
    for row, cell in cells.items():
      columns[column][row] = cell
  path = _write_csv(tmp_path / name, columns)
  with pytest.raises((DataError, ConfigError)) as error:
    _load(path, **({'label_column': 'outcome', 'ignore_columns': 't, e'} | fields))
  return str(error.value)


def test_bad_cells_name_file_row_and_column(tmp_path):
  path = str(tmp_path / 'bad.csv')
  assert _bad(tmp_path, {'age': {6: 'abc'}}).startswith(
      f"{path}, row 7, column 'age': 'abc' is not a number")
  assert _bad(tmp_path, {'bp': {15: 'inf'}}).startswith(
      f"{path}, row 16, column 'bp': 'inf' is not finite")
  survival = {'label_column': '', 'ignore_columns': 'outcome', 'time_column': 't',
              'event_column': 'e'}
  assert _bad(tmp_path, {'t': {4: '-2'}}, **survival).startswith(
      f"{path}, row 5, column 't': time -2.0 is negative")
  assert _bad(tmp_path, {'e': {11: '2'}}, **survival).startswith(
      f"{path}, row 12, column 'e': event '2' is not 1")
  assert _bad(tmp_path, {'outcome': {18: 'maybe'}}, task='binary').startswith(
      f"{path}, row 19, column 'outcome': class 'maybe' is not among the training classes")
  message = _bad(tmp_path, {}, label_column='Outcome')
  assert path in message and "'Outcome'" in message and '--label-column' in message
  message = _bad(tmp_path, {}, feature_columns='age, weight')
  assert path in message and "'weight'" in message and '--feature-columns' in message
  assert 'split' in _bad(tmp_path, {'split': {3: 'holdout'}})


def test_text_and_boolean_columns(tmp_path):
  n = 30
  grades = ['1', '2', 'III', 'IV', 'unknown'] * (n // 5)
  path = _write_csv(tmp_path / 'g.csv', {'grade': grades, 'flag': ['true', 'False'] * (n // 2),
                                         'y': ['a', 'b'] * (n // 2)})
  dataset = _load(path, label_column='y', split='random')
  assert dataset.preprocessing['features'] == [
      'grade=1', 'grade=2', 'grade=III', 'grade=IV', 'grade=unknown', 'flag']
  x, _ = dataset.splits['train']
  assert len(np.unique(x[:, 5])) == 2  # true/false: 1/0, standardised
  np.testing.assert_allclose(x[:, 5].mean(), 0, atol=1e-6)


def test_empty_and_header_only_files(tmp_path):
  empty = tmp_path / 'empty.csv'
  empty.write_text('')
  with pytest.raises(DataError, match=r'empty\.csv: the file is empty'):
    _load(empty, label_column='y')
  header = tmp_path / 'header.csv'
  header.write_text('a,b,y\n')
  with pytest.raises(DataError, match=r'header\.csv: the file has a header but no data rows'):
    _load(header, label_column='y')
  with pytest.raises(MissingDataError):
    _load(tmp_path / 'absent.csv', label_column='y')


def test_na_text_is_missing(tmp_path):
  path = _write_csv(tmp_path / 'na.csv', {'age': ['1', 'NA', '3', 'nan'] * 5,
                                          'y': ['0', '1'] * 10, 'split': SPLIT})
  dataset = _load(path, label_column='y')
  assert dataset.preprocessing['features'] == ['age', 'age_missing']
  np.testing.assert_array_equal(dataset.splits['train'][0][:4, 1], [0, 1, 0, 1])


# ---------------------------------------------------------------- METABRIC as a CSV


def _metabric_csv(data_dir, path):
  """METABRIC's file as a CSV: months, died, x0..x8 and a split column reproducing the
  built-in split (validation carved from the train group, the test group as test)."""
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(deepsurv.path_of('metabric', str(data_dir)), 'r') as f:
    groups = {g: {k: f[g][k][()] for k in 'xte'} for g in ('train', 'test')}
  _, valid = deepsurv._split(groups['train']['e'], 0.2, 0, str(path))
  split = np.where(np.isin(np.arange(len(groups['train']['e'])), valid), 'validation', 'train')
  frames = []
  for group, names in (('train', split), ('test', ['test'] * len(groups['test']['e']))):
    arrays = groups[group]
    frame = pd.DataFrame(arrays['x'].astype(np.float64), columns=[f'x{i}' for i in range(9)])
    frame.insert(0, 'died', arrays['e'].astype(int))
    frame.insert(0, 'months', arrays['t'].astype(np.float64))
    frame['split'] = names
    frames.append(frame)
  pd.concat(frames).to_csv(path, index=False)
  return str(path)


def test_metabric_csv_trains_as_the_builtin_dataset(data_dir, tmp_path):
  from jmed.train.loop import fit  # pylint: disable=g-import-not-at-top
  csv = _metabric_csv(data_dir, tmp_path / 'metabric.csv')
  data = DataConfig(path=csv, time_column='months', event_column='died')
  mine = user.load(TrainConfig(data=data))
  builtin = load_dataset('metabric', str(data_dir))
  assert mine.task == builtin.task and mine.input_shape == builtin.input_shape
  for split in splits.SPLITS:
    np.testing.assert_allclose(mine.splits[split][0], builtin.splits[split][0], atol=1e-5)
    np.testing.assert_array_equal(mine.splits[split][1], builtin.splits[split][1])

  cfg = TrainConfig(model='mlp', dataset='metabric', data_dir=str(data_dir), epochs=1,
                    batch_size=64, progress=False, output_dir=str(tmp_path / 'builtin'))
  reference = fit(cfg)
  summary = fit(dataclasses.replace(cfg, data=data, output_dir=str(tmp_path / 'csv')))
  assert summary['dataset'] == 'metabric' and summary['split']['rule'] == 'column'
  assert abs(summary['test_c_index'] - reference['test_c_index']) < 1e-3
  with open(tmp_path / 'csv' / 'preprocessing.json') as f:
    assert json.load(f)['features'] == ['x0', 'x1', 'x2', 'x3', 'x4', 'x5', 'x6', 'x7', 'x8']
