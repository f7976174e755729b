"""Tests of jmed.data.npz: MedMNIST-format npz files by path, 2D and 3D."""

import re

import numpy as np
import pytest

from jmed.configs import DataConfig
from jmed.data import npz
from jmed.errors import ConfigError, DataError


def _config(path, **overrides):
  values = dict(path=str(path), source='npz', validation_fraction=0.1, test_fraction=0.1)
  return DataConfig(**{**values, **overrides})


def test_npz_by_path_2d(data_dir):
  path = data_dir / 'medmnist' / 'pneumoniamnist.npz'
  dataset = npz.load_user(_config(path))
  assert (dataset.name, dataset.task, dataset.num_classes) == ('pneumoniamnist', 'binary', 2)
  assert dataset.input_shape == (28, 28, 1)
  assert dataset.sizes == {'train': 4_708, 'validation': 524, 'test': 624}
  assert dataset.split_info['rule'] == 'npz'
  with np.load(path) as saved:
    np.testing.assert_array_equal(dataset.splits['test'][0][..., 0],
                                  saved['test_images'] / np.float32(255))
    np.testing.assert_array_equal(dataset.splits['validation'][1], saved['val_labels'][:, 0])
  forced = npz.load_user(_config(path, task='multiclass', image_size=16, channels=3))
  assert (forced.task, forced.input_shape) == ('multiclass', (16, 16, 3))
  with pytest.raises(ConfigError, match='regression'):
    npz.load_user(_config(path, task='regression'))


def test_npz_by_path_3d(data_dir):
  path = data_dir / 'medmnist3d' / 'adrenalmnist3d.npz'
  if not path.is_file():
    pytest.skip(f'{path} not found')
  dataset = npz.load_user(_config(path))
  assert dataset.input_shape == (28, 28, 28, 1)
  assert (dataset.name, dataset.task, dataset.num_classes) == ('adrenalmnist3d', 'binary', 2)
  assert dataset.sizes == {'train': 1_188, 'validation': 98, 'test': 298}
  inputs = dataset.splits['train'][0]
  assert inputs.dtype == np.float32 and 0 <= inputs.min() and inputs.max() <= 1
  rows = npz.featurize(str(path), _config(path), dataset.preprocessing, '')
  assert rows.inputs.shape == (1_584, 28, 28, 28, 1) and rows.ids[-1] == 'test/297'
  np.testing.assert_array_equal(rows.inputs[-298:], dataset.splits['test'][0])
  np.testing.assert_array_equal(rows.labels[:1_188], dataset.splits['train'][1])
  with pytest.raises(ConfigError, match='image_size'):  # volumes are not resized
    npz.load_user(_config(path, image_size=16))


def _npz(path, n=(6, 3, 3), shape=(8, 8), labels=None, drop=()):
  rng = np.random.default_rng(0)
  arrays = {}
  for prefix, size in zip(('train', 'val', 'test'), n):
    arrays[f'{prefix}_images'] = rng.integers(0, 256, (size, *shape), dtype=np.uint8)
    arrays[f'{prefix}_labels'] = (np.arange(size)[:, None] % 3 if labels is None
                                  else labels(size))
  np.savez(path, **{k: v for k, v in arrays.items() if k not in drop})
  return path


def test_npz_multilabel_and_featurize_round_trip(tmp_path):
  multi_hot = lambda n: np.eye(4, dtype=np.uint8)[np.arange(n) % 4][:, :3]  # row 4: none
  path = _npz(tmp_path / 'multi.npz', labels=multi_hot)
  dataset = npz.load_user(_config(path, image_size=6, channels=3))
  assert (dataset.task, dataset.num_classes, dataset.input_shape) == ('multilabel', 3, (6, 6, 3))
  assert dataset.preprocessing['image_size'] == 6
  rows = npz.featurize(str(path), _config(path), dataset.preprocessing, str(tmp_path))
  assert rows.ids[:2] == ['train/0', 'train/1'] and rows.ids[-1] == 'test/2'
  np.testing.assert_array_equal(rows.inputs[:6], dataset.splits['train'][0])
  np.testing.assert_array_equal(rows.labels[-3:], dataset.splits['test'][1])
  only_test = tmp_path / 'new.npz'
  with np.load(path) as saved:
    np.savez(only_test, test_images=saved['test_images'])
  rows = npz.featurize(str(only_test), _config(path), dataset.preprocessing, str(tmp_path))
  assert rows.labels is None and rows.ids == ['test/0', 'test/1', 'test/2']
  np.testing.assert_array_equal(rows.inputs, dataset.splits['test'][0])
  three = _npz(tmp_path / 'three.npz')  # class ids 0..2
  assert npz.load_user(_config(three)).task == 'multiclass'
  with pytest.raises(ConfigError, match="'binary'"):
    npz.load_user(_config(three, task='binary'))


@pytest.mark.parametrize('case, message', [
    ('missing keys', 'lacks arrays val_labels'),
    ('truncated', 'corrupt npz'),
    ('negative label', r'train_labels row 2 .*range'),
    ('unknown class', r'test_labels hold class 7.*train_labels \(0..2\)'),
    ('bad multi-hot', r'val_labels row 1 .*range'),
    ('float pixels > 1', 'outside \\[0, 1\\]'),
])
def test_bad_npz_names_the_file(tmp_path, case, message):
  path = tmp_path / 'data.npz'
  if case == 'missing keys':
    _npz(path, drop=('val_labels',))
  elif case == 'truncated':
    raw = _npz(path).read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
  elif case == 'negative label':
    _npz(path, labels=lambda n: np.array([0, -1, 1, 2, 0, 1][:n]))
  elif case == 'unknown class':  # train and val hold classes 0..2, test also 7
    _npz(path, labels=lambda n: np.array([7, 0, 1]) if n == 3 else np.arange(n) % 3)
    with np.load(path) as saved:
      arrays = dict(saved)
    arrays['val_labels'] = np.array([0, 1, 2])
    np.savez(path, **arrays)
  elif case == 'bad multi-hot':
    _npz(path, labels=lambda n: np.full((n, 3), 2 if n == 3 else 1))
  elif case == 'float pixels > 1':
    _npz(path)
    with np.load(path) as saved:
      arrays = dict(saved)
    arrays['train_images'] = arrays['train_images'].astype(np.float32)
    np.savez(path, **arrays)
  with pytest.raises(DataError, match=re.escape(str(path)) + '.*' + message):
    npz.load_user(_config(path))
