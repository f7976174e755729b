"""MedMNIST 3D (MedMNIST v2 / MedMNIST+, medmnist 3.x) by name: 28^3 and 64^3 volumes.

Offline: `<data_dir>/medmnist3d/<name>.npz` is read directly through `jmed.data.npz`'s reader
(validated; nothing written). Online (no data_dir): the npz is downloaded once from the Zenodo
record into `<cache_dir>/medmnist3d/` and its MD5 checked against the official one.

Names are the medmnist package's flags with its size suffix: 'adrenalmnist3d' (28^3),
'adrenalmnist3d_64' (64^3), ... MD5s, classes and split sizes are those of `INFO` in
`medmnist/info.py` of medmnist 3.0.x (Zenodo record 10519652).
"""

import dataclasses
import os
from typing import Dict, Tuple

from jmed.data import files
from jmed.errors import DataError, MissingDataError

URL = 'https://zenodo.org/records/10519652/files/{name}.npz'
SUBDIR = 'medmnist3d'


@dataclasses.dataclass(frozen=True)
class Subset:
  """One MedMNIST 3D subset (both sizes).

  Attributes:
    md5: the 28^3 npz's official MD5. md5_64: the 64^3 npz's.
    num_classes: classes. sizes: official (train, val, test) sizes.
    license: as stated by MedMNIST.
  """

  md5: str
  md5_64: str
  num_classes: int
  sizes: Tuple[int, int, int]
  license: str = 'CC BY 4.0'


SUBSETS: Dict[str, Subset] = {
    'organmnist3d': Subset('a0c5a1ff56af4f155c46d46fbb45a2fe', '58a2205adf14a9d0a189cb06dc78bf10',
                           11, (971, 161, 610)),
    'nodulemnist3d': Subset('8755a7e9e05a4d9ce80a24c3e7a256f3',
                            'c47c5b7d457bf6332200d2ea6d64ecd8', 2, (1158, 165, 310)),
    'adrenalmnist3d': Subset('bbd3c5a5576322bc4cdfea780653b1ce',
                             '17721accfe9fb005146a47d33bc54b2f', 2, (1188, 98, 298)),
    'fracturemnist3d': Subset('6aa7b0143a6b42da40027a9dda61302f',
                              'f01d7e6316aedf4210da0da5b7437b42', 3, (1027, 103, 240)),
    'vesselmnist3d': Subset('b41fd4f7e7e2feedddb201585ecafa1b',
                            '6bb274a8846e1097066dcd64e2c4520f', 2, (1335, 191, 382)),
    'synapsemnist3d': Subset('1235b78a3cd6280881dd7850a78eadb6',
                             '43bd14ebf3af9d3dd072446fedc14d5e', 2, (1230, 177, 352)),
}
NAMES = tuple(n + suffix for n in SUBSETS for suffix in ('', '_64'))


def subset(name: str) -> Tuple[Subset, str]:
  """(the `Subset` of `name`, the npz's official MD5 for its size)."""
  base, size = (name[:-3], 64) if name.endswith('_64') else (name, 28)
  if base not in SUBSETS:
    raise DataError(f'Unknown MedMNIST 3D set {name!r}; valid: {", ".join(NAMES)}.')
  info = SUBSETS[base]
  return info, (info.md5_64 if size == 64 else info.md5)


def local_path(name: str, data_dir: str) -> str:
  """`<data_dir>/medmnist3d/<name>.npz`."""
  return os.path.join(os.fspath(data_dir), SUBDIR, f'{name}.npz')


def download(name: str, folder: str) -> str:
  """Downloads `name`'s npz into `folder` unless there with the official MD5; returns its path.

  Raises:
    MissingDataError: the download failed (no network); DataError: wrong MD5.
  """
  from jmed.data.medmnist import file_digest  # pylint: disable=g-import-not-at-top
  _, md5 = subset(name)
  path = os.path.join(folder, f'{name}.npz')
  if os.path.isfile(path) and file_digest(path) == md5:
    return path
  url, partial = URL.format(name=name), path + '.partial'
  files.fetch(url, partial, name, f'put the file at {path} by hand or pass data_dir.')
  got = file_digest(partial)
  if got != md5:
    os.remove(partial)
    raise DataError(f'{url}: MD5 {got}, expected the official {md5}.')
  os.replace(partial, path)
  return path


def load(name: str, data_dir=None, cache_dir=None):
  """The `Dataset` of MedMNIST 3D set `name`.

  Args:
    name: e.g. 'adrenalmnist3d' or 'adrenalmnist3d_64' (see `NAMES`).
    data_dir: root holding `medmnist3d/<name>.npz` (read directly, nothing written); None:
      download into `<cache_dir>/medmnist3d/`.
    cache_dir: where downloads go when `data_dir` is None.

  Returns:
    A `Dataset` named `name`: float32 inputs [n, d, h, w, 1] in [0, 1], int32 class ids [n],
    the official 'train', 'validation' and 'test' splits.

  Raises:
    MissingDataError: the local file is absent (the message gives the URL); DataError: a
      corrupt file, or split sizes other than the official ones.
  """
  from jmed.configs import DataConfig  # pylint: disable=g-import-not-at-top
  from jmed.data import npz  # pylint: disable=g-import-not-at-top
  info, _ = subset(name)
  if data_dir is None:
    path = download(name, os.path.join(os.fspath(cache_dir), SUBDIR))
  else:
    path = local_path(name, data_dir)
    if not os.path.isfile(path):
      raise MissingDataError(f'MedMNIST 3D file not found: {path} (download it from '
                             f'{URL.format(name=name)})')
  dataset = npz.load_user(DataConfig(path=path, source='npz'))
  sizes = tuple(dataset.sizes[s] for s in ('train', 'validation', 'test'))
  if sizes != info.sizes or len(dataset.input_shape) != 4:
    raise DataError(f'{path}: splits of {sizes} {dataset.input_shape}, expected the official '
                    f'{info.sizes} 3D volumes of {name}.')
  return dataset
