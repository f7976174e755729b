"""A user's label columns as a task's labels: which task, which classes, and the encoding.

`infer_task` reads the task from the flags and the values when `DataConfig.task` is 'auto':

  * --time-column and --event-column: 'survival';
  * --treatment-column: 'treatment_effect' (the outcome is --label-column; optional
    --potential-outcome-columns mu0,mu1 for simulated data);
  * several --label-column columns: 'multilabel' when every cell is 0, 1 or empty (missing),
    else 'regression' (one target per column);
  * one column: 'binary' with two distinct values, 'multiclass' with text values or up to
    `MAX_CLASSES` distinct whole numbers, else 'regression'.

Class names are the distinct values of the training rows, as text ('1.0' and '1' are one class),
sorted (numerically when all are numbers): class id i is the i-th. For 'binary' the second
class is the positive one (1 of 0/1, 'yes' of no/yes), the one AUROC and sensitivity refer to.

Kinds that read several columns in fixed roles (`Task.column_roles`) are read by their roles:
('time', 'event') survival, ('treatment', 'outcome', 'mu0', 'mu1') treatment effect, whose
labels are float32 [n, 4] with mu0 and mu1 NaN when the file has no such columns.
"""

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np

from jmed import tasks
from jmed.data import files
from jmed.errors import ConfigError, DataError

MAX_CLASSES = 20  # more distinct whole numbers than this in one column: a regression target
_TRUE = ('1', '1.0', 'true', 'True', 'TRUE')
_FALSE = ('0', '0.0', 'false', 'False', 'FALSE')
_TREATMENT = 'treatment'  # the role of a treatment-effect kind's first label column


@dataclasses.dataclass(frozen=True)
class Labels:
  """How label columns become labels.

  Attributes:
    task: the task kind's name (a key of `jmed.tasks.TASKS`).
    columns: the label columns; (time, event) for 'survival'; (treatment, outcome[, mu0,
      mu1]) for 'treatment_effect'.
    classes: class names in id order ('binary' and 'multiclass').
  """

  task: str
  columns: Tuple[str, ...]
  classes: Tuple[str, ...] = ()

  @property
  def num_classes(self) -> int:
    """The model's outputs."""
    if self.classes:
      return len(self.classes)
    kind = tasks.get(self.task)
    return kind.role_outputs if kind.column_roles else len(self.columns)

  def present(self, frame) -> bool:
    """Whether `frame` has every label column (a file to score may have none)."""
    return all(column in frame.columns for column in self.columns)

  def encode(self, frame, path: str) -> np.ndarray:
    """The labels of `frame`'s rows in the task's layout and dtype.

    Raises:
      DataError: naming the file, row and column of the first bad cell: missing, not a
        number, not finite, a negative time, an event not 0/1, or a class the training rows
        do not have.
    """
    files.require_columns(frame, self.columns, path)
    task = tasks.get(self.task)
    if self.classes:
      return _class_ids(frame, self.columns[0], path, self.classes)
    if _TREATMENT in task.column_roles:
      return _treatment_effect(frame, path, *self.columns)
    if task.column_roles:
      return _survival(frame, path, *self.columns)
    return np.stack([_parsed(frame, column, path, task) for column in self.columns],
                    axis=1).astype(task.label_dtype)

  def to_dict(self) -> dict:
    return {'task': self.task, 'columns': list(self.columns), 'classes': list(self.classes)}

  @classmethod
  def from_dict(cls, values: dict) -> 'Labels':
    return cls(task=values['task'], columns=tuple(values['columns']),
               classes=tuple(values.get('classes', ())))


def label_columns(data) -> Tuple[str, ...]:
  """The label columns a `DataConfig` names: (time, event) for survival, (treatment, outcome
  [, mu0, mu1]) for a treatment effect, else --label-column's.

  Raises:
    ConfigError: none named, only one of --time-column and --event-column, or a treatment
      effect without one outcome column or with other than two potential-outcome columns.
  """
  if data.treatment_column or data.potential_outcome_columns:
    return _effect_columns(data)
  if data.time_column or data.event_column:
    if not (data.time_column and data.event_column):
      raise ConfigError('survival needs both --time-column and --event-column.')
    return (data.time_column, data.event_column)
  columns = tuple(files.columns_of(data.label_column))
  if not columns:
    raise ConfigError('name the label column: --label-column NAME (several, comma-separated, '
                      'for multi-label), or --time-column and --event-column for survival.')
  return columns


def infer_task(frame, path: str, data) -> str:
  """The task of `data.task`, or inferred from the label columns' values when 'auto' (see the
  module docstring). Raises ConfigError when the given task does not fit the columns."""
  columns = label_columns(data)
  flags = ('--time-column/--event-column' if data.time_column else
           '--treatment-column/--label-column/--potential-outcome-columns'
           if data.treatment_column else '--label-column')
  files.require_columns(frame, columns, path, flags)
  survival = bool(data.time_column)
  effect = bool(data.treatment_column)
  kind = tasks.TASKS.get(data.task)  # None for 'auto'
  if kind is not None:
    if (_TREATMENT in kind.column_roles) != effect:
      raise ConfigError(f'task {data.task!r} does not fit the columns given: a treatment '
                        'effect needs --treatment-column (with the outcome as --label-column), '
                        'and --treatment-column applies to task treatment_effect only.')
    if effect:
      return data.task
    if bool(kind.column_roles) != survival:
      raise ConfigError(f'task {data.task!r} does not fit the columns given: survival needs '
                        '--time-column and --event-column, every other task --label-column.')
    if kind.class_names and len(columns) > 1:
      raise ConfigError(f'task {data.task!r} takes one --label-column, got {list(columns)}.')
    return data.task
  if survival:
    return 'survival'
  if effect:
    return 'treatment_effect'
  if len(columns) > 1:
    binary_cells = all(set(_texts(frame[c])) <= set(_TRUE + _FALSE + ('',)) for c in columns)
    return 'multilabel' if binary_cells else 'regression'
  values = [v for v in _texts(frame[columns[0]]) if v != '']
  distinct = set(_class_names(values))
  if len(distinct) == 2:
    return 'binary'
  numbers = _as_numbers(distinct)
  if numbers is None or (len(distinct) <= MAX_CLASSES and all(x == int(x) for x in numbers)):
    return 'multiclass'
  return 'regression'


def strata(frame, path: str, data, task: str) -> Optional[np.ndarray]:
  """[n] what a stratified split keeps in proportion: the class of single-label
  classification, survival's event; None for other tasks (a treatment effect is split at
  random, as Shalit et al. split IHDP)."""
  columns = label_columns(data)
  kind = tasks.get(task)
  if 'event' in kind.column_roles:  # survival: keep the share of events
    return _texts(frame[columns[kind.column_roles.index('event')]])
  if kind.class_names:
    return np.asarray(_class_names(_texts(frame[columns[0]])))
  return None


def fit_labels(frame, path: str, data, task: str) -> Labels:
  """`Labels` of `task`, with the classes of `frame`'s rows (pass the training rows).

  Raises:
    DataError: 'binary' without exactly two classes in these rows, or one class only.
  """
  columns = label_columns(data)
  kind = tasks.get(task)
  if not kind.class_names:
    return Labels(task=task, columns=columns)
  names = _class_names([v for v in _texts(frame[columns[0]]) if v != ''])
  classes = tuple(_sorted(set(names)))
  try:
    kind.check_outputs(len(classes), f'{path}, column {columns[0]!r}')  # binary: exactly 2
  except DataError as error:
    raise DataError(f'{error} The training rows hold the classes {list(classes)[:10]}.'
                    ) from None
  return Labels(task=task, columns=columns, classes=classes)


def _effect_columns(data) -> Tuple[str, ...]:
  """(treatment, outcome[, mu0, mu1]) of a treatment-effect `DataConfig`."""
  if not data.treatment_column:
    raise ConfigError('--potential-outcome-columns needs --treatment-column (and the outcome '
                      'as --label-column).')
  if data.time_column or data.event_column:
    raise ConfigError('--treatment-column and --time-column/--event-column exclude each other: '
                      'a treatment effect has one outcome column (--label-column).')
  outcome = files.columns_of(data.label_column)
  if len(outcome) != 1:
    raise ConfigError('a treatment effect needs exactly one outcome column: --label-column '
                      f'NAME (got {outcome or "none"}).')
  potential = files.columns_of(data.potential_outcome_columns)
  if len(potential) not in (0, 2):
    raise ConfigError('--potential-outcome-columns takes two columns, mu0,mu1 (the expected '
                      f'outcome under control, then under treatment); got {potential}.')
  columns = (data.treatment_column, outcome[0], *potential)
  if len(set(columns)) != len(columns):
    raise ConfigError(f'the treatment, outcome and potential-outcome columns must differ; got '
                      f'{list(columns)}.')
  return columns


# ---------------------------------------------------------------- cells


def _texts(values) -> np.ndarray:
  """Cells as stripped text; None and NaN as ''."""
  out = []
  for value in values:
    if value is None or (isinstance(value, float) and np.isnan(value)):
      out.append('')
    else:
      out.append(str(value).strip())
  return np.asarray(out, dtype=object)


def _class_names(values: Sequence[str]):
  """Canonical class names: whole numbers without a decimal part ('1.0' -> '1')."""
  names = []
  for value in values:
    try:
      number = float(value)
      names.append(str(int(number)) if np.isfinite(number) and number == int(number) else value)
    except ValueError:
      names.append(value)
  return names


def _as_numbers(values):
  try:
    return [float(v) for v in values]
  except ValueError:
    return None


def _sorted(names):
  numbers = _as_numbers(names)
  if numbers is not None:
    return [name for _, name in sorted(zip(numbers, names))]
  return sorted(names)


def _class_ids(frame, column: str, path: str, classes: Sequence[str]) -> np.ndarray:
  names = _class_names(_texts(frame[column]))
  index = {name: i for i, name in enumerate(classes)}
  ids = np.empty(len(names), np.int32)
  for position, name in enumerate(names):
    if name == '':
      raise DataError(f'{files.where(path, frame.index[position], column)}: the label is '
                      'missing.')
    if name not in index:
      raise DataError(f'{files.where(path, frame.index[position], column)}: class {name!r} is '
                      f'not among the training classes {list(classes)[:20]}.')
    ids[position] = index[name]
  return ids


def _parsed(frame, column: str, path: str, task) -> np.ndarray:
  """One column through the task's cell parser (multilabel 0/1/empty, regression numbers)."""
  out = []
  for position, cell in enumerate(_texts(frame[column])):
    try:
      out.append(task.parse_label(cell))
    except ValueError as error:
      raise DataError(f'{files.where(path, frame.index[position], column)}: {error}') from None
  return np.asarray(out)


def _survival(frame, path: str, time_column: str, event_column: str) -> np.ndarray:
  times = files.numeric(frame, time_column, path)
  negative = times < 0
  if negative.any():
    row = frame.index[np.argmax(negative)]
    raise DataError(f'{files.where(path, row, time_column)}: time {times[np.argmax(negative)]} '
                    'is negative.')
  events = _zero_one(frame, path, event_column, 'event', '1 (event) or 0 (censored)')
  return np.stack([times.astype(np.float32), events], axis=1)


def _zero_one(frame, path: str, column: str, what: str, allowed: str) -> np.ndarray:
  """float32 [n] 1.0 / 0.0 of a 0/1 (or true/false) column; a DataError names the first other
  cell's row and column: '<what> <cell> is not <allowed>.'"""
  values = np.empty(len(frame), np.float32)
  for position, cell in enumerate(_texts(frame[column])):
    if cell not in _TRUE + _FALSE:
      raise DataError(f'{files.where(path, frame.index[position], column)}: {what} {cell!r} '
                      f'is not {allowed}.')
    values[position] = 1.0 if cell in _TRUE else 0.0
  return values


def _treatment_effect(frame, path: str, treatment_column: str, outcome_column: str,
                      mu0_column: Optional[str] = None,
                      mu1_column: Optional[str] = None) -> np.ndarray:
  """float32 [n, 4]: treatment (0/1), the finite outcome, mu0 and mu1 (NaN without columns)."""
  treatment = _zero_one(frame, path, treatment_column, 'treatment',
                       '1 (treated) or 0 (control)')
  outcome = files.numeric(frame, outcome_column, path)
  if mu0_column is None:
    mu0 = mu1 = np.full(len(frame), np.nan)
  else:
    mu0, mu1 = (files.numeric(frame, c, path) for c in (mu0_column, mu1_column))
  return np.stack([treatment, outcome, mu0, mu1], axis=1).astype(np.float32)
