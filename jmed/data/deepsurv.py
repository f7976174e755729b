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

Any file in this layout (any number of covariates) is also the user source 'deepsurv'
(`load_user`, `featurize`; `--data my.h5`): the same code with the file's path, the validation
fraction and seed of `DataConfig`, and the standardisation saved as `preprocessing`
({'source': 'deepsurv', 'mean': [...], 'std': [...]}). `featurize` reads every group of a new
file in this layout ('train' then 'test', whichever it has; `x` alone is enough, labels come
when every group also has `t` and `e`), standardised with the saved statistics; its rows are
named 'train/12', 'test/3' (the 0-based index into the group's arrays, as h5py indexes them).

One quirk of the real files: METABRIC's test group has one censored subject at
time 0, so times must be >= 0 (not > 0).

h5py is imported lazily, so the rest of `jmed.data` works without it.
"""

import os
from typing import Dict, Optional, Tuple

import numpy as np

from jmed import tasks
from jmed.errors import ConfigError, DataError, MissingDataError

NAMES = ('metabric', 'support')
FILES = {'metabric': 'metabric_IHC4_clinical_train_test.h5',
         'support': 'support_train_test.h5'}
NUM_FEATURES = {'metabric': 9, 'support': 14}
SUBDIR = 'survival'
URL = 'https://github.com/jaredleekatzman/DeepSurv/tree/master/experiments/data'
GROUPS = ('train', 'test')
SPLITS = ('train', 'validation', 'test')
SPLIT_RULE = 'file groups + stratified validation'
# DataConfig fields that name table columns or split rules: no meaning for an HDF5 file.
_TABLE_FIELDS = ('label_column', 'time_column', 'event_column', 'feature_columns',
                 'ignore_columns', 'split_column', 'group_column', 'treatment_column',
                 'potential_outcome_columns')

Split = Tuple[np.ndarray, np.ndarray]
Group = Tuple[np.ndarray, np.ndarray, np.ndarray]  # x, t, e.
Stats = Tuple[np.ndarray, np.ndarray]  # mean, std: float64 [d].


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
  splits, _ = load_file(path_of(name, data_dir), validation_fraction, seed,
                        num_features=NUM_FEATURES[name])
  return splits


def load_file(path: str, validation_fraction: float, seed: int,
              num_features: Optional[int] = None) -> Tuple[Dict[str, Split], Stats]:
  """Any file in DeepSurv's layout as 'train', 'validation' and 'test' (see `load`).

  Returns:
    (split name -> `(x, y)` as `load` returns them, the (mean, std) float64 `[d]` of the
    reduced 'train' split that standardised them).

  Raises:
    MissingDataError: no such file. DataError: bad content (naming the file and group), or a
      validation split that cannot be stratified by event.
  """
  groups = read(path, num_features=num_features)
  x, t, e = groups['train']
  train, valid = _split(e, validation_fraction, seed, path)
  raw = {'train': (x[train], t[train], e[train]),
         'validation': (x[valid], t[valid], e[valid]),
         'test': groups['test']}
  mean, std = standardisation(raw['train'][0])
  return {split: (_standardised(x, mean, std), _labels(t, e))
          for split, (x, t, e) in raw.items()}, (mean, std)


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
  return _read(path, num_features, every_group=True)


def standardisation(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Column mean and std, float64 `[d]`, of `x` `[n, d]`; std 0 becomes 1."""
  x = np.asarray(x, np.float64)
  mean, std = x.mean(axis=0), x.std(axis=0)
  return mean, np.where(std > 0, std, 1.0)


# ---------------------------------------------------------------- the user source 'deepsurv'


def load_user(data, *, text=None, molecule=None):
  """The `Dataset` of the user's DeepSurv-layout file `data.path` (a `DataConfig`): the train
  group less a `data.validation_fraction` validation split (stratified by event, seeded by
  `data.split_seed`), the test group as 'test', standardised with the reduced train split's
  statistics. `text` and `molecule` are not used.

  Raises:
    ConfigError: a table flag (--label-column, ...), a task other than survival, a split rule
      other than auto / stratified, or a validation fraction outside (0, 1).
    MissingDataError / DataError: as `load_file`.
  """
  from jmed.data.datasets import Dataset  # pylint: disable=g-import-not-at-top
  del text, molecule
  _check_config(data)
  path = os.fspath(data.path)
  splits, (mean, std) = load_file(path, data.validation_fraction, data.split_seed)
  sizes = {split: int(len(y)) for split, (_, y) in splits.items()}
  split_info = {'rule': SPLIT_RULE, 'seed': data.split_seed, 'fractions': None,
                'validation_fraction': data.validation_fraction, 'stratify': 'e',
                'column': None, 'group_column': None, 'sizes': sizes}
  preprocessing = {'source': 'deepsurv', 'mean': mean.tolist(), 'std': std.tolist()}
  return Dataset(name=os.path.splitext(os.path.basename(path))[0], splits=splits,
                 num_classes=1, task='survival', input_shape=splits['train'][0].shape[1:],
                 preprocessing=preprocessing, split_info=split_info)


def featurize(path: str, data, preprocessing: dict, run_dir: Optional[str] = None, *,
              text=None, molecule=None):
  """The rows of every group of a new file in DeepSurv's layout ('train' then 'test',
  whichever it has), standardised with the saved `preprocessing`; labels (time, event) when
  every group has `t` and `e`, else None; ids 'train/12', 'test/3' (0-based index in the group).

  Raises:
    MissingDataError: no such file. DataError: neither group, bad content, or another number
      of covariates than training had (naming the file and group).
  """
  from jmed.data.user import Rows  # pylint: disable=g-import-not-at-top
  del data, run_dir, text, molecule
  mean = np.asarray(preprocessing['mean'], np.float64)
  std = np.asarray(preprocessing['std'], np.float64)
  groups = _read(path, len(mean), every_group=False)
  labelled = all(t is not None for _, t, _ in groups.values())
  inputs = np.concatenate([_standardised(x, mean, std) for x, _, _ in groups.values()])
  labels = (np.concatenate([_labels(t, e) for _, t, e in groups.values()])
            if labelled else None)
  ids = [f'{group}/{i}' for group, (x, _, _) in groups.items() for i in range(len(x))]
  return Rows(inputs=inputs, labels=labels, ids=ids)


def _check_config(data) -> None:
  given = [field for field in _TABLE_FIELDS if getattr(data, field)]
  if given:
    raise ConfigError(f'{", ".join(given)} name table columns; a DeepSurv HDF5 file has the '
                      'groups train and test with x (covariates), t (time) and e (event).')
  kind = tasks.TASKS.get(data.task)  # None for 'auto'
  if kind is not None and not kind.column_roles:
    raise ConfigError(f'task {data.task!r} does not fit a DeepSurv file, which holds survival '
                      'data (task survival).')
  if data.split not in ('auto', 'stratified'):
    raise ConfigError(f'split {data.split!r} does not apply to a DeepSurv file: test is its '
                      'test group, validation a stratified share of its train group.')
  if not 0.0 < data.validation_fraction < 1.0:
    raise ConfigError(f'validation_fraction must be in (0, 1), got {data.validation_fraction}.')


def _standardised(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  return ((x - mean) / std).astype(np.float32)


def _labels(t: np.ndarray, e: np.ndarray) -> np.ndarray:
  return np.stack([t, e], axis=1).astype(np.float32)


# ---------------------------------------------------------------- reading


def _read(path: str, num_features: Optional[int], *, every_group: bool
          ) -> Dict[str, Group]:
  """Group name -> (x, t, e) of the file's groups in `GROUPS` order.

  With `every_group`, both groups and x, t and e in each are required; else at least one
  group, and t and e may be absent together (then None).
  """
  h5py = _h5py()
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MissingDataError(f'Survival file not found: {path}')
  groups = {}
  try:
    with h5py.File(path, 'r') as f:
      present = [g for g in GROUPS if g in f and isinstance(f[g], h5py.Group)]
      absent = [g for g in GROUPS if g not in present]
      if not present or (every_group and absent):
        raise DataError(f'{path}: missing HDF5 group {absent[0]!r} (has '
                        f'{sorted(f.keys())}).')
      for group in present:
        groups[group] = _read_group(f, path, group, every_group)
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


def _read_group(f, path: str, group: str, labels_needed: bool):
  """(x, t, e) arrays of one group; t and e None when absent and not needed."""
  keys = [k for k in ('x', 't', 'e') if k in f[group]]
  required = ('x', 't', 'e') if labels_needed or 't' in keys or 'e' in keys else ('x',)
  missing = [k for k in required if k not in keys]
  if missing:
    raise DataError(f'{path}, group {group!r}: missing dataset(s) '
                    f'{", ".join(missing)}.')
  return tuple(np.asarray(f[group][k][()]) if k in keys else None for k in 'xte')


def _check_group(path, group, x, t, e, num_features) -> Group:
  where = f'{path}, group {group!r}'
  if x.ndim != 2:
    raise DataError(f'{where}: expected x [n, d]; got shape {x.shape}.')
  if x.shape[0] == 0:
    raise DataError(f'{where}: no rows.')
  if num_features is not None and x.shape[1] != num_features:
    raise DataError(f'{where}: {x.shape[1]} covariates, expected '
                    f'{num_features}.')
  if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
    raise DataError(f'{where}: x has non-numeric dtype {x.dtype}.')
  if not np.isfinite(x).all():
    raise DataError(f'{where}: x has {int((~np.isfinite(x)).sum())} '
                    'non-finite values (first at index '
                    f'{int(np.argmax(~np.isfinite(x).all(axis=1)))}).')
  if t is None:
    return x.astype(np.float32), None, None
  t, e = _check_labels(where, x, t, e)
  return x.astype(np.float32), t, e


def _check_labels(where, x, t, e) -> Tuple[np.ndarray, np.ndarray]:
  if t.ndim != 1 or e.ndim != 1:
    raise DataError(f'{where}: expected x [n, d], t [n], e [n]; got shapes '
                    f'{x.shape}, {t.shape}, {e.shape}.')
  if not x.shape[0] == t.shape[0] == e.shape[0]:
    raise DataError(f'{where}: lengths differ: x {x.shape[0]}, t {t.shape[0]}, '
                    f'e {e.shape[0]}.')
  for key, array in (('t', t), ('e', e)):
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
      raise DataError(f'{where}: {key} has non-numeric dtype {array.dtype}.')
  if not np.isfinite(t).all():
    raise DataError(f'{where}: t has {int((~np.isfinite(t)).sum())} '
                    'non-finite values (first at index '
                    f'{int(np.argmax(~np.isfinite(t)))}).')
  if (t < 0).any():
    raise DataError(f'{where}: {int((t < 0).sum())} negative times (first at '
                    f'index {int(np.argmax(t < 0))}: {t[t < 0][0]}).')
  if not np.isin(e, (0, 1)).all():
    bad = np.unique(e[~np.isin(e, (0, 1))])[:5]
    raise DataError(f'{where}: e must be 0 or 1; found {bad.tolist()} (first at index '
                    f'{int(np.argmax(~np.isin(e, (0, 1))))}).')
  return t.astype(np.float32), e.astype(np.int32)


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
