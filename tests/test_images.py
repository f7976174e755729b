"""Tests of jmed.data.images: image folders, read lazily."""

import importlib.util
import os
import re

import numpy as np
import pytest

from jmed.configs import DataConfig, TrainConfig
from jmed.data import images
from jmed.data import pipeline
from jmed.errors import DataError

PER_CLASS = 15  # images per class of the PneumoniaMNIST folder
CLASSES = ('normal', 'pneumonia')


def _config(path, **overrides):
  values = dict(path=str(path), source='images' if os.path.isdir(path) else 'npz',
                validation_fraction=0.1, test_fraction=0.1)
  return DataConfig(**{**values, **overrides})


def _save(path, pixels):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels).save(path)


@pytest.fixture(scope='module')
def pneumonia(data_dir):
  """`PER_CLASS` training images of each class of PneumoniaMNIST: uint8 [30, 28, 28], labels."""
  with np.load(data_dir / 'medmnist' / 'pneumoniamnist.npz') as npz:
    pixels, labels = npz['train_images'], npz['train_labels'][:, 0]
  index = np.concatenate([np.flatnonzero(labels == c)[:PER_CLASS] for c in (0, 1)])
  return pixels[index], labels[index]


@pytest.fixture(scope='module')
def folder(tmp_path_factory, pneumonia):
  """<root>/pneu/<class>/<i>.png: the images of `pneumonia`, i its index there."""
  root = tmp_path_factory.mktemp('images') / 'pneu'
  for i, (pixels, label) in enumerate(zip(*pneumonia)):
    _save(root / CLASSES[label] / f'{i:03d}.png', pixels)
  return root


def _index(path):
  return int(os.path.splitext(os.path.basename(path))[0])


def test_class_folder_loads_labels_shapes_and_a_stratified_split(folder, pneumonia):
  dataset = images.load_user(_config(folder))
  assert (dataset.name, dataset.task, dataset.num_classes) == ('pneu', 'binary', 2)
  assert dataset.input_shape == (28, 28, 1)
  assert dataset.sizes == {'train': 24, 'validation': 3, 'test': 3}
  assert dataset.split_info['rule'] == 'stratified' and dataset.split_info['seed'] == 0
  assert dataset.preprocessing == {'source': 'images', 'classes': list(CLASSES),
                                   'task': 'binary', 'image_size': 0, 'channels': 1,
                                   'height': 28, 'width': 28}
  seen = []
  for split, (inputs, labels) in dataset.splits.items():
    assert isinstance(inputs, images.ImageFiles) and labels.dtype == np.int32
    assert set(labels) == {0, 1}, split  # both classes in every split
    index = [_index(f) for f in inputs.files]
    np.testing.assert_array_equal(labels, pneumonia[1][index])
    np.testing.assert_array_equal(inputs[np.arange(len(inputs))][..., 0],
                                  pneumonia[0][index] / np.float32(255))
    seen += index
  assert sorted(seen) == list(range(2 * PER_CLASS))
  # Deterministic: the same seed gives the same files; another seed another split.
  again = images.load_user(_config(folder))
  assert again.splits['test'][0].files == dataset.splits['test'][0].files
  other = images.load_user(_config(folder, split_seed=1))
  assert other.splits['train'][0].files != dataset.splits['train'][0].files


def test_lazy_array_decodes_only_the_requested_files(folder, monkeypatch):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  inputs, labels = images.load_user(_config(folder)).splits['train']
  assert (inputs.shape, inputs.dtype, inputs.ndim, len(inputs)) == ((24, 28, 28, 1),
                                                                     np.float32, 4, 24)
  opened = []
  real_open = Image.open
  monkeypatch.setattr(Image, 'open', lambda path, *a, **k: opened.append(path) or
                      real_open(path, *a, **k))
  batch = inputs[np.array([5, 2])]
  assert batch.shape == (2, 28, 28, 1) and batch.dtype == np.float32
  assert opened == [inputs.files[5], inputs.files[2]]
  assert inputs[:1].shape == (1, 28, 28, 1) and len(opened) == 3
  opened.clear()
  first = next(pipeline.train_batches(inputs, labels, 4, seed=0, epoch=0))
  assert first['inputs'].shape == (4, 28, 28, 1) and len(opened) == 4


def test_split_folders_give_the_split(tmp_path, pneumonia):
  root = tmp_path / 'xray'
  for i, (pixels, label) in enumerate(zip(*pneumonia)):
    split = ('train', 'val', 'test')[i % 3]
    _save(root / split / CLASSES[label] / f'{i:03d}.png', pixels)
  dataset = images.load_user(_config(root))
  assert dataset.sizes == {'train': 10, 'validation': 10, 'test': 10}
  info = dataset.split_info
  assert info['rule'] == 'folders' and info['folders'] == {
      'train': 'train', 'validation': 'val', 'test': 'test'}
  for split, (inputs, labels) in dataset.splits.items():
    np.testing.assert_array_equal(labels, pneumonia[1][[_index(f) for f in inputs.files]])
    assert all(f'{os.sep}{("train", "val", "test")[_index(f) % 3]}{os.sep}' in f
               for f in inputs.files), split
  extra = root / 'test' / 'covid' / 'x.png'
  _save(extra, pneumonia[0][0])
  with pytest.raises(DataError, match=re.escape(str(extra.parent)) + ".*'covid'.*training"):
    images.load_user(_config(root))


def test_resize_and_channels(folder, pneumonia, tmp_path):
  dataset = images.load_user(_config(folder, image_size=14, channels=3))
  assert dataset.input_shape == (14, 14, 3)
  inputs = dataset.splits['test'][0]
  batch = inputs[np.arange(len(inputs))]
  grey = pneumonia[0][_index(inputs.files[0])] / np.float32(255)
  np.testing.assert_allclose(batch[0, ..., 0], images.resize_image(grey[..., None], 14, 14)[..., 0])
  np.testing.assert_array_equal(batch[..., 0], batch[..., 2])  # grey repeated
  # RGB images: 3 channels by default, luminance when asked for 1; mixed sizes resized.
  rng = np.random.default_rng(0)
  for i, size in enumerate((10, 12, 10, 9)):
    _save(tmp_path / 'rgb' / 'ab'[i % 2] / f'{i}.png',
          rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
  for _ in range(3):  # enough images for a 3-way split
    for c in 'ab':
      _save(tmp_path / 'rgb' / c / f'z{_}.png', rng.integers(0, 256, (9, 9, 3), dtype=np.uint8))
  colour = images.load_user(_config(tmp_path / 'rgb', image_size=8, test_fraction=0.3,
                                    validation_fraction=0.3))
  assert colour.input_shape == (8, 8, 3)
  grey = images.load_user(_config(tmp_path / 'rgb', image_size=8, channels=1,
                                  test_fraction=0.3, validation_fraction=0.3))
  x3, x1 = colour.splits['train'][0][:2], grey.splits['train'][0][:2]
  np.testing.assert_allclose(x1[..., 0], x3 @ np.array([0.299, 0.587, 0.114]), atol=1e-5)


def test_folder_featurize_round_trip(folder, pneumonia, tmp_path):
  dataset = images.load_user(_config(folder, image_size=20))
  rows = images.featurize(str(folder), _config(folder), dataset.preprocessing, str(tmp_path))
  inputs, labels = dataset.splits['train']
  where = [rows.ids.index(os.path.relpath(f, folder)) for f in inputs.files]
  np.testing.assert_array_equal(rows.inputs[np.array(where)], inputs[:])
  np.testing.assert_array_equal(rows.labels[where], labels)
  flat = images.featurize(str(folder / 'pneumonia'), _config(folder), dataset.preprocessing,
                          str(tmp_path))
  assert flat.labels is None and flat.ids == sorted(os.listdir(folder / 'pneumonia'))
  one = folder / 'normal' / '000.png'
  single = images.featurize(str(one), _config(folder), dataset.preprocessing, str(tmp_path))
  assert single.ids == ['000.png'] and single.inputs.shape == (1, 20, 20, 1)
  unseen = tmp_path / 'new'
  _save(unseen / 'covid' / 'a.png', pneumonia[0][0])
  with pytest.raises(DataError, match=re.escape(str(unseen / 'covid')) + '.*not a training'):
    images.featurize(str(unseen), _config(folder), dataset.preprocessing, str(tmp_path))


# ---------------------------------------------------------------- bad inputs: one DataError each


@pytest.mark.parametrize('case, message', [('corrupt', 'unreadable image'),
                                           ('other size', '20x20.*--image-size')])
def test_bad_image_is_named_when_its_batch_is_read(tmp_path, pneumonia, case, message):
  root = tmp_path / 'split'
  pixels = pneumonia[0][0]
  for split, count in (('train', 35), ('validation', 2), ('test', 2)):
    for c in 'ab':
      for i in range(count):
        _save(root / split / c / f'{i:02d}.png', pixels)
  bad = root / 'train' / 'b' / '34.png'  # last of train: beyond the load-time checks
  if case == 'corrupt':
    bad.write_bytes(b'\x89PNG\r\n\x1a\n' + b'corrupt' * 10)
  else:
    _save(bad, pixels[:20, :20])
  inputs, labels = images.load_user(_config(root)).splits['train']
  with pytest.raises(DataError, match=re.escape(str(bad)) + '.*' + message):
    list(pipeline.eval_batches(inputs, labels, 16))


def _class_dirs(root, pixels, sizes=None):
  for c in 'ab':
    for i in range(5):
      size = (sizes or {}).get((c, i))
      _save(root / c / f'{i}.png', pixels[:size, :size] if size else pixels)


@pytest.mark.parametrize('case', ['empty folder', 'empty class', 'not an image', 'no pydicom',
                                  'mismatched size'])
def test_bad_folders_name_the_file(tmp_path, pneumonia, case):
  root = tmp_path / 'imgs'
  root.mkdir()
  culprit = root
  if case != 'empty folder':
    _class_dirs(root, pneumonia[0][0], {('b', 0): 20} if case == 'mismatched size' else None)
  if case == 'empty class':
    culprit = root / 'c'
    culprit.mkdir()
  elif case == 'not an image':
    culprit = root / 'a' / 'notes.txt'
    culprit.write_text('hello')
    (root / 'a' / '.DS_Store').write_text('hidden: ignored')
  elif case == 'no pydicom':
    if importlib.util.find_spec('pydicom') is not None:
      pytest.skip('pydicom is installed')
    culprit = root / 'a' / 'scan.dcm'
    culprit.write_bytes(b'DICM')
  elif case == 'mismatched size':
    culprit = root / 'b' / '0.png'
  message = {'empty folder': 'no class subfolders', 'empty class': 'holds no images',
             'not an image': 'not an image', 'no pydicom': 'pydicom',
             'mismatched size': '20x20.*--image-size'}[case]
  with pytest.raises(DataError, match=re.escape(str(culprit)) + '.*' + message):
    images.load_user(_config(root))
  if case == 'mismatched size':  # resizing fixes it
    assert images.load_user(_config(root, image_size=16)).input_shape == (16, 16, 1)


def test_user_load_reads_folders_and_npz_here(folder, data_dir):
  from jmed.data import user  # pylint: disable=g-import-not-at-top
  npz = data_dir / 'medmnist' / 'pneumoniamnist.npz'
  for path, source in ((folder, 'images'), (npz, 'npz')):
    dataset = user.load(TrainConfig(data=_config(path, source='auto')))
    assert dataset.preprocessing['source'] == source
