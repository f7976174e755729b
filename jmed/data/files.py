"""Reading a user's table (CSV, Parquet, JSON Lines) and naming what is wrong in it.

Every message names the file, and where it can the row and the column: row 1 is the first data
row (the one after a CSV's header), so a CSV's row N is its line N + 1. A table's index holds
these 0-based data rows, and keeps them when rows are dropped, so messages about later steps
still point into the file.

pandas is imported on first use.
"""

import csv
import os
from typing import List, Optional, Sequence

import numpy as np

from jmed.errors import DataError, MissingDataError

TABLE_SUFFIXES = ('.csv', '.csv.gz', '.tsv', '.parquet', '.jsonl', '.ndjson', '.jsonl.gz')
SPLIT_COLUMN = 'split'  # a column of this name assigns rows to splits unless told otherwise


def read_table(path: str):
  """Reads a table; returns a `pandas.DataFrame` indexed by 0-based data row.

  CSV and TSV cells are read as strings ('' where empty) so that every conversion, and its
  error message, is jmed's; Parquet keeps its column types; JSON Lines (one object per line)
  keeps JSON's types.

  Raises:
    MissingDataError: `path` does not exist.
    DataError: an unknown suffix, an unreadable or empty file, no data rows, or duplicate or
      empty column names (naming the file).
  """
  pd = _pandas()
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MissingDataError(f'Data file not found: {path}')
  suffix = _suffix(path)
  if os.path.getsize(path) == 0:
    raise DataError(f'{path}: the file is empty.')
  try:
    if suffix in ('.csv', '.csv.gz', '.tsv'):
      frame = pd.read_csv(path, sep='\t' if suffix == '.tsv' else ',', dtype=str,
                          keep_default_na=False, skip_blank_lines=True)
    elif suffix == '.parquet':
      frame = pd.read_parquet(path)
    else:
      frame = pd.read_json(path, lines=True, dtype=False)
  except pd.errors.EmptyDataError:
    raise DataError(f'{path}: the file is empty.') from None
  except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
    raise DataError(f'{path}: cannot read it as {suffix[1:]}: {error}') from None
  return _checked(frame, path)


def _suffix(path: str) -> str:
  lower = path.lower()
  for suffix in TABLE_SUFFIXES:
    if lower.endswith(suffix):
      return suffix
  raise DataError(f'{path}: unknown table format; expected one of {", ".join(TABLE_SUFFIXES)}.')


def _checked(frame, path: str):
  columns = [str(c) for c in frame.columns]
  if any(not c.strip() or c.startswith('Unnamed: ') for c in columns):
    raise DataError(f'{path}: a column has no name; header is {columns}.')
  duplicated = sorted({c for c in columns if columns.count(c) > 1})
  if duplicated or any('.' in c and c.rsplit('.', 1)[0] in columns
                       and c.rsplit('.', 1)[1].isdigit() for c in columns):
    raise DataError(f'{path}: duplicate column names in header {columns}.')
  if len(frame) == 0:
    raise DataError(f'{path}: the file has a header but no data rows.')
  frame.columns = columns
  return frame.reset_index(drop=True)


def columns_of(spec: str) -> List[str]:
  """'a, b' -> ['a', 'b']; '' -> []. A name holding a comma is double-quoted, as in a CSV
  header: 'a, "b, c"' -> ['a', 'b, c'] (`join_columns` writes such specs)."""
  row = next(csv.reader([spec or ''], skipinitialspace=True), [])
  return [name.strip() for name in row if name.strip()]


def join_columns(names: Sequence[str]) -> str:
  """The spec `columns_of` reads back as `names`: comma-separated, quoted where needed."""
  return ','.join('"' + n.replace('"', '""') + '"' if ',' in n or '"' in n else n
                  for n in names)


def require_columns(frame, columns: Sequence[str], path: str,
                    flag: Optional[str] = None) -> None:
  """Raises `DataError` naming the columns of `columns` missing from `frame`, the header and
  the flag that named them."""
  missing = [c for c in columns if c not in frame.columns]
  if missing:
    given = f' (given by {flag})' if flag else ''
    raise DataError(f'{path}: no column {", ".join(repr(c) for c in missing)}{given}; the header '
                    f'is {list(frame.columns)}.')


def where(path: str, row_index, column: Optional[str] = None) -> str:
  """"path, row 12, column 'age'" for the 0-based data row `row_index`."""
  text = f'{path}, row {int(row_index) + 1}'
  return text + (f', column {column!r}' if column is not None else '')


def stem(path: str) -> str:
  """A table's name: its file name without a `TABLE_SUFFIXES` suffix ('mols.csv.gz' -> 'mols')."""
  name = os.path.basename(os.fspath(path))
  for suffix in sorted(TABLE_SUFFIXES, key=len, reverse=True):
    if name.lower().endswith(suffix):
      return name[:-len(suffix)]
  return os.path.splitext(name)[0]


def is_missing(values) -> np.ndarray:
  """bool [n]: which cells of a column are missing (None, NaN or a blank string)."""
  pd = _pandas()
  series = pd.Series(values)
  blank = series.map(lambda v: isinstance(v, str) and not v.strip())
  return np.asarray(series.isna() | blank, bool)


def numeric(frame, column: str, path: str, *, allow_missing: bool = False) -> np.ndarray:
  """Column `column` as float64 [n].

  Missing cells become NaN when `allow_missing`, else they are an error; non-numeric and
  infinite cells are always errors.

  Raises:
    DataError: naming the file, the first bad row and the column, and its value.
  """
  pd = _pandas()
  raw = frame[column]
  missing = is_missing(raw)
  values = pd.to_numeric(raw.where(~missing, None), errors='coerce').to_numpy(np.float64)
  bad = np.isnan(values) & ~missing
  if bad.any():
    row = frame.index[np.argmax(bad)]
    raise DataError(f'{where(path, row, column)}: {raw.loc[row]!r} is not a number.')
  if np.isinf(values).any():
    row = frame.index[np.argmax(np.isinf(values))]
    raise DataError(f'{where(path, row, column)}: {raw.loc[row]!r} is not finite.')
  if missing.any() and not allow_missing:
    row = frame.index[np.argmax(missing)]
    raise DataError(f'{where(path, row, column)}: the value is missing.')
  return values


def _pandas():
  try:
    import pandas  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError('Reading your own tables needs pandas: pip install pandas') from error
  return pandas


def fetch(url: str, path: str, what: str, hint: str) -> str:
  """Downloads `url` to `path` (under a temporary name, renamed when complete, so a failed
  download never leaves a partial file); returns `path`.

  Raises:
    MissingDataError: the download failed (e.g. no network); the message names `what` (the
      dataset), the URL, the error and `hint` (where to put the file by hand).
  """
  import urllib.error  # pylint: disable=g-import-not-at-top
  import urllib.request  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  partial = path + '.partial'
  try:
    urllib.request.urlretrieve(url, partial)
  except (urllib.error.URLError, OSError) as error:
    if os.path.exists(partial):
      os.remove(partial)
    raise MissingDataError(f'{what}: download of {url} failed ({error}); {hint}') from None
  os.replace(partial, path)
  return path
