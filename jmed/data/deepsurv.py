"""DeepSurv's METABRIC and SUPPORT survival datasets.

Source: the HDF5 files of the DeepSurv repository (Katzman et al., "DeepSurv",
BMC Medical Research Methodology 18:24, 2018), `experiments/data` (see `URL`),
kept in `<data_dir>/survival/`:

  metabric_IHC4_clinical_train_test.h5  9 covariates, 1,523 train / 381 test.
  support_train_test.h5                 14 covariates, 7,098 train / 1,775 test.

Each file has HDF5 groups `train` and `test`, each with `x` float32 `[n, d]`
(covariates), `t` float32 `[n]` (time of event or censoring) and `e` int32 `[n]`
(1 event, 0 censored).

Splits: 'test' is DeepSurv's test group unchanged, so test results stay
comparable to the paper. 'validation' is carved from DeepSurv's train group
(`validation_fraction` of it, stratified by event, seeded with scikit-learn's
`train_test_split`, so deterministic) and 'train' is the rest; both keep the
file's row order. Covariates are standardised with the mean and standard
deviation of this reduced 'train' split (a constant column gets std 1), applied
to all three splits.

Labels are float32 `[n, 2]`: column 0 the time, column 1 the event (1.0/0.0),
ready for `jmed.survival.cox_loss(risk, y[:, 0], y[:, 1])`.

One quirk of the real files: METABRIC's test group has one censored subject at
time 0, so times must be >= 0 (not > 0).

h5py is imported lazily, so the rest of `jmed.data` works without it.
"""

import os
from typing import Dict, Tuple

import numpy as np

from jmed.errors import DataError, MissingDataError

NAMES = ('metabric', 'support')
FILES = {'metabric': 'metabric_IHC4_clinical_train_test.h5',
         'support': 'support_train_test.h5'}
NUM_FEATURES = {'metabric': 9, 'support': 14}
SUBDIR = 'survival'
URL = 'https://github.com/jaredleekatzman/DeepSurv/tree/master/experiments/data'
GROUPS = ('train', 'test')
SPLITS = ('train', 'validation', 'test')

Split = Tuple[np.ndarray, np.ndarray]
Group = Tuple[np.ndarray, np.ndarray, np.ndarray]  # x, t, e.


def load(name: str, data_dir: str, *, validation_fraction: float = 0.2,
         seed: int = 0) -> Dict[str, Split]:
  """Loads METABRIC or SUPPORT into 'train', 'validation' and 'test'.

  Args:
    name: 'metabric' or 'support'.
    data_dir: the data root; the file is read from `<data_dir>/survival/`.
    validation_fraction: fraction of DeepSurv's train group held out as
      'validation' (stratified by event), in (0, 1).
    seed: seed of the validation split.

  Returns:
    Split name -> `(x, y)`: float32 `[n, d]` standardised covariates and
    float32 `[n, 2]` labels (time, event in {0.0, 1.0}).

  Raises:
    DataError: unknown `name`, bad `validation_fraction`, or bad file content
      (names the file and group).
    MissingDataError: the file does not exist (names its path and `URL`).
  """
  if name not in NAMES:
    raise DataError(f'Unknown survival dataset {name!r}; valid: {NAMES}.')
  if not 0.0 < validation_fraction < 1.0:
    raise DataError('validation_fraction must be in (0, 1), got '
                    f'{validation_fraction}.')
  path = path_of(name, data_dir)
  groups = read(path, num_features=NUM_FEATURES[name])
  x, t, e = groups['train']
  train, valid = _split(e, validation_fraction, seed, path)
  raw = {'train': (x[train], t[train], e[train]),
         'validation': (x[valid], t[valid], e[valid]),
         'test': groups['test']}
  mean, std = standardisation(raw['train'][0])
  return {split: (((x - mean) / std).astype(np.float32),
                  np.stack([t, e], axis=1).astype(np.float32))
          for split, (x, t, e) in raw.items()}


def path_of(name: str, data_dir: str) -> str:
  """`<data_dir>/survival/<FILES[name]>`; MissingDataError if it is absent."""
  path = os.path.join(os.fspath(data_dir), SUBDIR, FILES[name])
  if not os.path.isfile(path):
    raise MissingDataError(f'{name} survival file not found: {path} (download '
                           f'{FILES[name]} from {URL} into that folder)')
  return path


def read(path: str, num_features=None) -> Dict[str, Group]:
  """Reads and validates the `train` and `test` groups of a DeepSurv HDF5 file.

  Args:
    path: the `.h5` file.
    num_features: expected number of covariates, or None to accept any (the
      same in both groups).

  Returns:
    Group name -> `(x, t, e)`: float32 `[n, d]`, float32 `[n]`, int32 `[n]`.

  Raises:
    MissingDataError: `path` does not exist.
    DataError: not readable as HDF5, a missing group or key, inconsistent
      shapes, non-finite `x` or `t`, `t < 0`, or `e` not in {0, 1}; naming the
      file and group.
  """
  h5py = _h5py()
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MissingDataError(f'Survival file not found: {path}')
  groups = {}
  try:
    with h5py.File(path, 'r') as f:
      for group in GROUPS:
        if group not in f or not isinstance(f[group], h5py.Group):
          raise DataError(f'{path}: missing HDF5 group {group!r} (has '
                          f'{sorted(f.keys())}).')
        missing = [k for k in ('x', 't', 'e') if k not in f[group]]
        if missing:
          raise DataError(f'{path}, group {group!r}: missing dataset(s) '
                          f'{", ".join(missing)}.')
        groups[group] = tuple(np.asarray(f[group][k][()]) for k in 'xte')
  except (OSError, KeyError, ValueError, TypeError) as error:
    if isinstance(error, DataError):
      raise
    raise DataError(f'Corrupt survival file {path}: {error}') from error
  widths = set()
  for group, (x, t, e) in groups.items():
    groups[group] = _check_group(path, group, x, t, e, num_features)
    widths.add(x.shape[1])
  if len(widths) != 1:
    raise DataError(f'{path}: groups have different numbers of covariates '
                    f'({sorted(widths)}).')
  return groups


def standardisation(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Column mean and std, float64 `[d]`, of `x` `[n, d]`; std 0 becomes 1."""
  x = np.asarray(x, np.float64)
  mean, std = x.mean(axis=0), x.std(axis=0)
  return mean, np.where(std > 0, std, 1.0)


def _check_group(path, group, x, t, e, num_features) -> Group:
  where = f'{path}, group {group!r}'
  if x.ndim != 2 or t.ndim != 1 or e.ndim != 1:
    raise DataError(f'{where}: expected x [n, d], t [n], e [n]; got shapes '
                    f'{x.shape}, {t.shape}, {e.shape}.')
  if not x.shape[0] == t.shape[0] == e.shape[0]:
    raise DataError(f'{where}: lengths differ: x {x.shape[0]}, t {t.shape[0]}, '
                    f'e {e.shape[0]}.')
  if x.shape[0] == 0:
    raise DataError(f'{where}: no rows.')
  if num_features is not None and x.shape[1] != num_features:
    raise DataError(f'{where}: {x.shape[1]} covariates, expected '
                    f'{num_features}.')
  for key, array in (('x', x), ('t', t), ('e', e)):
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
      raise DataError(f'{where}: {key} has non-numeric dtype {array.dtype}.')
  if not np.isfinite(x).all():
    raise DataError(f'{where}: x has {int((~np.isfinite(x)).sum())} '
                    'non-finite values.')
  if not np.isfinite(t).all():
    raise DataError(f'{where}: t has {int((~np.isfinite(t)).sum())} '
                    'non-finite values.')
  if (t < 0).any():
    raise DataError(f'{where}: {int((t < 0).sum())} negative times (first at '
                    f'row {int(np.argmax(t < 0))}: {t[t < 0][0]}).')
  if not np.isin(e, (0, 1)).all():
    bad = np.unique(e[~np.isin(e, (0, 1))])[:5]
    raise DataError(f'{where}: e must be 0 or 1; found {bad.tolist()}.')
  return x.astype(np.float32), t.astype(np.float32), e.astype(np.int32)


def _split(event, fraction, seed, path) -> Tuple[np.ndarray, np.ndarray]:
  """Sorted (train, validation) row indices, stratified by event."""
  from sklearn.model_selection import train_test_split  # pylint: disable=g-import-not-at-top
  try:
    train, valid = train_test_split(np.arange(event.shape[0]),
                                    test_size=fraction, random_state=seed,
                                    shuffle=True, stratify=event)
  except ValueError as error:
    raise DataError(f'{path}: cannot carve a {fraction} validation split '
                    f'stratified by event from the train group: {error}'
                    ) from error
  return np.sort(train), np.sort(valid)


def _h5py():
  try:
    import h5py  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError('The survival datasets need h5py: pip install h5py'
                      ) from error
  return h5py
