"""The user's own data: one file or folder, named on the command line (`--data PATH`).

A source reads one format; each is a module with two functions:

  load_user(data, *, text, molecule) -> Dataset
      splits, task and model-ready inputs, with `Dataset.preprocessing` (what turns a new file
      into inputs exactly as training did; saved with the run) and `Dataset.split_info`.
  featurize(path, data, preprocessing, run_dir, *, text, molecule) -> Rows
      a new file of the same format, made into inputs with the saved preprocessing.

Sources (`SOURCES`): 'table' (CSV / Parquet / JSON Lines: features and label columns),
'deepsurv' (HDF5 with DeepSurv's train/test groups of x, t, e), 'smiles' (a table with a SMILES
column), 'text' (a table with a text column), 'images' (a folder with one subfolder per class)
'npz' (MedMNIST's npz layout, 2D or 3D), 'conll' (token<TAB>tag lines, a blank line between
sentences: named-entity tagging; one file, or a folder with train/devel/test files) and
'records' (a folder of ArrayRecord shards and spec.json written by scripts/export_records.py,
read from disk batch by batch: `jmed.data.records`; it has no `featurize`, as a run trained on
records keeps the preprocessing of the data they were exported from). 'auto' picks one from the
path (`resolve_source`).
"""

import dataclasses
import importlib
import os
from typing import Any, List, Optional

import numpy as np

from jmed.configs import DATA_SOURCES
from jmed.data import files
from jmed.errors import ConfigError, DataError, MissingDataError

SOURCES = {'table': 'jmed.data.tabular', 'deepsurv': 'jmed.data.deepsurv',
           'smiles': 'jmed.data.moleculenet', 'text': 'jmed.data.text_files',
           'images': 'jmed.data.images', 'npz': 'jmed.data.npz', 'conll': 'jmed.data.conll',
           'records': 'jmed.data.records'}


@dataclasses.dataclass(frozen=True, eq=False)
class Rows:
  """A file made into model inputs, for prediction.

  Attributes:
    inputs: [n, ...] model inputs (a NumPy array or a lazy array of images).
    labels: [n, ...] labels in the task's layout when the file has them, else None.
    ids: [n] what names each row in predictions.csv: 'row 3' (the file's data row), an image's
      path, 'test/12', ...
  """

  inputs: Any
  labels: Optional[np.ndarray]
  ids: List[str]


def resolve_source(data) -> str:
  """The source of a `DataConfig`: `data.source`, or from the path when 'auto': a folder is
  'conll' when it holds train.tsv and test.tsv, 'records' when it holds spec.json, else
  'images'; '.conll', '.iob', '.bio' files and a '.tsv' whose first line is token<TAB>tag are
  'conll' (`jmed.data.conll.looks_like`);
  '.h5'/'.hdf5' 'deepsurv', '.npz' 'npz'; a table is 'smiles' when it has
  `data.smiles_column`, 'text' when it has `data.text_column`, else 'table'.

  Raises:
    ConfigError: an unknown source. MissingDataError: the path does not exist.
  """
  if data.source not in DATA_SOURCES:
    raise ConfigError(f'Unknown source {data.source!r}; valid: {", ".join(DATA_SOURCES)}.')
  if not os.path.exists(data.path):
    raise MissingDataError(f'Data file or folder not found: {data.path}')
  if data.source != 'auto':
    return data.source
  from jmed.data import conll  # pylint: disable=g-import-not-at-top
  if conll.looks_like(data.path):
    return 'conll'
  from jmed.data import records  # pylint: disable=g-import-not-at-top
  if records.is_records_dir(data.path):
    return 'records'
  if os.path.isdir(data.path):
    return 'images'
  lower = data.path.lower()
  if lower.endswith(('.h5', '.hdf5')):
    return 'deepsurv'
  if lower.endswith('.npz'):
    return 'npz'
  header = _header(data.path)
  if data.smiles_column in header:
    return 'smiles'
  if data.text_column in header:
    return 'text'
  return 'table'


def _header(path: str) -> List[str]:
  """A table's column names (the whole table is read for Parquet and JSON Lines)."""
  if path.lower().endswith(('.csv', '.tsv', '.csv.gz')):
    import pandas  # pylint: disable=g-import-not-at-top
    try:
      return [str(c) for c in pandas.read_csv(path, sep='\t' if path.endswith('.tsv') else ',',
                                               nrows=0).columns]
    except (ValueError, OSError, UnicodeDecodeError) as error:
      raise DataError(f'{path}: cannot read its header: {error}') from None
  return list(files.read_table(path).columns)


def source_module(source: str):
  """The module that reads `source` (imported on first use)."""
  return importlib.import_module(SOURCES[source])


def load(cfg):
  """The `Dataset` of `cfg.data` (a `TrainConfig` whose `data.path` is set)."""
  data = cfg.data
  source = resolve_source(data)
  data = dataclasses.replace(data, source=source)
  return source_module(source).load_user(data, text=cfg.text, molecule=cfg.molecule)


def featurize(path: str, cfg, preprocessing: dict, run_dir: str) -> Rows:
  """Rows of a new file `path`, made into inputs as the run in `run_dir` was trained
  (`cfg` its config, `preprocessing` its preprocessing.json)."""
  source = preprocessing['source']
  data = dataclasses.replace(cfg.data, path=path, source=source)
  if not os.path.exists(path):
    raise MissingDataError(f'Data file or folder not found: {path}')
  return source_module(source).featurize(path, data, preprocessing, run_dir, text=cfg.text,
                                         molecule=cfg.molecule)
