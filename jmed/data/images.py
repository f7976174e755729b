"""A user's images: a folder with one subfolder per class, the 'images' source of
`jmed.data.user` (a MedMNIST-format npz is the 'npz' source, `jmed.data.npz`).

Folder ('images'):

  <folder>/<class>/<image>                          split at random, stratified by class
  <folder>/train|validation|val|test/<class>/<image>  the split the folders give

  * Classes are the class subfolders' names, sorted: class id i is the i-th. Two classes make
    a 'binary' task, more a 'multiclass' one (`DataConfig.task` may force either).
  * Images: PNG, JPEG, BMP, GIF, TIFF (read by PIL); DICOM `.dcm` when pydicom is installed.
    Hidden files (a leading '.'), Thumbs.db and desktop.ini are ignored; any other file is a
    `DataError` naming it.
  * Order: the files of a split sorted by file name (Python's string order) across classes,
    ties by class id, so numbered files keep their numbering's order whatever their class;
    with split folders, train, then validation, then test. Without split folders, the
    seeded stratified split (`jmed.data.splits.stratified`, `DataConfig.split_seed` and the
    fractions; 'random' with `--split random`) picks positions in that order, each split
    keeping it. Split folders, when present, win over `--split`.
  * Pixels are read lazily (`ImageFiles`): only the images of a batch are decoded, so a folder
    larger than memory trains. Loading decodes the first image of each class; an unreadable
    image further on raises a `DataError` naming it when its batch is read.
  * `DataConfig.image_size` > 0 resizes every image to that height and width (PIL bilinear);
    0 keeps the size, which must then be the first image's for all. `DataConfig.channels` 1
    (grey) or 3 (RGB); 0 takes the first image's (grey modes 1, colour, RGBA and palette 3).
  * Values: 8-bit images / 255; 16- and 32-bit integer grey images / 65535 (clipped to 1);
    floating-point images clipped to [0, 1]; DICOM scaled from its own minimum and maximum.
    RGB -> grey is L = 0.299 R + 0.587 G + 0.114 B; grey -> RGB repeats the channel.

`featurize` makes inputs from a class folder (labels from the subfolder names, which must be
training classes), a flat folder of images or one image file (no labels), ids the files'
paths relative to the given path.
"""

import concurrent.futures
import importlib.util
import logging
import os
import struct
import threading
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from jmed import tasks
from jmed.data import splits as jsplits
from jmed.errors import ConfigError, DataError, MissingDataError

EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff')
DICOM = '.dcm'
IGNORED = ('thumbs.db', 'desktop.ini')  # OS droppings, besides hidden files
SPLIT_FOLDERS = {'train': 'train', 'validation': 'validation', 'val': 'validation',
                 'test': 'test'}  # folder name (any case) -> split
SPLITS = ('train', 'validation', 'test')
GREY_MODES = ('1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16L', 'I;16B', 'I;16N', 'F')
_DEEP_MODES = ('I', 'I;16', 'I;16L', 'I;16B', 'I;16N')  # integer grey beyond 8 bits
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_LOG = logging.getLogger(__name__)


# ---------------------------------------------------------------- the two source functions


def load_user(data, *, text=None, molecule=None):
  """The `Dataset` of the image folder `data.path`.

  Args:
    data: the `DataConfig` (path, task, split, split_seed, fractions, image_size, channels).
    text, molecule: unused (the source interface).

  Returns:
    A `Dataset` named after the folder: lazy float32 inputs `[n, height, width, channels]` in
    [0, 1] (`ImageFiles`), int32 class ids `[n]`, `preprocessing` (see `featurize`) and
    `split_info`.

  Raises:
    DataError: naming the file or folder at fault. ConfigError: a flag that does not apply.
  """
  del text, molecule
  return _load_folder(data)


def featurize(path: str, data, preprocessing: dict, run_dir: str, *, text=None,
              molecule=None):
  """A new folder or image made into inputs exactly as training did.

  Args:
    path: a class folder, a flat folder of images or one image.
    data: the run's `DataConfig` (unused: everything comes from `preprocessing`).
    preprocessing: the training `Dataset.preprocessing`.
    run_dir, text, molecule: unused (the source interface).

  Returns:
    `jmed.data.user.Rows`: lazy inputs as in training, labels (None for a flat folder or an
    image), ids (paths relative to `path`).
  """
  del data, run_dir, text, molecule
  from jmed.data import user  # pylint: disable=g-import-not-at-top
  inputs, labels, ids = _featurize_folder(path, preprocessing)
  return user.Rows(inputs=inputs, labels=labels, ids=ids)


def _dataset(**fields):
  from jmed.data.datasets import Dataset  # pylint: disable=g-import-not-at-top
  return Dataset(**fields)


def check_flags(data) -> None:
  for field in ('split_column', 'group_column'):
    if getattr(data, field):
      raise ConfigError(f'data.{field} does not apply to images (source {data.source!r}): '
                        'split them with train/validation/test folders or the seeded split.')


def pick_task(requested: str, inferred: str, num_classes: int, input_shape, where: str) -> str:
  """`inferred`, or the requested task when it reads labels of the same layout."""
  if requested in ('', 'auto'):
    return inferred
  try:
    kind = tasks.get(requested)
  except ValueError as error:
    raise ConfigError(f'data.task: {error}') from None
  natural = tasks.get(inferred)
  same = (kind.probabilistic and kind.class_names == natural.class_names
          and kind.label_shape(num_classes, input_shape)
          == natural.label_shape(num_classes, input_shape))
  if not same:
    raise ConfigError(f'data.task {requested!r} does not fit {where}: its labels are '
                      f'{inferred} ({num_classes} classes); use auto.')
  try:
    kind.check_outputs(num_classes, where)
  except DataError as error:
    raise ConfigError(f'data.task {requested!r}: {error}') from None
  return kind.name


# ---------------------------------------------------------------- decoding one image


def read_image(path: str, height: int, width: int, channels: int, resize: bool) -> np.ndarray:
  """One image file as float32 `[height, width, channels]` in [0, 1].

  Args:
    path: a PNG, JPEG, ... or DICOM file.
    height, width: the size wanted.
    channels: 1 or 3.
    resize: resize to (height, width); else the image must have that size.

  Raises:
    DataError: an unreadable image, or (`resize` False) one of another size; naming `path`.
  """
  pixels = to_channels(_decode(path), channels)
  if pixels.shape[:2] == (height, width):
    return pixels
  if not resize:
    raise DataError(f'{path}: image is {pixels.shape[1]}x{pixels.shape[0]} pixels (width x '
                    f'height), expected {width}x{height} like the first image; all images '
                    'must have one size: pass --image-size N to resize them all to N x N.')
  return resize_image(pixels, height, width)


def _decode(path: str) -> np.ndarray:
  """float32 `[h, w, 1 or 3]` in [0, 1]: grey images one channel, colour ones three."""
  if path.lower().endswith(DICOM):
    return _decode_dicom(path)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      image.load()
      return _pixels(image)
  except (*_DECODE_ERRORS, Image.DecompressionBombError) as error:
    raise DataError(f'{path}: unreadable image ({error}).') from None


def _pixels(image) -> np.ndarray:
  mode = image.mode
  if mode in _DEEP_MODES:
    grey = np.asarray(image).astype(np.float32) / np.float32(65535)
  elif mode == 'F':
    grey = np.asarray(image, np.float32)
  elif mode in GREY_MODES:
    return np.divide(np.asarray(image.convert('L')), 255, dtype=np.float32)[..., None]
  else:
    return np.divide(np.asarray(image.convert('RGB')), 255, dtype=np.float32)
  return np.clip(np.nan_to_num(grey), 0, 1)[..., None]


def _decode_dicom(path: str) -> np.ndarray:
  _require_pydicom(path)
  import pydicom  # pylint: disable=g-import-not-at-top
  try:
    pixels = np.asarray(pydicom.dcmread(path).pixel_array, np.float32)
  except Exception as error:  # pylint: disable=broad-except  (pydicom has many)
    raise DataError(f'{path}: unreadable DICOM image ({error}).') from None
  if pixels.ndim == 2:
    pixels = pixels[..., None]
  if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3):
    raise DataError(f'{path}: DICOM pixels of shape {pixels.shape}; only one grey or RGB '
                    'frame is read.')
  low, high = float(pixels.min()), float(pixels.max())
  return (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)


def _require_pydicom(path: str) -> None:
  if importlib.util.find_spec('pydicom') is None:
    raise DataError(f'{path}: a DICOM file; reading DICOM needs pydicom '
                    '(pip install pydicom), or convert the images to PNG.')


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
  """`[..., 1 or 3]` float32 pixels with `channels` (1 or 3) channels (see the module doc)."""
  have = pixels.shape[-1]
  if have == channels:
    return pixels
  if (have, channels) == (1, 3):
    return np.repeat(pixels, 3, axis=-1)
  if (have, channels) == (3, 1):
    return (pixels @ _LUMA)[..., None].astype(np.float32)
  raise ValueError(f'cannot convert {have} channels to {channels}.')


def resize_image(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
  """float32 `[h, w, c]` resized to `[height, width, c]` with PIL's bilinear filter."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  planes = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., k])).resize(
      (width, height), Image.Resampling.BILINEAR)) for k in range(pixels.shape[-1])]
  return np.clip(np.stack(planes, axis=-1), 0, 1).astype(np.float32)


# ---------------------------------------------------------------- the lazy array


_POOL = None
_POOL_LOCK = threading.Lock()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
  global _POOL  # pylint: disable=global-statement
  with _POOL_LOCK:
    if _POOL is None:
      _POOL = concurrent.futures.ThreadPoolExecutor(
          max_workers=min(8, os.cpu_count() or 1), thread_name_prefix='jmed-images')
    return _POOL


class ImageFiles:
  """Image files read on demand as a float32 array `[n, height, width, channels]` in [0, 1].

  `images[index]` (an int array, a list or a slice) decodes exactly the files it names, in
  parallel threads, and returns a NumPy array `[k, height, width, channels]`; an int gives
  one image. `np.asarray(images)` decodes them all. Unreadable or (without resizing)
  mis-sized images raise a `DataError` naming the file.

  Attributes:
    files: the image paths, one per example.
    height, width, channels: the size of every image.
    resize: whether images are resized to (height, width) (else they must have that size).
  """

  dtype = np.dtype(np.float32)
  ndim = 4

  def __init__(self, files: Sequence[str], height: int, width: int, channels: int,
               resize: bool):
    self.files = tuple(files)
    self.height, self.width, self.channels = int(height), int(width), int(channels)
    self.resize = bool(resize)

  @property
  def shape(self) -> Tuple[int, int, int, int]:
    return (len(self.files), self.height, self.width, self.channels)

  def __len__(self) -> int:
    return len(self.files)

  def __repr__(self) -> str:
    return f'ImageFiles(shape={self.shape}, resize={self.resize})'

  def __getitem__(self, index) -> np.ndarray:
    if isinstance(index, (int, np.integer)):
      return self._read(self.files[index])
    if isinstance(index, slice):
      positions = range(len(self.files))[index]
    else:
      positions = np.asarray(index)
      if positions.dtype == bool:
        positions = np.flatnonzero(positions)
      if positions.ndim != 1 or not np.issubdtype(positions.dtype, np.integer):
        if positions.size:
          raise IndexError(f'ImageFiles takes an int, a slice or a 1-D int array, got {index!r}.')
        positions = positions.astype(np.int64).reshape(-1)
    paths = [self.files[i] for i in positions]
    out = np.empty((len(paths), self.height, self.width, self.channels), np.float32)
    if len(paths) == 1:
      out[0] = self._read(paths[0])
    else:
      for i, pixels in enumerate(_pool().map(self._read, paths)):
        out[i] = pixels
    return out

  def __array__(self, dtype=None, copy=None):
    del copy
    images = self[:]
    return images if dtype is None else images.astype(dtype)

  def _read(self, path: str) -> np.ndarray:
    return read_image(path, self.height, self.width, self.channels, self.resize)


# ---------------------------------------------------------------- folders


def _visible(folder: str) -> Tuple[List[str], List[str]]:
  """(subfolder names, file names) of `folder`, sorted, hidden and ignored entries left out."""
  try:
    with os.scandir(folder) as entries:
      kinds = {e.name: e.is_dir() for e in entries
               if not e.name.startswith('.') and e.name.lower() not in IGNORED}
  except OSError as error:
    raise DataError(f'{folder}: cannot list the folder ({error}).') from None
  names = sorted(kinds)
  return [n for n in names if kinds[n]], [n for n in names if not kinds[n]]


def _check_image_name(path: str) -> None:
  lower = path.lower()
  if lower.endswith(DICOM):
    _require_pydicom(path)
  elif not lower.endswith(EXTENSIONS):
    raise DataError(f'{path}: not an image file (expected {", ".join(EXTENSIONS)} or '
                    f'{DICOM}); move it out of the image folder.')


def _class_files(folder: str) -> Dict[str, List[str]]:
  """class name -> its image paths (sorted by name) of a folder of class subfolders."""
  classes, loose = _visible(folder)
  if loose:
    raise DataError(f'{os.path.join(folder, loose[0])}: a file beside the class folders; put '
                    'each image in the subfolder named after its class.')
  if not classes:
    raise DataError(f'{folder}: no class subfolders; expected one subfolder per class holding '
                    'its images (or train/, validation/ and test/ folders of them).')
  out = {}
  for name in classes:
    class_dir = os.path.join(folder, name)
    nested, files = _visible(class_dir)
    if nested:
      raise DataError(f'{os.path.join(class_dir, nested[0])}: a folder inside class folder '
                      f'{class_dir}; images must lie directly in their class folder.')
    if not files:
      raise DataError(f'{class_dir}: class {name!r} holds no images.')
    paths = [os.path.join(class_dir, f) for f in files]
    for path in paths:
      _check_image_name(path)
    out[name] = paths
  return out


def _split_folders(root: str) -> Optional[Dict[str, str]]:
  """split -> its folder name when `root` holds train/validation/test folders, else None."""
  folders, _ = _visible(root)
  named = {f: SPLIT_FOLDERS[f.lower()] for f in folders if f.lower() in SPLIT_FOLDERS}
  if not named:
    return None
  others = [f for f in folders if f not in named]
  if others:
    raise DataError(f'{root}: holds split folders ({", ".join(named)}) and other folders '
                    f'({", ".join(others)}); use either train/validation/test folders of class '
                    'folders, or class folders only.')
  by_split = {}
  for folder, split in named.items():
    if split in by_split:
      raise DataError(f'{root}: two {split} folders, {by_split[split]} and {folder}.')
    by_split[split] = folder
  missing = [s for s in SPLITS if s not in by_split]
  if missing:
    raise DataError(f'{root}: split folder(s) {", ".join(missing)} missing; with split folders '
                    'give train/, validation/ (or val/) and test/.')
  return {split: by_split[split] for split in SPLITS}


def _scan(root: str) -> Tuple[Dict[str, Dict[str, List[str]]], Optional[Dict[str, str]]]:
  """(part -> class -> paths, split -> folder name or None); parts are the splits, or 'all'."""
  if not os.path.isdir(root):
    if not os.path.exists(root):
      raise MissingDataError(f'Image folder not found: {root}')
    raise DataError(f'{root}: not a folder; an image source is a folder of class subfolders.')
  folders = _split_folders(root)
  if folders is None:
    return {'all': _class_files(root)}, None
  _, loose = _visible(root)
  if loose:
    raise DataError(f'{os.path.join(root, loose[0])}: a file beside the split folders.')
  return {split: _class_files(os.path.join(root, folders[split])) for split in SPLITS}, folders


def _first_images(parts, classes, data) -> Tuple[int, int, int]:
  """(height, width, channels) of the inputs; decodes the first image of every class."""
  first = next(iter(next(iter(parts.values())).values()))[0]
  pixels = _decode(first)
  channels = data.channels or pixels.shape[-1]
  if channels not in (1, 3):
    raise ConfigError(f'data.channels must be 0, 1 or 3, got {data.channels}.')
  if data.image_size < 0:
    raise ConfigError(f'data.image_size must be >= 0, got {data.image_size}.')
  height, width = ((data.image_size,) * 2 if data.image_size else pixels.shape[:2])
  for by_class in parts.values():
    for name in classes:
      if name in by_class:
        read_image(by_class[name][0], height, width, channels, bool(data.image_size))
  return int(height), int(width), int(channels)


def _load_folder(data):
  check_flags(data)
  root = os.fspath(data.path)
  parts, folders = _scan(root)
  classes = sorted(parts['train' if folders else 'all'])
  for split, by_class in parts.items():
    unknown = [c for c in by_class if c not in classes]
    if unknown:
      raise DataError(f'{os.path.join(root, folders[split], unknown[0])}: class '
                      f'{unknown[0]!r} is not among the training classes '
                      f'({", ".join(classes)}).')
  if len(classes) < 2:
    raise DataError(f'{root}: one class ({classes[0]!r}); classification needs at least two '
                    'class subfolders.')
  height, width, channels = _first_images(parts, classes, data)
  input_shape = (height, width, channels)
  task = pick_task(data.task, 'binary' if len(classes) == 2 else 'multiclass', len(classes),
                    input_shape, root)
  files, labels = {}, {}
  for part, by_class in parts.items():
    files[part], labels[part] = _ordered(by_class, classes)
  if folders:
    info = {'rule': 'folders', 'folders': folders, 'seed': None, 'fractions': None,
            'column': None, 'group_column': None}
  else:
    positions, info = _seeded_split(labels['all'], classes, data, root)
    files = {s: [files['all'][i] for i in positions[s]] for s in SPLITS}
    labels = {s: labels['all'][positions[s]] for s in SPLITS}
  info['sizes'] = {s: len(files[s]) for s in SPLITS}
  resize = bool(data.image_size)
  splits = {s: (ImageFiles(files[s], height, width, channels, resize), labels[s])
            for s in SPLITS}
  preprocessing = {'source': 'images', 'classes': list(classes), 'task': task,
                   'image_size': int(data.image_size), 'channels': channels,
                   'height': height, 'width': width}
  return _dataset(name=os.path.basename(os.path.normpath(root)), splits=splits,
                  num_classes=len(classes), task=task, input_shape=input_shape,
                  preprocessing=preprocessing, split_info=info)


def _seeded_split(labels, classes, data, root):
  """(split -> positions into the files, split info) of the files without split folders."""
  fractions = jsplits.fractions_of(data)
  rule = 'stratified' if data.split in ('auto', 'stratified') else data.split
  info = {'rule': rule, 'seed': data.split_seed, 'fractions': list(fractions),
          'column': None, 'group_column': None}
  names = [classes[i] for i in labels]
  if rule == 'stratified':
    try:
      positions = jsplits.stratified(names, data.split_seed, fractions)
    except ValueError as error:  # a class too rare to be in every split
      note = f'stratified split impossible ({error}); split at random instead'
      _LOG.warning('%s: %s.', root, note)
      info.update(rule='random', note=note)
      positions = jsplits.random(len(labels), data.split_seed, fractions)
  elif rule == 'random':
    positions = jsplits.random(len(labels), data.split_seed, fractions)
  else:
    raise ConfigError(f"data.split {data.split!r} does not apply to images; use auto, "
                      "stratified or random (or train/validation/test folders).")
  for split in SPLITS:
    if len(positions[split]) == 0:
      raise DataError(f'{root}: the {split} split of {len(labels)} images is empty; add images '
                      'or change --validation-fraction / --test-fraction.')
  return positions, info


def _featurize_folder(path: str, preprocessing: dict):
  """(inputs, labels or None, ids) of an image, a flat folder or a class folder."""
  spec = (preprocessing['height'], preprocessing['width'], preprocessing['channels'],
          bool(preprocessing['image_size']))
  root = os.fspath(path)
  if os.path.isfile(root):
    _check_image_name(root)
    files, labels, ids = [root], None, [os.path.basename(root)]
  else:
    files, labels = _folder_rows(root, preprocessing['classes'])
    ids = [os.path.relpath(f, root) for f in files]
  inputs = ImageFiles(files, *spec)
  inputs[:1]  # pylint: disable=pointless-statement  (an early error for a bad first image)
  return inputs, labels, ids


def _folder_rows(root: str, classes: Sequence[str]):
  """(files, labels or None) of a flat folder of images or a (split) folder of classes."""
  folders, loose = _visible(root)
  if not folders:
    if not loose:
      raise DataError(f'{root}: no images.')
    files = [os.path.join(root, f) for f in loose]
    for path in files:
      _check_image_name(path)
    return files, None
  parts, split_folders = _scan(root)
  files, labels = [], []
  for part, by_class in parts.items():
    for name in sorted(by_class):
      if name not in classes:
        where = os.path.join(root, split_folders[part], name) if split_folders else (
            os.path.join(root, name))
        raise DataError(f'{where}: class {name!r} was not a training class '
                        f'({", ".join(classes)}).')
    part_files, part_labels = _ordered(by_class, classes)
    files += part_files
    labels += part_labels.tolist()
  return files, np.array(labels, np.int32)


def _ordered(by_class: Dict[str, List[str]], classes: Sequence[str]):
  """(paths, int32 class ids) of one split's images: sorted by file name across classes,
  ties by class id."""
  pairs = sorted((os.path.basename(path), i, path) for i, name in enumerate(classes)
                 for path in by_class.get(name, []))
  return [path for _, _, path in pairs], np.array([i for _, i, _ in pairs], np.int32)
