"""A MedMNIST-format npz as model inputs: the 'npz' source of `jmed.data.user`.

Keys train_images, train_labels, val_images, val_labels, test_images, test_labels (those
splits, as MedMNIST publishes them; any other npz in that layout too).

  * Images [n, h, w] or [n, h, w, c] are 2D, [n, d, h, w] or [n, d, h, w, c] 3D: a 4-dim
    array is 2D when its last axis is 1 or 3 (channels), else a 3D volume with one channel.
    uint8 is divided by 255; floating point must already lie in [0, 1].
    `image_size` resizes 2D images (bilinear) and `channels` converts them as
    `jmed.data.images` does; a 3D volume is kept as it is.
  * Labels [n] or [n, 1]: class ids 0..k-1, k = the largest training id + 1 ('binary' when
    k = 2, else 'multiclass'); [n, k], k > 1, of 0 / 1 (-1: missing): 'multilabel'.

`featurize` reads all of an npz's `*_images` arrays (train, val, test first), ids like
'test/12', labels when every array has its `*_labels`.
"""

import os
import zipfile
import zlib
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from jmed.data.images import SPLITS, check_flags, pick_task, resize_image, to_channels
from jmed.errors import ConfigError, DataError, MissingDataError

NPZ_SPLITS = {'train': 'train', 'validation': 'val', 'test': 'test'}  # ours -> npz prefix


def load_user(data, *, text=None, molecule=None):
  """The `Dataset` of the npz `data.path`.

  Args:
    data: the `DataConfig` (path, task, image_size, channels).
    text, molecule: unused (the source interface).

  Returns:
    A `Dataset` named after the file's stem: float32 inputs `[n, height, width, channels]`
    (3D: `[n, depth, height, width, channels]`) in [0, 1], int32 labels `[n]` (class ids) or
    `[n, k]` (multilabel), `preprocessing` (see `featurize`) and `split_info`.

  Raises:
    DataError: naming the file and array at fault. ConfigError: a flag that does not apply.
  """
  del text, molecule
  return _load_npz(data)


def featurize(path: str, data, preprocessing: dict, run_dir: str, *, text=None,
              molecule=None):
  """A new npz made into inputs exactly as training did: `jmed.data.user.Rows` of all its
  `*_images` arrays (labels None unless every one has its `*_labels`), ids '<split>/<index>'."""
  del data, run_dir, text, molecule
  from jmed.data import user  # pylint: disable=g-import-not-at-top
  inputs, labels, ids = _featurize_npz(path, preprocessing)
  return user.Rows(inputs=inputs, labels=labels, ids=ids)


def _read_npz(path: str, keys: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
  """The arrays `keys` (all `*_images` / `*_labels` when None) of an npz."""
  if os.path.isdir(path):
    raise DataError(f'{path}: a folder; the npz source reads one .npz file (a folder of class '
                    'subfolders is the images source).')
  if not os.path.isfile(path):
    raise MissingDataError(f'npz file not found: {path}')
  try:
    with np.load(path, allow_pickle=False) as npz:
      if keys is None:
        keys = [k for k in npz.files if k.endswith(('_images', '_labels'))]
      missing = [k for k in keys if k not in npz.files]
      if missing:
        raise DataError(f'{path} lacks arrays {", ".join(missing)}; it has '
                        f'{", ".join(npz.files) or "none"} (expected MedMNIST\'s train_images, '
                        'train_labels, val_images, val_labels, test_images, test_labels).')
      return {k: npz[k] for k in keys}
  except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
    if isinstance(error, DataError):
      raise
    raise DataError(f'{path}: corrupt npz file ({error}).') from None


def _volume(path: str, key: str, images: np.ndarray) -> Tuple[np.ndarray, bool]:
  """(images with a channel axis, whether 3D): see the module doc for the rule."""
  shape = images.shape
  if images.ndim == 3:
    images, volume = images[..., None], False
  elif images.ndim == 4:
    volume = shape[-1] not in (1, 3)
    images = images[..., None] if volume else images
  elif images.ndim == 5:
    volume = True
  else:
    raise DataError(f'{path}: {key} has shape {shape}; expected [n, h, w], [n, h, w, c], '
                    '[n, d, h, w] or [n, d, h, w, c].')
  if not len(images) or not all(shape[1:]):
    raise DataError(f'{path}: {key} is empty ({shape}).')
  return images, volume


def _scaled(path: str, key: str, images: np.ndarray) -> np.ndarray:
  """float32 pixels in [0, 1]: uint8 / 255, floating point kept (checked)."""
  if images.dtype == np.uint8:
    return np.divide(images, 255, dtype=np.float32)
  if not np.issubdtype(images.dtype, np.floating):
    raise DataError(f'{path}: {key} are {images.dtype}; expected uint8 (0..255) or floating '
                    'point in [0, 1].')
  images = images.astype(np.float32, copy=False)
  if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
    raise DataError(f'{path}: {key} hold values outside [0, 1] (or NaN): '
                    f'[{np.nanmin(images)}, {np.nanmax(images)}]; scale floating-point '
                    'pixels to [0, 1].')
  return images


def _npz_images(path, key, raw, image_size, channels) -> Tuple[np.ndarray, bool]:
  """(float32 [n, (d,) h, w, c] in [0, 1], whether 3D) of one `*_images` array."""
  images, volume = _volume(path, key, raw)
  images = _scaled(path, key, images)
  if volume:
    if image_size and images.shape[2:4] != (image_size, image_size):
      raise ConfigError(f'data.image_size {image_size}: {path} holds 3D volumes '
                        f'{images.shape[1:]}, which are not resized; use 0.')
    if channels and channels != images.shape[-1]:
      raise ConfigError(f'data.channels {channels}: {path} holds 3D volumes with '
                        f'{images.shape[-1]} channel(s), which are not converted; use 0.')
    return images, True
  if channels:
    images = to_channels(images, channels)
  if image_size and images.shape[1:3] != (image_size, image_size):
    images = np.stack([resize_image(image, image_size, image_size) for image in images])
  return images, False


def _npz_labels(path: str, key: str, labels: np.ndarray, n: int) -> np.ndarray:
  """int32 class ids [n] or multi-hot [n, k] (checked) of one `*_labels` array."""
  if labels.ndim == 2 and labels.shape[1] == 1:
    labels = labels[:, 0]
  if labels.ndim not in (1, 2) or len(labels) != n:
    raise DataError(f'{path}: {key} has shape {labels.shape}; expected [{n}], [{n}, 1] (class '
                    f'ids) or [{n}, k] (0 / 1 per label), one row per image.')
  if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool
          or np.issubdtype(labels.dtype, np.floating)):
    raise DataError(f'{path}: {key} are {labels.dtype}; expected integer labels.')
  values = labels.astype(np.float64)
  whole = np.isfinite(values) & (values == np.round(values))
  low = -1 if labels.ndim == 2 else 0
  high = 1 if labels.ndim == 2 else np.inf
  bad = ~whole | (values < low) | (values > high)
  if bad.any():
    row = int(np.argwhere(bad)[0][0])
    what = ('0 / 1 per label (-1 missing)' if labels.ndim == 2 else 'class ids 0, 1, ...')
    raise DataError(f'{path}: {key} row {row + 1} (index {row}) holds {labels[row]!r}, outside '
                    f'the labels range: expected {what}.')
  return values.astype(np.int32)


def _npz_parts(path, arrays, prefixes, image_size, channels):
  """prefix -> (images, labels or None), and whether 3D; one shape for all."""
  parts, dims = {}, set()
  for prefix in prefixes:
    images, volume = _npz_images(path, f'{prefix}_images', arrays[f'{prefix}_images'],
                                 image_size, channels)
    key = f'{prefix}_labels'
    labels = (_npz_labels(path, key, arrays[key], len(images)) if key in arrays else None)
    parts[prefix] = (images, labels)
    dims.add((images.shape[1:], volume))
  if len(dims) > 1:
    shapes = ', '.join(f'{p}_images {v[0].shape[1:]}' for p, v in parts.items())
    raise DataError(f'{path}: the splits hold images of different shapes ({shapes}).')
  return parts, dims.pop()[1]


def _load_npz(data):
  check_flags(data)
  path = os.fspath(data.path)
  keys = [f'{p}_{kind}' for p in NPZ_SPLITS.values() for kind in ('images', 'labels')]
  arrays = _read_npz(path, keys)
  if data.channels not in (0, 1, 3):
    raise ConfigError(f'data.channels must be 0, 1 or 3, got {data.channels}.')
  parts, volume = _npz_parts(path, arrays, NPZ_SPLITS.values(), data.image_size, data.channels)
  train = parts['train'][1]
  multi = train.ndim == 2
  widths = {labels.shape[1:] for _, labels in parts.values()}
  if len(widths) > 1:
    raise DataError(f'{path}: the *_labels arrays differ in layout '
                    f'({", ".join(f"{p}_labels {v[1].shape}" for p, v in parts.items())}).')
  num_classes = train.shape[1] if multi else int(train.max()) + 1
  if not multi:
    for prefix, (_, labels) in parts.items():
      if labels.max() >= num_classes:
        raise DataError(f'{path}: {prefix}_labels hold class {labels.max()}, outside the range '
                        f'of train_labels (0..{num_classes - 1}).')
    if num_classes < 2:
      raise DataError(f'{path}: train_labels hold one class; classification needs two.')
  input_shape = tuple(int(d) for d in parts['train'][0].shape[1:])
  inferred = 'multilabel' if multi else 'binary' if num_classes == 2 else 'multiclass'
  task = pick_task(data.task, inferred, num_classes, input_shape, path)
  splits = {ours: parts[theirs] for ours, theirs in NPZ_SPLITS.items()}
  info = {'rule': 'npz', 'keys': dict(NPZ_SPLITS), 'seed': None, 'fractions': None,
          'column': None, 'group_column': None,
          'sizes': {s: int(len(splits[s][1])) for s in SPLITS}}
  preprocessing = {'source': 'npz', 'task': task, 'num_classes': int(num_classes),
                   'classes': [str(i) for i in range(num_classes)], 'multilabel': bool(multi),
                   'volume': bool(volume), 'image_size': int(data.image_size),
                   'channels': int(input_shape[-1]), 'input_shape': list(input_shape)}
  from jmed.data.datasets import Dataset  # pylint: disable=g-import-not-at-top
  return Dataset(name=os.path.splitext(os.path.basename(path))[0], splits=splits,
                 num_classes=int(num_classes), task=task, input_shape=input_shape,
                 preprocessing=preprocessing, split_info=info)


def _featurize_npz(path: str, preprocessing: dict):
  """(inputs, labels or None, ids '<prefix>/<index>') of every `*_images` array of an npz."""
  path = os.fspath(path)
  arrays = _read_npz(path)
  known = list(NPZ_SPLITS.values())
  found = [k[:-len('_images')] for k in arrays if k.endswith('_images')]
  prefixes = [p for p in known if p in found] + sorted(p for p in found if p not in known)
  if not prefixes:
    raise DataError(f'{path}: no *_images arrays (e.g. test_images); it has '
                    f'{", ".join(arrays) or "none"}.')
  channels = 0 if preprocessing['volume'] else preprocessing['channels']
  parts, _ = _npz_parts(path, arrays, prefixes, preprocessing['image_size'], channels)
  shape = tuple(preprocessing['input_shape'])
  got = next(iter(parts.values()))[0].shape[1:]
  if got != shape:
    raise DataError(f'{path}: images of shape {got}, the model was trained on {shape}.')
  inputs = np.concatenate([images for images, _ in parts.values()])
  ids = [f'{prefix}/{i}' for prefix, (images, _) in parts.items() for i in range(len(images))]
  if any(labels is None for _, labels in parts.values()):
    return inputs, None, ids
  labels = np.concatenate([labels for _, labels in parts.values()])
  k = preprocessing['num_classes']
  layout = (len(labels), k) if preprocessing['multilabel'] else (len(labels),)
  if labels.shape != layout or (not preprocessing['multilabel'] and labels.max() >= k):
    raise DataError(f'{path}: labels {labels.shape} with values up to {labels.max()} do not '
                    f'fit the training labels ({k} {"labels" if len(layout) == 2 else "classes"}).')
  return inputs, labels, ids
