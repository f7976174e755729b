"""`load_dataset`: one entry point for jmed's classification datasets.

Offline use: point `data_dir` (or the env var `JMED_DATA_DIR`) at a root
holding one subfolder per source:

  <data_dir>/mnist/t10k-images-idx3-ubyte.gz, ...   (see jmed.data.mnist)
  <data_dir>/medmnist/pneumoniamnist.npz, ...       (see jmed.data.medmnist)
  <data_dir>/moleculenet/tox21.csv                  (see jmed.data.tox21)

With neither set, MNIST and MedMNIST are downloaded through TFDS; Tox21 must
be downloaded by hand.
"""

import dataclasses
import os
from typing import Dict, Optional, Tuple

import numpy as np

from jmed.data import medmnist
from jmed.data import mnist
from jmed.data import tox21
from jmed.data.errors import DataError, MissingDataError

ENV_VAR = 'JMED_DATA_DIR'
TASKS = ('binary', 'multiclass', 'multilabel')
NAMES = ('mnist',) + medmnist.NAMES + ('tox21',)

Split = Tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True, eq=False)  # Arrays: compare by identity.
class Dataset:
  """An in-memory labelled dataset; validated on construction.

  Attributes:
    name: e.g. 'mnist', 'pneumoniamnist' or 'tox21'.
    splits: split name -> `(images, labels)`: float32 inputs
      `[n, *image_shape]` in [0, 1]; int32 labels `[n]` in [0, num_classes),
      or `[n, num_classes]` for 'multilabel', each 1, 0 or -1 (missing).
    num_classes: number of classes (independent labels for 'multilabel').
    task: 'binary', 'multiclass' or 'multilabel'.
    image_shape: the per-example input shape: `(height, width, channels)`
      for images, `(bits,)` for Tox21's fingerprints.
  """

  name: str
  splits: Dict[str, Split]
  num_classes: int
  task: str
  image_shape: Tuple[int, ...]

  def __post_init__(self):
    validate(self)

  @property
  def sizes(self) -> Dict[str, int]:
    """Split name -> number of examples."""
    return {split: len(labels) for split, (_, labels) in self.splits.items()}


def load_dataset(name: str, data_dir: Optional[str] = None,
                 tfds_dir: Optional[str] = None, *,
                 split_kind: Optional[str] = None) -> Dataset:
  """Loads dataset `name` as float32 inputs and int32 labels.

  Args:
    name: 'mnist', a MedMNIST 2D subset or 'tox21' (see `NAMES`).
    data_dir: root with `mnist/`, `medmnist/` and `moleculenet/` subfolders of
      original files; defaults to `$JMED_DATA_DIR`. If both are unset, MNIST
      and MedMNIST are downloaded through TFDS.
    tfds_dir: TFDS data directory where MedMNIST is prepared (and online MNIST
      cached); None uses the TFDS default (`$TFDS_DATA_DIR` or
      `~/tensorflow_datasets`).
    split_kind: how to split datasets without official splits (Tox21):
      'random' (seed 0; the default) or 'scaffold'. Must be None for the
      others.

  Returns:
    A validated `Dataset`. MNIST has splits 'train' and 'test' (offline with
    only the official test files: its first 8,000 / last 2,000 images, see
    `jmed.data.mnist`); MedMNIST and Tox21 have 'train', 'validation' and
    'test' (Tox21: 80/10/10, 1024-bit Morgan fingerprints, 12 labels with -1
    for missing, see `jmed.data.tox21`).

  Raises:
    DataError: unknown `name` (the message lists valid names), or a missing
      (`MissingDataError`) or corrupt file (the message names its path).
  """
  if name not in NAMES:
    raise DataError(f'Unknown dataset {name!r}; valid names: '
                    f'{", ".join(NAMES)}.')
  data_dir = resolve_data_dir(data_dir)
  if name == 'tox21':
    return _load_tox21(data_dir, split_kind or 'random')
  if split_kind is not None:
    raise DataError(f'{name} has official splits; split_kind must be None, '
                    f'got {split_kind!r}.')
  if name == 'mnist':
    raw = _load_mnist(data_dir, tfds_dir)
    num_classes, task, image_shape = (
        mnist.NUM_CLASSES, 'multiclass', mnist.IMAGE_SHAPE)
  else:
    raw = _load_medmnist(name, data_dir, tfds_dir)
    config = medmnist.get_config(name)
    num_classes, task, image_shape = (
        config.num_classes, config.task, config.image_shape)
  splits = {split: (to_float(images), labels.astype(np.int32))
            for split, (images, labels) in raw.items()}
  return Dataset(name=name, splits=splits, num_classes=num_classes, task=task,
                 image_shape=image_shape)


def resolve_data_dir(data_dir: Optional[str] = None) -> Optional[str]:
  """`data_dir`, else `$JMED_DATA_DIR`, else None (download online)."""
  if data_dir is not None:
    return os.fspath(data_dir)
  return os.environ.get(ENV_VAR) or None


def to_float(images: np.ndarray) -> np.ndarray:
  """Maps uint8 images `[n, h, w, c]` in [0, 255] to float32 in [0, 1]."""
  return np.divide(images, 255, dtype=np.float32)


def _load_mnist(data_dir, tfds_dir) -> Dict[str, Split]:
  if data_dir is None:
    return mnist.load_tfds(tfds_dir)
  return mnist.load_offline(os.path.join(data_dir, 'mnist'))


def _load_medmnist(name, data_dir, tfds_dir) -> Dict[str, Split]:
  if data_dir is None:
    return medmnist.load(name, tfds_dir=tfds_dir)
  manual_dir = os.path.join(data_dir, 'medmnist')
  path = os.path.join(manual_dir, f'{name}.npz')
  if not os.path.isfile(path):
    raise MissingDataError(f'MedMNIST file not found: {path} (download it '
                           f'from {medmnist.URL.format(name=name)})')
  return medmnist.load(name, tfds_dir=tfds_dir, manual_dir=manual_dir)


def _load_tox21(data_dir, split_kind) -> Dataset:
  if data_dir is None:
    raise MissingDataError(
        f'Tox21 has no online loader: download {tox21.URL} (MoleculeNet / '
        'DeepChem) into <data_dir>/moleculenet/ and pass data_dir (or set '
        f'${ENV_VAR}).')
  splits = tox21.load(os.path.join(data_dir, 'moleculenet'), split=split_kind)
  return Dataset(name='tox21', splits=splits, num_classes=len(tox21.TASKS),
                 task='multilabel', image_shape=splits['train'][0].shape[1:])


def validate(dataset: Dataset) -> None:
  """Checks task, shapes, dtypes, sizes, pixel and label ranges.

  Raises:
    DataError: naming the dataset and split at fault.
  """
  if dataset.task not in TASKS:
    raise DataError(f'{dataset.name}: task {dataset.task!r} not in {TASKS}.')
  if dataset.task == 'binary' and dataset.num_classes != 2:
    raise DataError(f'{dataset.name}: binary task with '
                    f'{dataset.num_classes} classes.')
  if dataset.num_classes < 1 or not dataset.image_shape:
    raise DataError(f'{dataset.name}: bad num_classes {dataset.num_classes} '
                    f'or image_shape {dataset.image_shape}.')
  if not dataset.splits:
    raise DataError(f'{dataset.name}: no splits.')
  for split, (images, labels) in dataset.splits.items():
    where = f'{dataset.name}/{split}'
    _validate_images(where, images, tuple(dataset.image_shape))
    _validate_labels(where, labels, len(images), dataset.num_classes,
                     dataset.task == 'multilabel')


def _validate_images(where, images, image_shape) -> None:
  if images.dtype != np.float32 or images.shape[1:] != image_shape:
    raise DataError(f'{where}: images are {images.dtype} {images.shape}, '
                    f'expected float32 [n, *{image_shape}].')
  if len(images) == 0:
    raise DataError(f'{where}: no examples.')
  if not np.isfinite(images).all():
    raise DataError(f'{where}: images hold NaN or infinite values.')
  if images.min() < 0 or images.max() > 1:
    raise DataError(f'{where}: pixel values outside [0, 1].')


def _validate_labels(where, labels, n, num_classes, multilabel) -> None:
  shape = (n, num_classes) if multilabel else (n,)
  if labels.dtype != np.int32 or labels.shape != shape:
    raise DataError(f'{where}: labels are {labels.dtype} {labels.shape}, '
                    f'expected int32 {shape}.')
  if multilabel:  # 1, 0 or -1 (missing).
    if labels.min() < -1 or labels.max() > 1:
      raise DataError(f'{where}: labels outside {{-1, 0, 1}} (-1 = missing): '
                      f'[{labels.min()}, {labels.max()}].')
  elif labels.min() < 0 or labels.max() >= num_classes:
    raise DataError(f'{where}: labels outside [0, {num_classes}): '
                    f'[{labels.min()}, {labels.max()}].')
