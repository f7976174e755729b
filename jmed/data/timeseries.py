"""Irregularly sampled patient time series, packed for a GRU-D model.

GRU-D (Che et al., "Recurrent Neural Networks for Multivariate Time Series with
Missing Values", Scientific Reports 8, 6085, 2018) reads, at every time step,
the values, which features were observed, and how long ago each feature was
last observed. This module defines a file format for such data, reads and
writes it, and packs it into one fixed-shape array per split.

On disk: JSON Lines (UTF-8), one patient (or sequence) per line:

  {"id": "p001", "times": [0.0, 1.5, 4.0],
   "values": [[7.1, null], [null, 98.0], [7.3, 97.5]], "label": 1}

  id: a string, unique within the file.
  times: non-empty list of finite numbers, strictly increasing, in the
    dataset's time unit (e.g. hours since admission).
  values: one list per time, each of the same F features (F >= 1, the same in
    every record of the file); a number, or null = not observed at that time.
  label: an integer (JSON `true`/`false` and `1.0` are rejected).

Other keys are ignored; blank lines are skipped. Feature names are not stored;
keep them alongside the file. `Infinity` and `NaN` literals are not JSON and
are rejected: write null for a missing value.

In memory, one `Record` per line: float64 `times [T]`, float64 `values [T, F]`
with NaN = not observed, and an int label.

For the model, `pack` turns a split into one float32 array
`[n, max_steps, 1 + 3 * F]`; along the last axis:

  channel 0          step valid: 1 at a real step, 0 at padding.
  channels 1..F      values standardised with the training `mean` / `std`
                     ((x - mean) / std); 0 where not observed, so 0 is also
                     the training mean after standardisation.
  channels F+1..2F   observation mask: 1 observed, 0 not.
  channels 2F+1..3F  delta, the time since each feature was last observed,
                     divided by `time_scale`, with GRU-D's definition over the
                     record's times s_1 < s_2 < ...:
                       delta_1 = 0,
                       delta_t = s_t - s_{t-1} + delta_{t-1}  if the feature
                                 was not observed at t-1,
                       delta_t = s_t - s_{t-1}                 if it was;
                     i.e. s_t minus the time of the feature's last observation
                     before t (s_1 if there is none).

Real steps come first; padding steps after them are all zeros (all channels).
Every batch therefore has the same shape, so a jitted model compiles once; the
model must carry its state unchanged through steps whose step-valid is 0.
`unpack` splits the array back into the four parts.

A record longer than `max_steps` keeps its LAST `max_steps` steps (the most
recent, those nearest the prediction) by default, or its first with
`truncate='first'`. Deltas are computed on the whole record before it is cut,
so they stay the true time since the feature was last observed: in a record
cut by 'last', the first kept step's delta is in general not 0.

`irregular_mnist` builds such records from real MNIST images, as a stand-in
longitudinal signal; see its docstring.
"""

import dataclasses
import json
import math
import os
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from jmed.errors import DataError, MissingDataError

TRUNCATE = ('last', 'first')
_KEYS = ('id', 'times', 'values', 'label')


@dataclasses.dataclass(frozen=True, eq=False)
class Record:
  """One patient's (or sequence's) irregularly sampled time series.

  Attributes:
    id: identifier, unique within a dataset.
    times: float64 `[T]`, T >= 1, finite and strictly increasing.
    values: float64 `[T, F]`, F >= 1; NaN = not observed (no infinities).
    label: the integer target.

  Inputs are converted to these dtypes on construction.

  Raises:
    ValueError: shapes disagree, T or F is 0, times are not finite and
      strictly increasing, or values hold an infinity.
  """

  id: str
  times: np.ndarray
  values: np.ndarray
  label: int

  def __post_init__(self):
    times = np.asarray(self.times, np.float64)
    values = np.asarray(self.values, np.float64)
    problem = _check_arrays(times, values)
    if problem:
      raise ValueError(f'Record {self.id!r}: {problem}')
    object.__setattr__(self, 'id', str(self.id))
    object.__setattr__(self, 'times', times)
    object.__setattr__(self, 'values', values)
    object.__setattr__(self, 'label', int(self.label))

  @property
  def num_steps(self) -> int:
    """T, the number of time steps."""
    return self.times.shape[0]

  @property
  def num_features(self) -> int:
    """F, the number of features per step."""
    return self.values.shape[1]


def _check_arrays(times: np.ndarray, values: np.ndarray) -> Optional[str]:
  """Why `times [T]` / `values [T, F]` are not a valid record, or None."""
  if times.ndim != 1 or times.shape[0] == 0:
    return f'times must be a non-empty 1-D list, got shape {times.shape}.'
  if values.ndim != 2 or values.shape[0] != times.shape[0]:
    return (f'values must be [T, F] with T = {times.shape[0]} (one row per '
            f'time), got shape {values.shape}.')
  if values.shape[1] == 0:
    return 'values have no features (F = 0).'
  if not np.isfinite(times).all():
    return 'times must be finite.'
  steps = np.diff(times)
  if (steps <= 0).any():
    t = int(np.argmax(steps <= 0))
    return (f'times must be strictly increasing: times[{t}] = {times[t]!r}, '
            f'times[{t + 1}] = {times[t + 1]!r}.')
  if np.isinf(values).any():
    return 'values must be finite or missing (null / NaN), found an infinity.'
  return None


def read_jsonl(path: os.PathLike,
               num_features: Optional[int] = None) -> List[Record]:
  """Reads a JSON Lines file of records (format in the module docstring).

  Args:
    path: the `.jsonl` file.
    num_features: F every record must have; None takes the first record's.

  Returns:
    The records in file order (an empty list for a file with no records).

  Raises:
    MissingDataError: `path` does not exist (names it).
    DataError: a line is not valid JSON or not an object, lacks a key, has a
      non-string id, a repeated id, empty or non-increasing or non-numeric
      times, values that are not one row of F numbers/nulls per time (ragged
      against the first record or `num_features`), or a non-integer label;
      the message names `path` and the 1-based line number.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MissingDataError(f'Time-series file not found: {path}')
  records, seen = [], {}
  expected = None
  if num_features is not None:
    expected = (num_features, f'num_features is {num_features}')
  try:
    with open(path, encoding='utf-8') as f:
      for line_number, line in enumerate(f, start=1):
        if not line.strip():
          continue
        where = f'{path}, line {line_number}'
        record = _parse_line(line, where, expected)
        if record.id in seen:
          raise DataError(f'{where}: id {record.id!r} repeats line '
                          f'{seen[record.id]}.')
        seen[record.id] = line_number
        if expected is None:
          expected = (record.num_features, f'the first record (line '
                      f'{line_number}) has {record.num_features}')
        records.append(record)
  except (OSError, UnicodeDecodeError) as error:
    raise DataError(f'Cannot read time-series file {path}: {error}') from error
  return records


def _reject_constant(name: str):
  raise ValueError(f'{name} is not valid JSON (write null for a missing '
                   'value)')


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _parse_line(line: str, where: str,
                expected: Optional[Tuple[int, str]]) -> Record:
  """Parses one non-blank line into a `Record`, or raises `DataError`.

  `expected` is (F every row must have, why), or None to take `values[0]`'s.
  """
  try:
    obj = json.loads(line, parse_constant=_reject_constant)
  except ValueError as error:
    raise DataError(f'{where}: invalid JSON: {error}') from error
  if not isinstance(obj, dict):
    raise DataError(f'{where}: expected a JSON object, got '
                    f'{type(obj).__name__}.')
  missing = [key for key in _KEYS if key not in obj]
  if missing:
    raise DataError(f'{where}: missing key(s) {", ".join(missing)}; a record '
                    f'needs {", ".join(_KEYS)}.')
  if not isinstance(obj['id'], str):
    raise DataError(f'{where}: id must be a string, got {obj["id"]!r}.')
  label = obj['label']
  if not isinstance(label, int) or isinstance(label, bool):
    raise DataError(f'{where}: label must be an integer, got {label!r}.')
  times = obj['times']
  if not isinstance(times, list) or not times:
    raise DataError(f'{where}: times must be a non-empty list, got '
                    f'{_short(times)}.')
  if not all(_is_number(t) for t in times):
    raise DataError(f'{where}: times must all be numbers, got '
                    f'{_short(times)}.')
  values = obj['values']
  if not isinstance(values, list) or len(values) != len(times):
    raise DataError(f'{where}: values must be a list of one row per time '
                    f'({len(times)} rows), got {_short(values)}.')
  for t, row in enumerate(values):
    if not isinstance(row, list):
      raise DataError(f'{where}: values[{t}] must be a list, got '
                      f'{_short(row)}.')
    features, source = expected or (len(values[0]),
                                    f'values[0] has {len(values[0])}')
    if len(row) != features:
      raise DataError(f'{where}: values[{t}] has {len(row)} features but '
                      f'{source}.')
    if not all(v is None or _is_number(v) for v in row):
      raise DataError(f'{where}: values[{t}] must hold numbers or null, got '
                      f'{_short(row)}.')
  times = np.array(times, np.float64)
  values = np.array(values, np.float64)  # None -> NaN.
  problem = _check_arrays(times, values)
  if problem:
    raise DataError(f'{where}: {problem}')
  return Record(id=obj['id'], times=times, values=values, label=label)


def _short(x: Any, limit: int = 80) -> str:
  text = repr(x)
  return text if len(text) <= limit else text[:limit - 3] + '...'


def write_jsonl(records: Sequence[Record], path: os.PathLike) -> None:
  """Writes `records` to `path` as JSON Lines, NaN values as null.

  Floats are written with Python's shortest round-trip repr, so `read_jsonl`
  gives back the same float64 values. Overwrites `path`.
  """
  with open(os.fspath(path), 'w', encoding='utf-8') as f:
    for record in records:
      values = [[None if math.isnan(v) else v for v in row]
                for row in record.values.tolist()]
      obj = {'id': record.id, 'times': record.times.tolist(),
             'values': values, 'label': record.label}
      f.write(json.dumps(obj, allow_nan=False, separators=(',', ':')) + '\n')


def feature_stats(records: Sequence[Record]) -> Tuple[np.ndarray, np.ndarray]:
  """Per-feature mean and standard deviation over observed values only.

  Compute them on the training split and pass them to `pack` for every split.

  Args:
    records: non-empty, all with the same F.

  Returns:
    `(mean, std)`: float64 `[F]`. std is the population standard deviation
    (ddof 0). A feature never observed gets mean 0 and std 1; a feature with
    std 0 (constant, or observed once) gets std 1.
  """
  if not records:
    raise ValueError('feature_stats needs at least one record.')
  _check_features(records, records[0].num_features)
  values = np.concatenate([record.values for record in records])
  observed = ~np.isnan(values)
  count = observed.sum(0)
  filled = np.where(observed, values, 0.0)
  mean = filled.sum(0) / np.maximum(count, 1)
  centred = np.where(observed, values - mean, 0.0)
  std = np.sqrt((centred ** 2).sum(0) / np.maximum(count, 1))
  std = np.where((count == 0) | (std == 0), 1.0, std)
  return mean, std


def _check_features(records: Sequence[Record], num_features: int) -> None:
  """Raises ValueError unless every record has `num_features` features."""
  for i, record in enumerate(records):
    if record.num_features != num_features:
      raise ValueError(f'Record {i} ({record.id!r}) has '
                       f'{record.num_features} features, expected '
                       f'{num_features}.')


def time_since_observed(times: np.ndarray, observed: np.ndarray) -> np.ndarray:
  """GRU-D's delta: time since each feature was last observed.

  Args:
    times: `[T]` strictly increasing times s_1..s_T.
    observed: bool `[T, F]`, True where the feature was observed.

  Returns:
    float64 `[T, F]`: delta_1 = 0 and, for t > 1, s_t minus the time of the
    feature's last observation before step t (s_1 if there is none), which
    equals the recursion in the module docstring.
  """
  times = np.asarray(times, np.float64)
  observed = np.asarray(observed, bool)
  steps = np.arange(len(times))[:, None]
  last = np.maximum.accumulate(np.where(observed, steps, 0), axis=0)
  previous = np.concatenate([np.zeros_like(last[:1]), last[:-1]])
  return times[:, None] - times[previous]


def pack(records: Sequence[Record], max_steps: int, mean: np.ndarray,
         std: np.ndarray, time_scale: float = 1.0,
         truncate: str = 'last') -> Tuple[np.ndarray, np.ndarray]:
  """Packs records into GRU-D inputs of one fixed shape.

  Args:
    records: the split's records, all with F = `len(mean)` features.
    max_steps: steps per sequence; shorter records are zero-padded after their
      real steps, longer ones cut (see `truncate`).
    mean: float `[F]` training means (`feature_stats`).
    std: float `[F]` training standard deviations, all > 0.
    time_scale: deltas are divided by it (e.g. 24 turns hours into days).
    truncate: 'last' keeps a long record's last `max_steps` steps, 'first' its
      first. Deltas are computed on the whole record before cutting.

  Returns:
    `(inputs, labels)`: float32 `[n, max_steps, 1 + 3F]` laid out as in the
    module docstring, and int32 `[n]`.
  """
  mean = np.asarray(mean, np.float64)
  std = np.asarray(std, np.float64)
  if mean.ndim != 1 or mean.shape != std.shape:
    raise ValueError(f'mean and std must both be [F], got {mean.shape} and '
                     f'{std.shape}.')
  if not (np.isfinite(std).all() and (std > 0).all()):
    raise ValueError(f'std must be finite and > 0, got {std}.')
  if not (isinstance(max_steps, (int, np.integer)) and max_steps >= 1):
    raise ValueError(f'max_steps must be an integer >= 1, got {max_steps!r}.')
  if not time_scale > 0:
    raise ValueError(f'time_scale must be > 0, got {time_scale!r}.')
  if truncate not in TRUNCATE:
    raise ValueError(f'truncate must be one of {TRUNCATE}, got {truncate!r}.')
  f = mean.shape[0]
  _check_features(records, f)
  inputs = np.zeros((len(records), max_steps, 1 + 3 * f), np.float32)
  labels = np.array([record.label for record in records], np.int32)
  for i, record in enumerate(records):
    observed = ~np.isnan(record.values)
    standardised = np.where(observed, (record.values - mean) / std, 0.0)
    delta = time_since_observed(record.times, observed) / time_scale
    keep = (slice(-max_steps, None) if truncate == 'last' else
            slice(None, max_steps))
    t = min(record.num_steps, max_steps)
    inputs[i, :t, 0] = 1.0
    inputs[i, :t, 1:1 + f] = standardised[keep]
    inputs[i, :t, 1 + f:1 + 2 * f] = observed[keep]
    inputs[i, :t, 1 + 2 * f:] = delta[keep]
  return inputs, labels


def unpack(inputs):
  """Splits packed inputs into their four parts (slicing only).

  Works on NumPy and JAX arrays alike: a `jax.Array` in gives `jax.Array`s out,
  so it can be used inside a jitted model.

  Args:
    inputs: `[..., T, 1 + 3F]`, as returned by `pack`.

  Returns:
    `(step_valid, values, observed, delta)`: `[..., T]`, `[..., T, F]`,
    `[..., T, F]`, `[..., T, F]`, in the dtype of `inputs`.

  Raises:
    ValueError: the last dimension is not 1 + 3F for an integer F >= 1.
  """
  channels = inputs.shape[-1]
  f, remainder = divmod(channels - 1, 3)
  if remainder or f < 1:
    raise ValueError(f'Last dimension {channels} is not 1 + 3F for an integer '
                     'F >= 1.')
  return (inputs[..., 0], inputs[..., 1:1 + f], inputs[..., 1 + f:1 + 2 * f],
          inputs[..., 1 + 2 * f:])


def irregular_mnist(images: np.ndarray, labels: np.ndarray, *, seed: int,
                    keep_rows: float = 0.5, drop_pixels: float = 0.3,
                    ids_prefix: str = 'mnist') -> List[Record]:
  """Irregularly sampled sequences with missing features from MNIST images.

  A stand-in longitudinal signal: no real longitudinal clinical data is
  available offline, so this gives a real (not synthetic-noise) signal that
  is irregular in time and has missing features, to exercise the loader and
  a GRU-D model end to end. It is NOT clinical data; do not report results on
  it as clinical results.

  Image row r (0-based, top to bottom) is a potential observation at time r,
  its W pixels / 255 being the F = W features. Each row is kept independently
  with probability `keep_rows`, except that the two rows with the smallest
  random draws are always kept, so every sequence has at least 2 steps (which
  raises the kept fraction above `keep_rows` only when few rows would be
  kept). Kept rows stay in time order. Within kept rows each pixel is
  independently not observed (NaN) with probability `drop_pixels`; a kept row
  may end up with no observed pixel.

  Randomness comes from `np.random.default_rng(seed)`, drawn image by image in
  order, so the records of `images[:k]` are the first k records of the whole.

  Args:
    images: uint8 `[n, H, W]` or `[n, H, W, 1]` in [0, 255], H >= 2.
    labels: integer `[n]`.
    seed: the random seed.
    keep_rows: probability in [0, 1] that a row is kept.
    drop_pixels: probability in [0, 1] that a pixel of a kept row is missing.
    ids_prefix: record i gets id `f'{ids_prefix}-{i}'` (i = index in `images`).

  Returns:
    n records: times float64 `[T_i]` (the kept row indices), values float64
    `[T_i, W]` in [0, 1] or NaN, label the image's label.
  """
  images = np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  if images.ndim != 3 or images.shape[1] < 2:
    raise ValueError(f'images must be [n, H, W] or [n, H, W, 1] with H >= 2, '
                     f'got shape {images.shape}.')
  labels = np.asarray(labels)
  if labels.shape != images.shape[:1]:
    raise ValueError(f'labels must be [{len(images)}], got {labels.shape}.')
  if not 0 <= keep_rows <= 1 or not 0 <= drop_pixels <= 1:
    raise ValueError(f'keep_rows and drop_pixels must be in [0, 1], got '
                     f'{keep_rows} and {drop_pixels}.')
  n, h, w = images.shape
  rng = np.random.default_rng(seed)
  records, chunk = [], 1024
  for start in range(0, n, chunk):
    # Per image: column 0 decides each row, columns 1.. its pixels. One draw
    # per chunk consumes the stream exactly as one draw for all images would.
    draws = rng.random((min(chunk, n - start), h, 1 + w))
    for j, (row_draw, pixel_draw) in enumerate(
        zip(draws[:, :, 0], draws[:, :, 1:])):
      i = start + j
      keep = row_draw < keep_rows
      keep[np.argsort(row_draw, kind='stable')[:2]] = True
      values = images[i][keep].astype(np.float64) / 255.0
      values[pixel_draw[keep] < drop_pixels] = np.nan
      records.append(Record(id=f'{ids_prefix}-{i}',
                            times=np.flatnonzero(keep).astype(np.float64),
                            values=values, label=int(labels[i])))
  return records
