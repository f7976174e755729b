"""Splitting a user's rows into 'train', 'validation' and 'test', and recording how.

A split column in the file wins (`DataConfig.split_column`, or a column named 'split'); else a
seeded rule: 'random', 'stratified' (class proportions kept, scikit-learn), 'group' (rows of one
patient stay together) or 'scaffold' (molecules of one Bemis-Murcko scaffold stay together).
'auto' stratifies classification labels, groups when a group column is given, else is random.

Every function returns split name -> int64 positions (0-based, into the rows it was given).
'random' keeps its permutation's order; the others return each split's positions sorted, so
the file's order is kept.
"""

import logging
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from jmed.data.files import SPLIT_COLUMN
from jmed.errors import ConfigError, DataError

SPLITS = ('train', 'validation', 'test')
ALIASES = {'train': 'train', 'training': 'train', 'validation': 'validation', 'val': 'validation',
           'valid': 'validation', 'dev': 'validation', 'devel': 'validation', 'test': 'test'}
_LOG = logging.getLogger(__name__)

Positions = Dict[str, np.ndarray]


def fractions_of(data) -> Tuple[float, float, float]:
  """(train, validation, test) fractions of a `DataConfig`; ConfigError when they do not fit."""
  valid, test = float(data.validation_fraction), float(data.test_fraction)
  if not (0 < valid < 1 and 0 < test < 1 and valid + test < 1):
    raise ConfigError(f'validation_fraction {valid} and test_fraction {test} must be in (0, 1) '
                      'and sum to less than 1.')
  return (1.0 - valid - test, valid, test)


def assign(frame, path: str, data, *, stratify: Optional[Sequence] = None,
           groups: Optional[Sequence] = None,
           scaffolds: Optional[Sequence[str]] = None) -> Tuple[Positions, dict]:
  """Splits the rows of `frame` as `data` (a `DataConfig`) says.

  Args:
    frame: the table (a `pandas.DataFrame`, index = data rows of `path`).
    path: its file, for messages.
    data: the `DataConfig` (split_column, group_column, split, split_seed, fractions).
    stratify: [n] class of each row, for 'stratified' ('auto' stratifies when given).
    groups: [n] group of each row (default: `data.group_column`'s values).
    scaffolds: [n] scaffold of each molecule, for 'scaffold'.

  Returns:
    (split name -> positions, what summary.json records of the split).

  Raises:
    DataError: an unknown split-column value (naming the row), an empty split, or a rule that
      lacks what it needs.
  """
  column = data.split_column or (SPLIT_COLUMN if SPLIT_COLUMN in frame.columns else '')
  if column:
    return _from_column(frame, path, column)
  if groups is None and data.group_column:
    if data.group_column not in frame.columns:
      raise DataError(f'{path}: no group column {data.group_column!r} (given by '
                      f'--group-column); the header is {list(frame.columns)}.')
    groups = frame[data.group_column].astype(str).to_numpy()
  rule = data.split
  if rule == 'auto':
    rule = 'group' if groups is not None else 'stratified' if stratify is not None else 'random'
  fractions = fractions_of(data)
  positions, note = _by_rule(rule, len(frame), path, data.split_seed, fractions, stratify,
                             groups, scaffolds)
  info = {'rule': rule, 'seed': data.split_seed if rule != 'scaffold' else None,
          'fractions': list(fractions), 'column': None,
          'group_column': data.group_column or None, **({'note': note} if note else {})}
  return _checked(positions, path, info)


def _by_rule(rule, n, path, seed, fractions, stratify, groups, scaffolds):
  """(positions, a note on a fallback or None)."""
  if rule == 'random':
    return random(n, seed, fractions), None
  if rule == 'stratified':
    if stratify is None:
      raise ConfigError("split 'stratified' needs class labels; this task has none: use "
                        "--split random.")
    try:
      return stratified(stratify, seed, fractions), None
    except ValueError as error:  # a class too rare to be in every split
      note = f'stratified split impossible ({error}); split at random instead'
      _LOG.warning('%s: %s.', path, note)
      return random(n, seed, fractions), note
  if rule == 'group':
    if groups is None:
      raise ConfigError("split 'group' needs --group-column (e.g. a patient id).")
    return grouped(groups, seed, fractions), None
  if rule == 'scaffold':
    if scaffolds is None:
      raise ConfigError("split 'scaffold' applies to molecules (the smiles source).")
    return scaffold(scaffolds, fractions), None
  raise ConfigError(f'Unknown split {rule!r}; valid: auto, random, stratified, group, scaffold.')



def _from_column(frame, path: str, column: str) -> Tuple[Positions, dict]:
  if column not in frame.columns:
    raise DataError(f'{path}: no split column {column!r} (given by --split-column); the header '
                    f'is {list(frame.columns)}.')
  names = frame[column].astype(str).str.strip().str.lower().to_numpy()
  unknown = ~np.isin(names, list(ALIASES))
  if unknown.any():
    row = frame.index[np.argmax(unknown)]
    raise DataError(f"{path}, row {row + 1}, column {column!r}: split {frame[column].loc[row]!r} "
                    f"is not one of train, validation (val, valid, dev) or test.")
  canonical = np.array([ALIASES[name] for name in names])
  positions = {split: np.flatnonzero(canonical == split) for split in SPLITS}
  info = {'rule': 'column', 'column': column, 'seed': None, 'fractions': None,
          'group_column': None}
  return _checked(positions, path, info)


def _checked(positions: Positions, path: str, info: dict) -> Tuple[Positions, dict]:
  for split in SPLITS:
    if len(positions[split]) == 0:
      raise DataError(f'{path}: the {split} split is empty ({info["rule"]} split of '
                      f'{sum(len(p) for p in positions.values())} rows); give it rows or '
                      'change --validation-fraction / --test-fraction.')
  info['sizes'] = {split: int(len(positions[split])) for split in SPLITS}
  return {s: np.asarray(positions[s], np.int64) for s in SPLITS}, info


def _cuts(n: int, fractions) -> Tuple[int, int]:
  train_end = int(fractions[0] * n)
  valid_end = int((fractions[0] + fractions[1]) * n)
  return train_end, valid_end


def random(n: int, seed: int, fractions) -> Positions:
  """A seeded permutation of `range(n)` cut at the fractions (as DeepChem's RandomSplitter)."""
  order = np.random.default_rng(seed).permutation(n)
  return dict(zip(SPLITS, np.split(order, _cuts(n, fractions))))


def stratified(values: Sequence, seed: int, fractions) -> Positions:
  """Class proportions of `values` [n] kept in every split (scikit-learn's
  `train_test_split`, twice); raises ValueError when a class is too rare for that."""
  from sklearn.model_selection import train_test_split  # pylint: disable=g-import-not-at-top
  values = np.asarray([str(v) for v in values])
  index = np.arange(len(values))
  rest, test = train_test_split(index, test_size=fractions[2], random_state=seed,
                                stratify=values)
  train, valid = train_test_split(rest, test_size=fractions[1] / (fractions[0] + fractions[1]),
                                  random_state=seed, stratify=values[rest])
  return {'train': np.sort(train), 'validation': np.sort(valid), 'test': np.sort(test)}


def grouped(groups: Sequence, seed: int, fractions) -> Positions:
  """Whole groups (e.g. patients) to each split: groups in a seeded order fill 'train' up to
  its fraction of the rows, then 'validation', then 'test'."""
  groups = np.asarray([str(g) for g in groups])
  names, inverse = np.unique(groups, return_inverse=True)
  order = np.random.default_rng(seed).permutation(len(names))
  sizes = np.bincount(inverse, minlength=len(names))
  train_cut, valid_cut = (fractions[0] * len(groups),
                          (fractions[0] + fractions[1]) * len(groups))
  split_of_group = np.empty(len(names), np.int64)
  filled = 0
  for g in order:
    split_of_group[g] = 0 if filled < train_cut else 1 if filled < valid_cut else 2
    filled += sizes[g]
  of_row = split_of_group[inverse]
  return {split: np.flatnonzero(of_row == i) for i, split in enumerate(SPLITS)}


def scaffold(keys: Sequence[str], fractions) -> Positions:
  """Deterministic scaffold split (as DeepChem's `ScaffoldSplitter`).

  Molecules are grouped by scaffold; groups, largest first (ties: later first index first),
  fill 'train' while it stays within its fraction, then 'validation', then 'test'. No scaffold
  is shared across splits.
  """
  by_key: Dict[str, list] = {}
  for i, key in enumerate(keys):
    by_key.setdefault(key, []).append(i)
  ordered = sorted(by_key.values(), key=lambda g: (len(g), g[0]), reverse=True)
  n = len(keys)
  train_cut, valid_cut = fractions[0] * n, (fractions[0] + fractions[1]) * n
  train, valid, test = [], [], []
  for group in ordered:
    if len(train) + len(group) <= train_cut:
      train.extend(group)
    elif len(train) + len(valid) + len(group) <= valid_cut:
      valid.extend(group)
    else:
      test.extend(group)
  return {name: np.sort(np.array(index, np.int64))
          for name, index in zip(SPLITS, (train, valid, test))}
