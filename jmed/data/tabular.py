"""A user's table as features and labels: the 'table' source (CSV, TSV, Parquet, JSON Lines).

Columns. The labels are --label-column (or --time-column and --event-column for survival). The
features are --feature-columns when given, else every other column except the split column
(--split-column, or a column named 'split'), --group-column and --ignore-columns. The task is
--task, or inferred from the label columns (`jmed.data.labels`); rows are split by
`jmed.data.splits.assign` (stratified by class or by event unless told otherwise).

Features (`Preprocessor`, fitted on the training rows only, applied to every split and to new
files by `featurize`):

  * Missing cells: empty, null / NaN, or the text 'NA', 'N/A', 'NaN' or 'null' (any case).
    The same holds in the label columns.
  * A column is numeric when at least `NUMERIC_SHARE` (90%) of its non-missing training cells
    are numbers (Parquet and JSON numbers always are). Its other cells are then taken for typos:
    a `DataError` names the first (file, row, column, value) rather than one-hot encoding the
    column. A column whose every cell is a boolean (true / false, any case) is numeric 0/1.
    Any other column is categorical.
  * Numeric columns are standardised with the training rows' mean and standard deviation
    (population std; a constant column gets std 1, so it becomes 0). 'inf' is an error.
  * Categorical columns are one-hot encoded over the categories of the training rows (sorted;
    features named 'sex=f'). A category the training rows lack (in validation, test or a new
    file) gets all zeros, and a warning counts such rows.
  * --missing impute: a numeric gap becomes the training mean (0 once standardised), and every
    numeric column with a gap in the TRAINING rows gets a 0/1 indicator feature
    '<column>_missing' right after it. A gap only in later rows is imputed without an indicator
    (the model never saw one). A categorical gap is the category '(missing)' (a new category,
    so all zeros, when the training rows had no gap in that column).
  * --missing refuse: any gap in a feature is a `DataError` naming the first one in file order.

Inputs are float32 [n, features]; the features' names are `preprocessing['features']`.

pandas is imported on first use.
"""

import dataclasses
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from jmed.configs import MISSING_POLICIES
from jmed.data import files, labels, splits
from jmed.errors import ConfigError, DataError

NUMERIC_SHARE = 0.9  # a column this numeric (in non-missing training cells) is numeric
MISSING_TEXT = ('', 'na', 'n/a', 'nan', 'null')  # cells read as missing (lower-cased, stripped)
MISSING_CATEGORY = '(missing)'
MANY_CATEGORIES = 100  # more categories than this in one column: a warning (an identifier?)
NUMERIC, CATEGORICAL = 'numeric', 'categorical'
_BOOLEANS = {'true': 1.0, 'false': 0.0}
_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Feature:
  """How one column becomes features.

  Attributes:
    column: the table's column.
    kind: 'numeric' or 'categorical'.
    mean, std: the training rows' statistics of a numeric column.
    indicator: whether a numeric column gets a '<column>_missing' feature.
    categories: the training categories of a categorical column, in feature order.
  """

  column: str
  kind: str
  mean: float = 0.0
  std: float = 1.0
  indicator: bool = False
  categories: Tuple[str, ...] = ()

  @property
  def names(self) -> List[str]:
    """This column's feature names."""
    if self.kind == CATEGORICAL:
      return [f'{self.column}={category}' for category in self.categories]
    return [self.column] + ([f'{self.column}_missing'] if self.indicator else [])


@dataclasses.dataclass(frozen=True)
class Preprocessor:
  """The features of a table, fitted on its training rows (`fit`).

  Attributes:
    features: one `Feature` per feature column, in column order.
    missing: 'impute' or 'refuse'.
  """

  features: Tuple[Feature, ...]
  missing: str = 'impute'

  @property
  def columns(self) -> List[str]:
    """The feature columns a table must have."""
    return [feature.column for feature in self.features]

  @property
  def names(self) -> List[str]:
    """The features' names, one per input: 'age', 'age_missing', 'sex=f', ..."""
    return [name for feature in self.features for name in feature.names]

  def transform(self, frame, path: str) -> np.ndarray:
    """float32 [n, len(names)]: the features of `frame`'s rows.

    Raises:
      DataError: a missing feature column, a gap under 'refuse', a non-number or an infinite
        value in a numeric column (naming the file, row and column).
    """
    missing = [c for c in self.columns if c not in frame.columns]
    if missing:
      raise DataError(f'{path}: no feature column {", ".join(repr(c) for c in missing)}; the '
                      f'model was trained on the columns {self.columns} and the header is '
                      f'{list(frame.columns)}.')
    if self.missing == 'refuse':
      refuse_gaps(frame, path, self.columns)
    blocks = [_encode(feature, frame, path) for feature in self.features]
    return np.concatenate(blocks, axis=1).astype(np.float32)

  def to_dict(self) -> dict:
    return {'missing': self.missing,
            'features': [dict(dataclasses.asdict(f), categories=list(f.categories))
                         for f in self.features]}

  @classmethod
  def from_dict(cls, values: dict) -> 'Preprocessor':
    features = tuple(Feature(**dict(f, categories=tuple(f.get('categories', ()))))
                     for f in values['features'])
    return cls(features=features, missing=values.get('missing', 'impute'))


def fit(frame, path: str, columns: Sequence[str], missing: str = 'impute') -> Preprocessor:
  """A `Preprocessor` of `columns`, fitted on `frame` (the training rows).

  Raises:
    DataError: a column without a value in these rows, or a mostly numeric column with a
      non-number (naming the file, row, column and value).
  """
  return Preprocessor(features=tuple(_fit_column(frame, path, c, missing) for c in columns),
                      missing=missing)


def feature_columns(frame, path: str, data) -> List[str]:
  """The feature columns of a `DataConfig` (see the module docstring).

  Raises:
    DataError: a named column the file lacks, or no feature column left.
    ConfigError: --feature-columns names a label column.
  """
  label_columns = labels.label_columns(data)
  ignored = files.columns_of(data.ignore_columns)
  files.require_columns(frame, ignored, path, '--ignore-columns')
  given = files.columns_of(data.feature_columns)
  if given:
    files.require_columns(frame, given, path, '--feature-columns')
    clash = [c for c in given if c in label_columns]
    if clash:
      raise ConfigError(f'--feature-columns names the label column(s) {clash}; a label cannot '
                        'be a feature.')
    return [c for c in given if c not in ignored]
  split_column = data.split_column or (files.SPLIT_COLUMN
                                       if files.SPLIT_COLUMN in frame.columns else '')
  other = set(label_columns) | set(ignored) | {split_column, data.group_column}
  chosen = [c for c in frame.columns if c not in other]
  if not chosen:
    raise DataError(f'{path}: no feature columns left: the header {list(frame.columns)} holds '
                    'only label, split, group and ignored columns.')
  return chosen


def refuse_gaps(frame, path: str, columns: Sequence[str]) -> None:
  """DataError naming the first missing cell of `columns` in file order (--missing refuse)."""
  gaps = np.stack([files.is_missing(frame[c]) for c in columns], axis=1)
  if gaps.any():
    row, col = np.unravel_index(np.argmax(gaps), gaps.shape)
    raise DataError(f'{files.where(path, frame.index[row], columns[col])}: the value is '
                    'missing (--missing refuse); fill it in, or use --missing impute.')


# ---------------------------------------------------------------- the source's two functions


def load_user(data, *, text=None, molecule=None):
  """The `Dataset` of the table `data.path` (a `DataConfig`); see the module docstring.

  `text` and `molecule` are not used (the source interface passes them).

  Raises:
    MissingDataError: no such file. DataError: bad cells (naming file, row and column), a
      missing column, an empty split. ConfigError: flags that contradict each other.
  """
  from jmed.data.datasets import Dataset  # pylint: disable=g-import-not-at-top
  del text, molecule
  if data.missing not in MISSING_POLICIES:
    raise ConfigError(f'missing must be one of {", ".join(MISSING_POLICIES)}, got '
                      f'{data.missing!r}.')
  path = os.fspath(data.path)
  frame = files.read_table(path)
  columns = feature_columns(frame, path, data)
  frame = _blank_missing(frame, columns + list(labels.label_columns(data)))
  task = labels.infer_task(frame, path, data)  # checks the label columns exist
  if data.missing == 'refuse':
    refuse_gaps(frame, path, columns)
  positions, split_info = splits.assign(frame, path, data,
                                        stratify=labels.strata(frame, path, data, task))
  parts = {split: frame.iloc[rows] for split, rows in positions.items()}
  fitted = labels.fit_labels(parts['train'], path, data, task)
  preprocessor = fit(parts['train'], path, columns, data.missing)
  arrays = {split: (preprocessor.transform(part, path), fitted.encode(part, path))
            for split, part in parts.items()}
  names = preprocessor.names
  preprocessing = {
      'source': 'table', 'labels': fitted.to_dict(), 'preprocessor': preprocessor.to_dict(),
      'features': names,
      'columns': {'features': columns, 'labels': list(fitted.columns),
                  'split': split_info.get('column'), 'group': data.group_column or None},
  }
  return Dataset(name=files.stem(path), splits=arrays, num_classes=fitted.num_classes, task=task,
                 input_shape=(len(names),), preprocessing=preprocessing,
                 split_info=split_info)


def featurize(path: str, data, preprocessing: dict, run_dir: Optional[str] = None, *,
              text=None, molecule=None):
  """A new table `path` made into inputs as training made them (`preprocessing` from
  preprocessing.json). Labels when the file has every label column, else None; ids 'row N'
  (the file's 1-based data row).

  Raises:
    DataError: a feature column the file lacks (naming it), or a bad cell (naming the row and
      column): as in training.
  """
  from jmed.data.user import Rows  # pylint: disable=g-import-not-at-top
  del data, run_dir, text, molecule
  preprocessor = Preprocessor.from_dict(preprocessing['preprocessor'])
  fitted = labels.Labels.from_dict(preprocessing['labels'])
  frame = files.read_table(path)
  frame = _blank_missing(frame, preprocessor.columns + list(fitted.columns))
  inputs = preprocessor.transform(frame, path)
  targets = fitted.encode(frame, path) if fitted.present(frame) else None
  return Rows(inputs=inputs, labels=targets, ids=[f'row {i + 1}' for i in frame.index])


# ---------------------------------------------------------------- cells


def _blank_missing(frame, columns: Sequence[str]):
  """`frame` with the text cells of `columns` that mean 'missing' (`MISSING_TEXT`) as ''."""
  frame = frame.copy()
  for column in (c for c in columns if c in frame.columns):
    series = frame[column]
    if series.dtype == object or str(series.dtype).startswith('string'):
      text = series.map(lambda v: v.strip().lower() if isinstance(v, str) else None)
      frame[column] = series.where(~text.isin(MISSING_TEXT), '')
  return frame


def _numbers(series) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(float64 [n] with NaN where missing or not a number, missing [n], not-a-number [n])."""
  pd = files._pandas()  # pylint: disable=protected-access
  missing = files.is_missing(series)
  kept = series.where(~missing, None)
  if series.dtype == bool:
    values = kept.astype(float).to_numpy(np.float64)
  else:
    values = pd.to_numeric(kept, errors='coerce').to_numpy(np.float64)
  return values, missing, np.isnan(values) & ~missing


def _booleans(series) -> Optional[np.ndarray]:
  """float64 [n] 1/0 (NaN where missing) when every non-missing cell is a boolean, else None."""
  missing = files.is_missing(series)
  values = np.full(len(series), np.nan)
  for position, cell in enumerate(series):
    if missing[position]:
      continue
    if isinstance(cell, (bool, np.bool_)):
      values[position] = float(cell)
    elif isinstance(cell, str) and cell.strip().lower() in _BOOLEANS:
      values[position] = _BOOLEANS[cell.strip().lower()]
    else:
      return None
  return values if (~missing).any() else None


def _categories(series) -> np.ndarray:
  """object [n]: each cell as stripped text, MISSING_CATEGORY where missing."""
  missing = files.is_missing(series)
  return np.asarray([MISSING_CATEGORY if gap else str(cell).strip()
                     for cell, gap in zip(series, missing)], dtype=object)


def _fit_column(frame, path: str, column: str, missing_policy: str) -> Feature:
  series = frame[column]
  values = _booleans(series)
  if values is None:
    values, missing, bad = _numbers(series)
  else:
    missing, bad = np.isnan(values), np.zeros(len(values), bool)
  present = int((~missing).sum())
  if present == 0:
    raise DataError(f'{path}, column {column!r}: no value in the {len(series)} training rows; '
                    'list it in --ignore-columns.')
  if present - bad.sum() >= NUMERIC_SHARE * present:  # numeric; a few non-numbers are typos
    if bad.any():
      row = frame.index[np.argmax(bad)]
      raise DataError(f'{files.where(path, row, column)}: {series.loc[row]!r} is not a number, '
                      f'though {present - int(bad.sum())} of the {present} filled training '
                      'cells of this column are; fix the cell (leave it empty if unknown), or '
                      'list the column in --ignore-columns.')
    _check_finite(values, frame, path, column)
    observed = values[~missing]
    std = float(observed.std())
    return Feature(column=column, kind=NUMERIC, mean=float(observed.mean()),
                   std=std if std > 0 else 1.0,
                   indicator=bool(missing.any()) and missing_policy == 'impute')
  names = _categories(series)
  distinct = sorted(set(names) - {MISSING_CATEGORY})
  if MISSING_CATEGORY in set(names):
    distinct.append(MISSING_CATEGORY)
  if len(distinct) > MANY_CATEGORIES:
    _LOG.warning('%s: column %r has %d categories, one feature each; if it is an identifier, '
                 'list it in --ignore-columns.', path, column, len(distinct))
  return Feature(column=column, kind=CATEGORICAL, categories=tuple(distinct))


def _check_finite(values: np.ndarray, frame, path: str, column: str) -> None:
  infinite = np.isinf(values)
  if infinite.any():
    row = frame.index[np.argmax(infinite)]
    raise DataError(f'{files.where(path, row, column)}: {frame[column].loc[row]!r} is not '
                    'finite.')


def _encode(feature: Feature, frame, path: str) -> np.ndarray:
  """float64 [n, len(feature.names)]: one column's features."""
  series = frame[feature.column]
  if feature.kind == CATEGORICAL:
    return _one_hot(feature, _categories(series), path)
  values = _booleans(series)
  if values is None:
    values, missing, bad = _numbers(series)
    if bad.any():
      row = frame.index[np.argmax(bad)]
      raise DataError(f'{files.where(path, row, feature.column)}: {series.loc[row]!r} is not a '
                      'number (the column is numeric).')
  else:
    missing = np.isnan(values)
  _check_finite(values, frame, path, feature.column)
  scaled = (np.where(missing, feature.mean, values) - feature.mean) / feature.std
  if feature.indicator:
    return np.stack([scaled, missing.astype(np.float64)], axis=1)
  return scaled[:, None]


def _one_hot(feature: Feature, names: np.ndarray, path: str) -> np.ndarray:
  index: Dict[str, int] = {name: i for i, name in enumerate(feature.categories)}
  codes = np.asarray([index.get(name, -1) for name in names], np.int64)
  out = np.zeros((len(names), len(feature.categories)))
  known = codes >= 0
  out[np.flatnonzero(known), codes[known]] = 1.0
  if not known.all():
    unseen = sorted(set(names[~known]))
    _LOG.warning('%s, column %r: %d row(s) have categories the training rows lack (%s); their '
                 'one-hot features are all 0.', path, feature.column, int((~known).sum()),
                 ', '.join(repr(u) for u in unseen[:5]))
  return out
