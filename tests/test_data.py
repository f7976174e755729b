"""Tests of jmed.data on the real files in ../shared/data (or $JMED_DATA_DIR)."""

import dataclasses
import gzip
import pathlib
import re
import shutil
import threading

import numpy as np
import pytest

from conftest import real_data_dir, run_without_tensorflow
from jmed import data
from jmed.data import datasets
from jmed.data import medmnist
from jmed.data import mnist

DATA_DIR = real_data_dir()
T10K_IMAGES = DATA_DIR / 'mnist' / 't10k-images-idx3-ubyte.gz'
T10K_LABELS = DATA_DIR / 'mnist' / 't10k-labels-idx1-ubyte.gz'
PNEUMONIA_NPZ = DATA_DIR / 'medmnist' / 'pneumoniamnist.npz'

needs_mnist = pytest.mark.skipif(
    not (T10K_IMAGES.is_file() and T10K_LABELS.is_file()),
    reason=f'real MNIST idx files not found in {DATA_DIR / "mnist"} '
    '(set JMED_DATA_DIR to the shared data root).')
needs_pneumonia = pytest.mark.skipif(
    not PNEUMONIA_NPZ.is_file(),
    reason=f'{PNEUMONIA_NPZ} not found (set JMED_DATA_DIR to the shared data '
    'root).')


@pytest.fixture(scope='module')
def mnist_ds():
  return data.load_dataset('mnist', data_dir=DATA_DIR)


@pytest.fixture(scope='module')
def pneumonia(tmp_path_factory):
  tfds_dir = tmp_path_factory.mktemp('tfds')
  return data.load_dataset('pneumoniamnist', data_dir=DATA_DIR,
                           tfds_dir=tfds_dir), tfds_dir


# --- MNIST -------------------------------------------------------------------


@needs_mnist
def test_mnist_offline_protocol(mnist_ds):
  assert mnist_ds.sizes == {'train': 8_000, 'test': 2_000}
  assert (mnist_ds.num_classes, mnist_ds.task) == (10, 'multiclass')
  assert mnist_ds.input_shape == (28, 28, 1)
  raw_labels = mnist.read_idx(T10K_LABELS, ndim=1)
  for split, (images, labels) in mnist_ds.splits.items():
    assert images.dtype == np.float32 and images.shape[1:] == (28, 28, 1)
    assert images.min() == 0.0 and images.max() == 1.0
    assert labels.dtype == np.int32
    assert set(np.unique(labels)) == set(range(10)), split
  # 'train' is the first 8,000 of the official test set, 'test' the last 2,000.
  np.testing.assert_array_equal(mnist_ds.splits['train'][1], raw_labels[:8000])
  np.testing.assert_array_equal(mnist_ds.splits['test'][1], raw_labels[8000:])


@needs_mnist
def test_data_dir_defaults_to_env_var(monkeypatch):
  monkeypatch.setenv('JMED_DATA_DIR', str(DATA_DIR))
  assert data.load_dataset('mnist').sizes == {'train': 8_000, 'test': 2_000}


@needs_mnist
def test_missing_mnist_file_names_path(tmp_path):
  (tmp_path / 'mnist').mkdir()
  shutil.copy(T10K_LABELS, tmp_path / 'mnist')
  with pytest.raises(data.MissingDataError) as error:
    data.load_dataset('mnist', data_dir=tmp_path)
  assert isinstance(error.value, FileNotFoundError)
  assert str(tmp_path / 'mnist' / T10K_IMAGES.name) in str(error.value)


def _truncated_gzip(raw: bytes) -> bytes:
  return raw[:len(raw) // 2]


def _not_gzip(raw: bytes) -> bytes:
  return gzip.decompress(raw)


def _bad_magic(raw: bytes) -> bytes:
  payload = gzip.decompress(raw)
  return gzip.compress(b'\x00\x00\x08\x01' + payload[4:], compresslevel=1)


def _short_payload(raw: bytes) -> bytes:
  return gzip.compress(gzip.decompress(raw)[:-100], compresslevel=1)


@needs_mnist
@pytest.mark.parametrize('corrupt, message', [
    (_truncated_gzip, 'Corrupt gzip'),
    (_not_gzip, 'Corrupt gzip'),
    (_bad_magic, 'magic'),
    (_short_payload, 'header declares'),
])
def test_corrupt_mnist_file_names_path(tmp_path, corrupt, message):
  folder = tmp_path / 'mnist'
  folder.mkdir()
  shutil.copy(T10K_LABELS, folder)
  bad = folder / T10K_IMAGES.name
  bad.write_bytes(corrupt(T10K_IMAGES.read_bytes()))
  with pytest.raises(data.DataError, match=message) as error:
    data.load_dataset('mnist', data_dir=tmp_path)
  assert str(bad) in str(error.value)


@needs_mnist
def test_one_train_file_without_its_companion_is_an_error(tmp_path):
  folder = tmp_path / 'mnist'
  folder.mkdir()
  for path in (T10K_IMAGES, T10K_LABELS):
    shutil.copy(path, folder)
  shutil.copy(T10K_LABELS, folder / 'train-labels-idx1-ubyte.gz')
  with pytest.raises(data.MissingDataError,
                     match='train-images-idx3-ubyte.gz'):
    data.load_dataset('mnist', data_dir=tmp_path)


def test_mnist_segmentation_masks_and_validation_split(data_dir, mnist_ds):
  dataset = data.load_dataset('mnist_segmentation', data_dir=data_dir)
  assert (dataset.task, dataset.num_classes) == ('segmentation', 11)
  assert dataset.input_shape == (28, 28, 1)
  assert dataset.sizes == {'train': 7_000, 'validation': 1_000, 'test': 2_000}
  for split, (images, masks) in dataset.splits.items():
    assert masks.dtype == np.int32 and masks.shape == (len(images), 28, 28), split
    assert masks.min() == 0 and masks.max() == 10, split
  # 'validation' is the last 1,000 training images of MNIST, 'train' the ones before.
  mnist_images, digits = mnist_ds.splits['train']
  np.testing.assert_array_equal(dataset.splits['validation'][0], mnist_images[-1_000:])
  np.testing.assert_array_equal(dataset.splits['train'][0], mnist_images[:-1_000])
  np.testing.assert_array_equal(dataset.splits['test'][0], mnist_ds.splits['test'][0])
  # Masks: the digit + 1 where the stroke is brighter than half, 0 (background) elsewhere.
  images, masks = dataset.splits['validation']
  expected = np.where(images[..., 0] > 0.5, digits[-1_000:, None, None] + 1, 0)
  np.testing.assert_array_equal(masks, expected)


# --- MedMNIST ----------------------------------------------------------------


@needs_pneumonia
def test_pneumoniamnist_through_tfds_builder(pneumonia):
  dataset, tfds_dir = pneumonia
  assert dataset.sizes == {'train': 4_708, 'validation': 524, 'test': 624}
  assert (dataset.num_classes, dataset.task) == (2, 'binary')
  assert dataset.input_shape == (28, 28, 1)
  assert np.bincount(dataset.splits['test'][1]).tolist() == [234, 390]
  assert np.bincount(dataset.splits['train'][1]).tolist() == [1_214, 3_494]
  # Built from the local npz into a folder keyed by its location and content.
  source_dir = pathlib.Path(medmnist.source_dir(tfds_dir, PNEUMONIA_NPZ))
  prepared = source_dir / 'medmnist' / 'pneumoniamnist' / '1.0.0'
  assert list(prepared.glob('*.array_record*'))
  # Images survive the round trip, in the npz's (official) order.
  with np.load(PNEUMONIA_NPZ) as npz:
    expected = npz['test_images'][..., None] / np.float32(255)
  np.testing.assert_array_equal(dataset.splits['test'][0], expected)


@needs_pneumonia
def test_medmnist_builds_and_reads_without_tensorflow(tmp_path):
  """Prepares and reads in a fresh interpreter where TF cannot be imported."""
  report = run_without_tensorflow("""
      import importlib.util
      assert importlib.util.find_spec('tensorflow') is None
      from jmed import data
      ds = data.load_dataset('pneumoniamnist', data_dir=sys.argv[1],
                             tfds_dir=sys.argv[2])
      print(json.dumps({'sizes': ds.sizes,
                        'tf_loaded': 'tensorflow' in sys.modules}))
  """, DATA_DIR, tmp_path)
  assert report == {'sizes': {'train': 4_708, 'validation': 524, 'test': 624},
                    'tf_loaded': False}


def test_missing_medmnist_file_names_path(tmp_path):
  expected = tmp_path / 'medmnist' / 'breastmnist.npz'
  with pytest.raises(data.MissingDataError, match=re.escape(str(expected))):
    data.load_dataset('breastmnist', data_dir=tmp_path, tfds_dir=tmp_path)


@needs_pneumonia
def test_corrupt_medmnist_file_names_path(tmp_path):
  folder = tmp_path / 'medmnist'
  folder.mkdir()
  bad = folder / PNEUMONIA_NPZ.name
  raw = PNEUMONIA_NPZ.read_bytes()
  bad.write_bytes(raw[:len(raw) // 2])
  with pytest.raises(data.DataError, match='Corrupt npz') as error:
    data.load_dataset('pneumoniamnist', data_dir=tmp_path,
                      tfds_dir=tmp_path / 'tfds')
  assert str(bad) in str(error.value)


def test_medmnist_configs_cover_all_2d_subsets():
  assert set(medmnist.NAMES) == {
      'pathmnist', 'chestmnist', 'dermamnist', 'octmnist', 'pneumoniamnist',
      'retinamnist', 'breastmnist', 'bloodmnist', 'tissuemnist',
      'organamnist', 'organcmnist', 'organsmnist'}
  chest = medmnist.get_config('chestmnist')
  assert (chest.task, chest.num_classes) == ('multilabel', 14)
  assert medmnist.get_config('retinamnist').ordinal
  assert medmnist.get_config('pathmnist').image_shape == (28, 28, 3)
  for config in medmnist.CONFIGS:
    assert config.task in ('binary', 'multiclass', 'multilabel') and len(config.md5) == 32
  # Kept twice (jmed.data.datasets must not import the TFDS builder): the lists must agree.
  assert datasets.MEDMNIST_NAMES == medmnist.NAMES


# --- load_dataset ------------------------------------------------------------


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(ValueError, match='valid names') as error:
    data.load_dataset('cifar10', data_dir='/nonexistent')
  for name in ('mnist', 'pneumoniamnist', 'chestmnist', 'organsmnist'):
    assert name in str(error.value)


@needs_mnist
def test_dataset_rejects_out_of_range_labels(mnist_ds):
  images, labels = mnist_ds.splits['test']
  bad = labels.copy()
  bad[0] = 10
  with pytest.raises(data.DataError, match='mnist/test: labels outside'):
    dataclasses.replace(mnist_ds, splits={'test': (images, bad)})
  with pytest.raises(data.DataError, match='no examples'):
    dataclasses.replace(mnist_ds, splits={'test': (images[:0], labels[:0])})


# --- pipeline ----------------------------------------------------------------


@needs_mnist
def test_train_batches_deterministic_per_seed_and_epoch(mnist_ds):
  images, labels = mnist_ds.splits['train']

  def epoch_labels(seed, epoch):
    return np.concatenate([b['labels'] for b in data.train_batches(
        images, labels, 128, seed=seed, epoch=epoch)])

  first = epoch_labels(0, 0)
  np.testing.assert_array_equal(first, epoch_labels(0, 0))
  assert not np.array_equal(first, epoch_labels(0, 1))
  assert not np.array_equal(first, epoch_labels(1, 0))
  order = data.epoch_permutation(len(labels), seed=0, epoch=0)
  assert len(first) == 8_000 // 128 * 128
  np.testing.assert_array_equal(first, labels[order[:len(first)]])
  batch = next(data.train_batches(images, labels, 128, seed=0, epoch=0))
  assert batch['inputs'].shape == (128, 28, 28, 1)
  assert batch['inputs'].dtype == np.float32 and batch['labels'].dtype == np.int32
  np.testing.assert_array_equal(batch['inputs'], images[order[:128]])
  kept = sum(len(b['labels']) for b in data.train_batches(
      images, labels, 300, seed=0, epoch=0, drop_remainder=False))
  assert kept == 8_000


@needs_mnist
def test_eval_batches_count_every_example_once(mnist_ds):
  images, labels = mnist_ds.splits['test']  # 2,000 = 6 x 300 + 200.
  batches = list(data.eval_batches(images, labels, 300))
  assert len(batches) == 7
  for batch in batches:
    assert batch['inputs'].shape == (300, 28, 28, 1)
    assert batch['labels'].shape == batch['valid'].shape == (300,)
    assert batch['valid'].dtype == np.float32
  assert batches[-1]['valid'].sum() == 200
  assert not batches[-1]['inputs'][200:].any()
  valid = np.concatenate([b['valid'] for b in batches]).astype(bool)
  assert valid.sum() == len(labels)
  np.testing.assert_array_equal(
      np.concatenate([b['inputs'] for b in batches])[valid], images)
  np.testing.assert_array_equal(
      np.concatenate([b['labels'] for b in batches])[valid], labels)


@needs_mnist
def test_pipeline_argument_errors(mnist_ds):
  images, labels = mnist_ds.splits['test']
  for batch_size in (0, -4):
    with pytest.raises(ValueError, match='batch_size'):
      data.eval_batches(images, labels, batch_size)
  with pytest.raises(ValueError, match='2000 inputs but 1999 labels'):
    data.train_batches(images, labels[:-1], 8, seed=0, epoch=0)
  with pytest.raises(ValueError, match=r'inputs must be \[n, \.\.\.\]'):
    data.eval_batches(images[:, 0, 0, 0], labels, 8)
  with pytest.raises(ValueError, match='floating'):
    data.eval_batches((images * 255).astype(np.uint8), labels, 8)
  with pytest.raises(ValueError, match='no batch'):
    data.train_batches(images[:10], labels[:10], 16, seed=0, epoch=0)


@needs_mnist
def test_prefetch_keeps_order_and_transforms_in_thread(mnist_ds):
  images, labels = mnist_ds.splits['test']
  threads = []

  def transform(batch):
    threads.append(threading.current_thread().name)
    return batch['labels']

  got = list(data.prefetch(data.eval_batches(images, labels, 500), size=2,
                           transform=transform))
  np.testing.assert_array_equal(np.concatenate(got), labels)
  assert threads == ['jmed-prefetch'] * 4


def test_prefetch_propagates_exceptions():

  def producer():
    yield 1
    raise RuntimeError('producer failed')

  iterator = data.prefetch(producer())
  assert next(iterator) == 1
  with pytest.raises(RuntimeError, match='producer failed'):
    next(iterator)


def test_prefetch_close_stops_thread():
  iterator = data.prefetch(iter(range(1_000_000)), size=1)
  assert next(iterator) == 0
  iterator.close()
  iterator._thread.join(timeout=5)  # pylint: disable=protected-access
  assert not iterator._thread.is_alive()  # pylint: disable=protected-access
