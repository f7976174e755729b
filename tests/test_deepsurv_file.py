"""The user source 'deepsurv': any HDF5 file in DeepSurv's layout (jmed.data.deepsurv)."""

import json
import os

import h5py
import numpy as np
import pytest

from jmed.configs import DataConfig, TrainConfig
from jmed.data import deepsurv, user
from jmed.data.datasets import load_dataset
from jmed.errors import ConfigError, DataError, MissingDataError


def _group(n, d=5, seed=0, labels=True):
  rng = np.random.default_rng(seed)
  group = {'x': (rng.normal(size=(n, d)) * [1, 2, 3, 4, 5][:d] + 10).astype(np.float32)}
  if labels:
    group['t'] = rng.uniform(0.1, 10, n).astype(np.float32)
    group['e'] = rng.integers(0, 2, n).astype(np.int32)
  return group


def _write(path, groups):
  with h5py.File(path, 'w') as f:
    for name, arrays in groups.items():
      for key, value in arrays.items():
        f.create_dataset(f'{name}/{key}', data=value)
  return str(path)


@pytest.fixture
def cohort(tmp_path):
  return _write(tmp_path / 'cohort.h5', {'train': _group(120), 'test': _group(40, seed=1)})


def test_any_file_trains_through_user_load(cohort, tmp_path):
  from jmed.train.loop import fit  # pylint: disable=g-import-not-at-top
  data = DataConfig(path=cohort, validation_fraction=0.25, split_seed=3)
  assert user.resolve_source(data) == 'deepsurv'
  dataset = user.load(TrainConfig(data=data))
  assert dataset.name == 'cohort' and dataset.task == 'survival'
  assert dataset.input_shape == (5,) and dataset.num_classes == 1
  assert dataset.sizes == {'train': 90, 'validation': 30, 'test': 40}
  assert dataset.split_info['rule'] == deepsurv.SPLIT_RULE
  assert dataset.split_info['seed'] == 3 and dataset.split_info['sizes']['test'] == 40
  np.testing.assert_allclose(dataset.splits['train'][0].mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(dataset.splits['train'][0].std(0), 1, atol=1e-4)
  assert dataset.preprocessing['source'] == 'deepsurv'
  assert len(dataset.preprocessing['mean']) == len(dataset.preprocessing['std']) == 5

  out = tmp_path / 'run'
  cfg = TrainConfig(model='mlp', data=data, epochs=1, batch_size=16, output_dir=str(out),
                    progress=False)
  summary = fit(cfg)
  assert 0.0 <= summary['test_c_index'] <= 1.0
  assert summary['split']['rule'] == deepsurv.SPLIT_RULE
  with open(out / 'preprocessing.json') as f:
    saved = json.load(f)
  assert saved['mean'] == dataset.preprocessing['mean']


def test_real_file_matches_builtin_loader(data_dir):
  path = deepsurv.path_of('metabric', str(data_dir))
  dataset = deepsurv.load_user(DataConfig(path=path, validation_fraction=0.2, split_seed=0))
  builtin = load_dataset('metabric', str(data_dir))
  assert dataset.name == 'metabric_IHC4_clinical_train_test'
  for split in deepsurv.SPLITS:
    for mine, theirs in zip(dataset.splits[split], builtin.splits[split]):
      assert mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes()


def test_featurize_round_trip(cohort, tmp_path):
  dataset = deepsurv.load_user(DataConfig(path=cohort, validation_fraction=0.25))
  preprocessing = json.loads(json.dumps(dataset.preprocessing))
  rows = user.featurize(cohort, TrainConfig(), preprocessing, str(tmp_path))
  assert rows.inputs.shape == (160, 5) and rows.labels.shape == (160, 2)
  assert rows.ids[:2] == ['train/0', 'train/1'] and rows.ids[120:122] == ['test/0', 'test/1']
  np.testing.assert_array_equal(rows.inputs[120:], dataset.splits['test'][0])
  np.testing.assert_array_equal(rows.labels[120:], dataset.splits['test'][1])
  # Train and validation are the train group's rows, in file order.
  _, valid = deepsurv._split(rows.labels[:120, 1].astype(np.int32), 0.25, 0, cohort)
  np.testing.assert_array_equal(rows.inputs[valid], dataset.splits['validation'][0])

  # New patients: a test group with covariates only -> no labels.
  new = _write(tmp_path / 'new.h5', {'test': _group(7, seed=4, labels=False)})
  rows = user.featurize(new, TrainConfig(), preprocessing, str(tmp_path))
  assert rows.inputs.shape == (7, 5) and rows.labels is None
  assert rows.ids == [f'test/{i}' for i in range(7)]
  mean, std = (np.asarray(preprocessing[k]) for k in ('mean', 'std'))
  np.testing.assert_allclose(rows.inputs, (_group(7, seed=4)['x'] - mean) / std, rtol=1e-6)

  wide = _write(tmp_path / 'wide.h5', {'test': _group(7, d=4)})
  with pytest.raises(DataError, match=r"wide\.h5, group 'test': 4 covariates, expected 5"):
    user.featurize(wide, TrainConfig(), preprocessing, str(tmp_path))
  empty = _write(tmp_path / 'other.h5', {'cohort': _group(7)})
  with pytest.raises(DataError, match=r"other\.h5: missing HDF5 group 'train'"):
    user.featurize(empty, TrainConfig(), preprocessing, str(tmp_path))
  with pytest.raises(MissingDataError):
    user.featurize(str(tmp_path / 'absent.h5'), TrainConfig(), preprocessing, str(tmp_path))


@pytest.mark.parametrize('group, change, message', [
    ('test', lambda g: g.pop('e'), 'missing dataset.*e'),
    ('train', lambda g: g['e'].__setitem__(5, 2), r'e must be 0 or 1; found \[2\]'),
    ('test', lambda g: g['t'].__setitem__(3, -1.0), 'negative times .*index 3'),
    ('train', lambda g: g['x'].__setitem__((8, 2), np.nan), 'non-finite .*index 8'),
])
def test_bad_files_name_file_and_group(tmp_path, group, change, message):
  groups = {'train': _group(60), 'test': _group(20, seed=1)}
  change(groups[group])
  path = _write(tmp_path / 'bad.h5', groups)
  with pytest.raises(DataError, match=message) as error:
    deepsurv.load_user(DataConfig(path=path))
  assert f"{path}, group '{group}'" in str(error.value)


def test_missing_group_and_flags_that_do_not_apply(tmp_path, cohort):
  path = _write(tmp_path / 'half.h5', {'train': _group(60)})
  with pytest.raises(DataError, match=r"half\.h5: missing HDF5 group 'test'"):
    deepsurv.load_user(DataConfig(path=path))
  with pytest.raises(ConfigError, match='label_column'):
    deepsurv.load_user(DataConfig(path=cohort, label_column='y'))
  with pytest.raises(ConfigError, match="task 'binary'"):
    deepsurv.load_user(DataConfig(path=cohort, task='binary'))
  with pytest.raises(ConfigError, match="split 'group'"):
    deepsurv.load_user(DataConfig(path=cohort, split='group'))
  assert deepsurv.load_user(DataConfig(path=cohort, task='survival')).task == 'survival'
  assert not os.path.exists(tmp_path / 'runs')
