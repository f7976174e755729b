"""A local MedMNIST npz or Medical Abstracts CSV is never replaced by a stale TFDS build.

Offline (`data_dir` set) without a TFDS directory, the file is read directly and nothing is
written (least of all into ~/tensorflow_datasets); with one, the build is keyed by the file's
location and content, so a changed file is rebuilt and a corrupt one refused.
"""

import csv
import re

import numpy as np
import pytest

from conftest import real_data_dir
from jmed import data
from jmed.data import medical_abstracts

DATA_DIR = real_data_dir()
PNEUMONIA_NPZ = DATA_DIR / 'medmnist' / 'pneumoniamnist.npz'
ABSTRACTS_CSV = DATA_DIR / 'medical_abstracts' / medical_abstracts.TEST_FILE
SIZES = {'train': 40, 'validation': 20, 'test': 20}  # of the small npz written here
ROWS = 200  # of the small CSV written here

needs_pneumonia = pytest.mark.skipif(not PNEUMONIA_NPZ.is_file(),
                                     reason=f'{PNEUMONIA_NPZ} not found')
needs_abstracts = pytest.mark.skipif(not ABSTRACTS_CSV.is_file(),
                                     reason=f'{ABSTRACTS_CSV} not found')


@pytest.fixture
def homes(tmp_path, monkeypatch):
  """HOME and the TFDS default directory moved to empty tmp folders; returns what a load
  must leave untouched: ~/tensorflow_datasets and $TFDS_DATA_DIR."""
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top
  home, default = tmp_path / 'home', tmp_path / 'tfds_default'
  home.mkdir()
  monkeypatch.setenv('HOME', str(home))
  monkeypatch.setenv('TFDS_DATA_DIR', str(default))
  monkeypatch.setattr(constants, 'DATA_DIR', str(default))  # read by TFDS at import
  return home / 'tensorflow_datasets', default


def _untouched(*folders):
  return all(not folder.exists() or not any(folder.iterdir()) for folder in folders)


def _write_npz(path, flip=False):
  """A small PneumoniaMNIST (`SIZES` of each split); `flip` swaps its labels 0 <-> 1."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with np.load(PNEUMONIA_NPZ) as npz:
    arrays = {}
    for split, key in zip(SIZES, ('train', 'val', 'test')):
      labels = npz[f'{key}_labels'][:SIZES[split]]
      arrays[f'{key}_images'] = npz[f'{key}_images'][:SIZES[split]]
      arrays[f'{key}_labels'] = 1 - labels if flip else labels
  np.savez_compressed(path, **arrays)
  return arrays


def _truncated_copy(good, bad):
  bad.parent.mkdir(parents=True, exist_ok=True)
  raw = good.read_bytes()
  bad.write_bytes(raw[:len(raw) // 2])


@needs_pneumonia
def test_offline_medmnist_reads_the_npz_and_writes_nothing(tmp_path, homes):
  arrays = _write_npz(tmp_path / 'a' / 'medmnist' / 'pneumoniamnist.npz')
  dataset = data.load_dataset('pneumoniamnist', data_dir=tmp_path / 'a')
  assert dataset.sizes == SIZES
  np.testing.assert_array_equal(dataset.splits['test'][1], arrays['test_labels'][:, 0])
  np.testing.assert_array_equal(dataset.splits['train'][0][..., 0],
                                arrays['train_images'] / np.float32(255))
  assert _untouched(*homes)


@needs_pneumonia
def test_truncated_npz_is_refused_not_replaced_by_another_build(tmp_path, homes):
  good = tmp_path / 'a' / 'medmnist' / 'pneumoniamnist.npz'
  bad = tmp_path / 'b' / 'medmnist' / 'pneumoniamnist.npz'
  _write_npz(good)
  _truncated_copy(good, bad)
  tfds_dir = tmp_path / 'tfds'
  assert data.load_dataset('pneumoniamnist', data_dir=tmp_path / 'a',
                           tfds_dir=tfds_dir).sizes == SIZES
  for where in (None, tfds_dir):  # read directly / built beside A's build
    with pytest.raises(data.DataError, match=re.escape(str(bad))):
      data.load_dataset('pneumoniamnist', data_dir=tmp_path / 'b', tfds_dir=where)
  assert _untouched(*homes)


@needs_pneumonia
def test_changed_npz_is_rebuilt(tmp_path, homes):
  path = tmp_path / 'a' / 'medmnist' / 'pneumoniamnist.npz'
  tfds_dir = tmp_path / 'tfds'
  before = _write_npz(path)
  first = data.load_dataset('pneumoniamnist', data_dir=tmp_path / 'a', tfds_dir=tfds_dir)
  np.testing.assert_array_equal(first.splits['test'][1], before['test_labels'][:, 0])
  after = _write_npz(path, flip=True)
  second = data.load_dataset('pneumoniamnist', data_dir=tmp_path / 'a', tfds_dir=tfds_dir)
  np.testing.assert_array_equal(second.splits['test'][1], after['test_labels'][:, 0])
  assert not np.array_equal(first.splits['test'][1], second.splits['test'][1])
  assert len(list((tfds_dir / 'jmed-sources').iterdir())) == 2  # one build per content
  assert _untouched(*homes)


def _write_csv(folder, rotate=0, bad_row=None):
  """The first `ROWS` abstracts; labels shifted by `rotate` (mod 5); `bad_row` (1-based data
  row) gets label 9."""
  folder.mkdir(parents=True, exist_ok=True)
  with open(ABSTRACTS_CSV, newline='', encoding='utf-8') as f:
    rows = list(csv.DictReader(f))[:ROWS]
  path = folder / medical_abstracts.TEST_FILE
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    for number, row in enumerate(rows, start=1):
      label = (int(row['condition_label']) - 1 + rotate) % 5 + 1
      writer.writerow({**row, 'condition_label': 9 if number == bad_row else label})
  return path


def _equal(splits, other):
  assert list(splits) == list(other)
  for name, (texts, labels) in splits.items():
    assert texts == other[name][0]
    np.testing.assert_array_equal(labels, other[name][1])


@needs_abstracts
def test_abstracts_offline_equals_split_of_the_csv_and_writes_nothing(homes):
  _equal(medical_abstracts.load(str(DATA_DIR)),
         medical_abstracts.load_offline(DATA_DIR / 'medical_abstracts'))
  assert _untouched(*homes)


@needs_abstracts
def test_abstracts_csv_changed_or_corrupt_is_never_read_from_a_stale_build(tmp_path, homes):
  tfds_dir = str(tmp_path / 'tfds')
  _write_csv(tmp_path / 'a' / 'medical_abstracts')
  first = medical_abstracts.load(str(tmp_path / 'a'), tfds_dir)
  _equal(first, medical_abstracts.load_offline(tmp_path / 'a' / 'medical_abstracts'))
  bad = _write_csv(tmp_path / 'b' / 'medical_abstracts', bad_row=7)
  for where in (None, tfds_dir):
    with pytest.raises(data.DataError, match=re.escape(str(bad)) + '.*row 7'):
      medical_abstracts.load(str(tmp_path / 'b'), where)
  _write_csv(tmp_path / 'a' / 'medical_abstracts', rotate=1)
  second = medical_abstracts.load(str(tmp_path / 'a'), tfds_dir)
  _equal(second, medical_abstracts.load_offline(tmp_path / 'a' / 'medical_abstracts'))
  assert second['train'][1].tolist() != first['train'][1].tolist()
  assert _untouched(*homes)
