"""IHDP: the semi-synthetic treatment-effect benchmark (Hill 2011), 10 replications.

Source: the CSV files of the CEVAE repository (Louizos et al. 2017), `datasets/IHDP/csv/`
(`URL`), kept as `<data_dir>/ihdp/ihdp_npci_<k>.csv`, k = 1 ... 10. Each file has no header and
747 rows (139 treated) of 30 numbers (`COLUMNS`): the treatment (0/1), the factual outcome, the
counterfactual outcome, mu0 and mu1 (the noise-free expected outcomes under control and under
treatment), then the 25 covariates x1 ... x25 (x1-x6 continuous, x7-x25 binary, x14 coded 1/2).
The covariates and treatments are the same in every replication; the simulated outcomes differ.

Dataset names (`NAMES`): 'ihdp_1' ... 'ihdp_10', and 'ihdp' = replication 1.

Labels are float32 [n, 4] (treatment, factual outcome, mu0, mu1), the layout of the task
'treatment_effect'; the counterfactual outcome is not kept (mu1 - mu0 is the true effect the
metrics use). Inputs are float32 [n, 25]: every covariate standardised with the training split's
mean and population standard deviation (a constant column gets std 1), as the 'table' source
does, so the same file read as a user table gives the same inputs (see below).

Split (per replication, as Shalit et al. 2017: 63/27/10 train/validation/test): a seeded random
permutation of the 747 rows, seeded by the replication number k, cut at 63 % and 90 %
(`jmed.data.splits.random`): 470 / 202 / 75 units. The splits keep the permutation's order.
In-sample metrics are those of train + validation, out-of-sample those of test.

The same split and inputs come from the user-table route: a copy of the file with a header
(`table(path).to_csv(...)`) trained with

  --data ihdp_1.csv --treatment-column treatment --label-column y_factual \
  --potential-outcome-columns mu0,mu1 --ignore-columns y_cfactual \
  --split random --split-seed 1 --validation-fraction 0.27 --test-fraction 0.1

Without a data_dir the file is downloaded once into `<cache_dir>/ihdp/`.
"""

import os
from typing import Dict, Optional, Tuple

import numpy as np

from jmed.data import files
from jmed.data import splits as jsplits
from jmed.errors import DataError, MissingDataError

SUBDIR = 'ihdp'
REPLICATIONS = tuple(range(1, 11))
NAMES = ('ihdp',) + tuple(f'ihdp_{k}' for k in REPLICATIONS)
URL = ('https://raw.githubusercontent.com/AMLab-Amsterdam/CEVAE/master/datasets/IHDP/csv/'
       'ihdp_npci_{k}.csv')
COLUMNS = (('treatment', 'y_factual', 'y_cfactual', 'mu0', 'mu1')
           + tuple(f'x{i}' for i in range(1, 26)))
NUM_COVARIATES = 25
FRACTIONS = (1.0 - 0.27 - 0.1, 0.27, 0.1)  # train, validation, test (as DataConfig computes)
NUM_OUTCOMES = 2  # the model's outputs: the two potential outcomes

Split = Tuple[np.ndarray, np.ndarray]


def replication_of(name: str) -> int:
  """The replication k of dataset `name` ('ihdp' is 1, 'ihdp_<k>' is k).

  Raises:
    DataError: `name` is not one of `NAMES`.
  """
  if name not in NAMES:
    raise DataError(f'Unknown IHDP dataset {name!r}; valid: {", ".join(NAMES)}.')
  return 1 if name == 'ihdp' else int(name.split('_')[1])


def filename(k: int) -> str:
  return f'ihdp_npci_{k}.csv'


def local_path(k: int, data_dir: str) -> str:
  """`<data_dir>/ihdp/ihdp_npci_<k>.csv`."""
  return os.path.join(os.fspath(data_dir), SUBDIR, filename(k))


def find(k: int, data_dir: Optional[str] = None, cache_dir: Optional[str] = None) -> str:
  """The path of replication `k`: the local file under `data_dir`, or (no `data_dir`) the
  file downloaded once into `<cache_dir>/ihdp/`.

  Raises:
    MissingDataError: the local file is absent (naming its path and the download URL), or the
      download failed.
  """
  if data_dir is None:
    return download(k, os.path.join(os.fspath(cache_dir), SUBDIR))
  path = local_path(k, data_dir)
  if not os.path.isfile(path):
    raise MissingDataError(f'IHDP replication {k} not found: {path} (download it from '
                           f'{URL.format(k=k)} into that folder).')
  return path


def download(k: int, folder: str) -> str:
  """Downloads replication `k` from the CEVAE repository into `folder` unless it is there;
  returns its path. Written under a temporary name and renamed when complete.

  Raises:
    MissingDataError: the download failed (e.g. no network).
  """
  path = os.path.join(folder, filename(k))
  if os.path.isfile(path):
    return path
  return files.fetch(URL.format(k=k), path, 'IHDP', f'put the file at {path} by hand, or pass '
                     'data_dir (--data-dir) holding ihdp/.')


def read(path: str) -> np.ndarray:
  """The validated rows of an IHDP file: float64 [n, 30] in `COLUMNS` order.

  Raises:
    MissingDataError: no such file.
    DataError: a row without 30 fields, a cell that is not a finite number, or a treatment other
      than 0 / 1, naming the file, the row (its 1-based line) and the column.
  """
  import csv  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MissingDataError(f'IHDP file not found: {path}')
  try:
    with open(path, newline='') as f:
      lines = [(number, cells) for number, cells in enumerate(csv.reader(f), 1) if cells]
  except (OSError, UnicodeDecodeError, csv.Error) as error:
    raise DataError(f'{path}: not an IHDP CSV file of {len(COLUMNS)} comma-separated numbers '
                    f'per row: {error}') from None
  if not lines:
    raise DataError(f'{path}: no rows.')
  values = np.empty((len(lines), len(COLUMNS)), np.float64)
  for row, (number, cells) in enumerate(lines):
    if len(cells) != len(COLUMNS):
      raise DataError(f'{path}, row {number}: {len(cells)} fields, expected {len(COLUMNS)} '
                      '(treatment, y_factual, y_cfactual, mu0, mu1, x1 ... x25; no header).')
    for column, cell in enumerate(cells):
      try:
        values[row, column] = float(cell)
      except ValueError:
        values[row, column] = np.nan
      if not np.isfinite(values[row, column]):
        raise DataError(f'{path}, row {number}, column {column + 1} ({COLUMNS[column]}): '
                        f'{cell!r} is not a finite number.')
  treatment = values[:, 0]
  not_binary = (treatment != 0) & (treatment != 1)
  if not_binary.any():
    row = int(np.argmax(not_binary))
    raise DataError(f'{path}, row {lines[row][0]}, column 1 (treatment): {lines[row][1][0]!r}; '
                    'the treatment must be 0 or 1.')
  return values


def table(path: str):
  """An IHDP file as a `pandas.DataFrame` with the column names `COLUMNS`, e.g. to write the
  user-format CSV: `table(path).to_csv('ihdp_1.csv', index=False)`."""
  import pandas  # pylint: disable=g-import-not-at-top
  return pandas.DataFrame(read(path), columns=list(COLUMNS))


def split(n: int, replication: int) -> Dict[str, np.ndarray]:
  """Split name -> row positions: a random permutation seeded by `replication`, cut 63/27/10
  (`FRACTIONS`)."""
  return jsplits.random(n, replication, FRACTIONS)


def arrays(values: np.ndarray, replication: int) -> Dict[str, Split]:
  """'train', 'validation', 'test' -> (covariates float32 [n, 25] standardised with the train
  split's statistics, labels float32 [n, 4] (treatment, y_factual, mu0, mu1)) of `read`'s rows."""
  covariates = values[:, 5:]
  labels = values[:, [0, 1, 3, 4]].astype(np.float32)
  positions = split(len(values), replication)
  train = covariates[positions['train']]
  mean, std = train.mean(axis=0), train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  return {name: (((covariates[rows] - mean) / std).astype(np.float32), labels[rows])
          for name, rows in positions.items()}


def load(name: str, data_dir: Optional[str] = None, cache_dir: Optional[str] = None):
  """The `Dataset` of IHDP dataset `name` ('ihdp' or 'ihdp_<k>').

  Args:
    name: one of `NAMES`.
    data_dir: the data root holding `ihdp/` (read directly, nothing written); None: the file is
      downloaded into `<cache_dir>/ihdp/`.
    cache_dir: where downloads go when `data_dir` is None.

  Returns:
    A `Dataset` named `name`, task 'treatment_effect', 'train' / 'validation' / 'test' of
    470 / 202 / 75 units (see the module docstring), `split_info` recording the rule and seed.

  Raises:
    MissingDataError: the file is absent (naming its path and the URL). DataError: a corrupt file
      (naming the file and row).
  """
  from jmed.data.datasets import Dataset  # pylint: disable=g-import-not-at-top
  k = replication_of(name)
  parts = arrays(read(find(k, data_dir, cache_dir)), k)
  sizes = {s: int(len(y)) for s, (_, y) in parts.items()}
  split_info = {'rule': 'random', 'seed': k, 'fractions': list(FRACTIONS), 'column': None,
                'group_column': None, 'replication': k, 'sizes': sizes,
                'note': 'Shalit et al. 2017: 63/27/10 per replication, seeded by the replication'}
  return Dataset(name=name, splits=parts, num_classes=NUM_OUTCOMES, task='treatment_effect',
                 input_shape=(NUM_COVARIATES,), split_info=split_info)
