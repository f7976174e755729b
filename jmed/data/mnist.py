"""MNIST from the original idx `.gz` files (offline) or through TFDS (online).

Offline layout, one directory holding the files exactly as published at
http://yann.lecun.com/exdb/mnist/ :

  t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz    (required)
  train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz   (optional)

If the two `train-*` files are present, the official splits are used
(train 60,000 / test 10,000). If only the official 10,000-image test set is
present, the *offline protocol* applies: its first 8,000 images become 'train'
and its last 2,000 'test'. Results obtained that way are not comparable with
published MNIST numbers; report them as such.
"""

import gzip
import os
import struct
import zlib
from typing import Dict, Optional, Tuple

import numpy as np

from jmed.errors import DataError, MissingDataError

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)
OFFLINE_TRAIN_SIZE = 8_000  # First 8,000 of t10k -> 'train', last 2,000 -> 'test'.

_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
_OFFICIAL_SIZES = {'train': 60_000, 'test': 10_000}
_IDX_UBYTE = 0x08  # idx type code of unsigned bytes, the only one MNIST uses.

Split = Tuple[np.ndarray, np.ndarray]


def read_idx(path: os.PathLike, ndim: int) -> np.ndarray:
  """Reads one gzip-compressed idx file of unsigned bytes.

  Args:
    path: the `.gz` file.
    ndim: the number of dimensions the file must declare (3 for images, 1 for
      labels).

  Returns:
    A uint8 array of the declared shape, e.g. `[n, 28, 28]` or `[n]`.

  Raises:
    MissingDataError: `path` does not exist.
    DataError: `path` is not valid gzip, is truncated, has a bad magic number,
      or holds a different number of bytes than its header declares.
  """
  if not os.path.isfile(path):
    raise MissingDataError(f'MNIST file not found: {path}')
  data = _gunzip(path)
  header_size = 4 + 4 * ndim
  if len(data) < header_size:
    raise DataError(f'Corrupt idx file {path}: {len(data)} bytes, shorter '
                    f'than its {header_size}-byte header.')
  zeros, dtype_code, file_ndim = struct.unpack('>HBB', data[:4])
  if zeros != 0 or dtype_code != _IDX_UBYTE or file_ndim != ndim:
    raise DataError(
        f'Bad idx magic number 0x{data[:4].hex()} in {path}: expected '
        f'0x{_IDX_UBYTE << 8 | ndim:08x} (unsigned bytes, {ndim} dimensions).')
  shape = struct.unpack(f'>{ndim}I', data[4:header_size])
  expected = header_size + int(np.prod(shape))
  if len(data) != expected:
    raise DataError(f'Corrupt idx file {path}: header declares shape {shape} '
                    f'({expected} bytes) but the file holds {len(data)} bytes.')
  return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape)


def _gunzip(path: os.PathLike) -> bytes:
  """Returns the decompressed bytes of `path`, or raises one `DataError`."""
  try:
    with gzip.open(path, 'rb') as f:
      return f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f'Corrupt gzip file {path}: {e}') from e


def read_split(directory: os.PathLike, split: str) -> Split:
  """Reads and cross-checks one official split ('train' or 't10k' files).

  Args:
    directory: folder holding the idx `.gz` files.
    split: 'train' or 'test'.

  Returns:
    `(images, labels)`: uint8 `[n, 28, 28, 1]` and uint8 `[n]`.
  """
  image_file, label_file = (os.path.join(directory, f) for f in _FILES[split])
  images = read_idx(image_file, ndim=3)
  labels = read_idx(label_file, ndim=1)
  if images.shape[1:] != IMAGE_SHAPE[:2]:
    raise DataError(f'{image_file}: images are {images.shape[1:]}, '
                    f'expected {IMAGE_SHAPE[:2]}.')
  if len(images) != _OFFICIAL_SIZES[split]:
    raise DataError(f'{image_file}: holds {len(images)} images, the official '
                    f'MNIST {split} split has {_OFFICIAL_SIZES[split]}.')
  if len(labels) != len(images):
    raise DataError(f'{label_file}: {len(labels)} labels for '
                    f'{len(images)} images in {image_file}.')
  if labels.max() >= NUM_CLASSES:
    raise DataError(f'{label_file}: label {labels.max()} is outside '
                    f'[0, {NUM_CLASSES}).')
  return images[..., None], labels


def has_official_train(directory: os.PathLike) -> bool:
  """Whether both `train-*` idx files are present in `directory`.

  Raises:
    MissingDataError: only one of the two train files is present.
  """
  paths = [os.path.join(directory, f) for f in _FILES['train']]
  present = [os.path.isfile(p) for p in paths]
  if any(present) and not all(present):
    missing = paths[present.index(False)]
    raise MissingDataError(f'MNIST train file not found: {missing} '
                           '(its companion train file is present).')
  return all(present)


def load_offline(directory: os.PathLike) -> Dict[str, Split]:
  """Loads MNIST from idx `.gz` files in `directory`.

  With the `train-*` files present these are the official splits. With only
  the `t10k-*` (official test) files, the offline protocol applies: 'train' is
  the first 8,000 test images and 'test' the last 2,000.

  Args:
    directory: folder holding the idx `.gz` files.

  Returns:
    `{'train': (images, labels), 'test': (images, labels)}` with uint8 images
    `[n, 28, 28, 1]` in [0, 255] and uint8 labels `[n]` in [0, 10).
  """
  if has_official_train(directory):
    return {split: read_split(directory, split) for split in ('train', 'test')}
  images, labels = read_split(directory, 'test')
  cut = OFFLINE_TRAIN_SIZE
  return {'train': (images[:cut], labels[:cut]),
          'test': (images[cut:], labels[cut:])}


def load_tfds(tfds_dir: Optional[str] = None) -> Dict[str, Split]:
  """Loads the official MNIST splits with `tfds.load` (downloads if needed).

  Needs network access on first use and TensorFlow installed (TFDS' `mnist`
  builder encodes its images as PNG with TensorFlow).

  Args:
    tfds_dir: TFDS data directory; None uses the TFDS default.

  Returns:
    `{'train': (images, labels), 'test': (images, labels)}` with uint8 images
    `[n, 28, 28, 1]` and integer labels `[n]`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  splits = ('train', 'test')
  try:
    loaded = tfds.load('mnist', split=list(splits), data_dir=tfds_dir,
                       batch_size=-1, as_supervised=True)
  except ModuleNotFoundError as e:
    raise ImportError(
        f'Online MNIST needs {e.name!r} (`pip install {e.name}`): TFDS '
        'builds `mnist` with TensorFlow, and TFDS 4.9.x also imports '
        'importlib_resources (tensorflow/datasets#11212). Offline, pass '
        'data_dir with the idx .gz files instead.') from e
  return {split: tuple(tfds.as_numpy(pair)) for split, pair in zip(splits, loaded)}
