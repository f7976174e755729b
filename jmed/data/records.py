"""A `Dataset` as ArrayRecord shards on disk, read back lazily: datasets larger than memory.

`write` exports every split once; `load` gives a `Dataset` whose inputs are `RecordArray`s,
which read only the rows asked for. Training streams such a split (`jmed.data.stream`): each
process reads its own rows of each global batch, never the whole split.

  records.write(jmed.data.load_dataset('pneumoniamnist'), 'records/pneumoniamnist')
  dataset = records.load('records/pneumoniamnist')  # the same Dataset; inputs on disk
  python scripts/train.py --data records/pneumoniamnist  # the 'records' source of jmed.data.user

A records directory:

  spec.json        what rebuilds the Dataset (name, task, num_classes, input_shape, model_kwargs,
                   task_kwargs, preprocessing, split_info) and, per split, its size, dtype,
                   encoding, shard files and labels file
  <split>-00000-of-00003.array_record, ...
                   one record per example: the bytes of its input row [*input_shape], C order
  <split>_labels.npy   the split's labels [n, ...] (small: loaded into memory)
  tokenizer.json   the tokenizer of token-id inputs (`Dataset.tokenizer`), when there is one

Encodings (per split): 'raw', the row in the split's dtype (float32 or int32); 'uint8/255',
float32 pixels that are all exactly k / 255 (as `datasets.to_float` makes them) stored as the
uint8 k: a quarter of the bytes, decoded to the very same float32 values. Writing picks
'uint8/255' when a split's first rows allow it ('auto'); a later row that does not makes the
split be written again as 'raw'.

Shards are written with `group_size:1` (each record on its own, as grain's random access
needs) and ArrayRecord's default zstd compression.
"""

import dataclasses
import json
import logging
import os
import threading
from typing import Any, Dict, Optional, Sequence

import numpy as np

from jmed.errors import ConfigError, DataError, MissingDataError, RunDirError

FORMAT = 'jmed.records/1'
SPEC = 'spec.json'
TOKENIZER = 'tokenizer.json'
WRITER_OPTIONS = 'group_size:1'  # random access (grain); zstd:3, ArrayRecord's default
EXAMPLES_PER_SHARD = 1024
CHUNK_BYTES = 64 << 20  # rows read from the source at once while writing
ENCODINGS = ('raw', 'uint8/255')
_LOG = logging.getLogger(__name__)


# ---------------------------------------------------------------- writing


class _NotPixels(Exception):
  """A row that 'uint8/255' cannot hold exactly."""


def write(dataset, out_dir: str, *, examples_per_shard: int = EXAMPLES_PER_SHARD,
          encoding: str = 'auto', progress: bool = True) -> dict:
  """Writes every split of `dataset` to ArrayRecord shards in `out_dir`; returns the spec.

  Streams: split by split, shard by shard, reading the source inputs `[n, *input_shape]` a
  chunk of rows at a time, so a lazy source (e.g. `jmed.data.images.ImageFiles`) is never in
  memory at once. spec.json is written last: a directory without it is unfinished.

  Args:
    dataset: a `jmed.data.Dataset` (in-memory or lazy inputs).
    out_dir: a new (or empty) directory.
    examples_per_shard: records per shard file.
    encoding: 'auto' ('uint8/255' where exact, else 'raw'), 'raw' or 'uint8/255' (a
      `DataError` when a split's inputs are not all k / 255).
    progress: show a progress bar per split.

  Raises:
    RunDirError: `out_dir` holds files. ConfigError: a bad `examples_per_shard` or
    `encoding`.
  """
  if examples_per_shard < 1:
    raise ConfigError(f'examples_per_shard must be >= 1, got {examples_per_shard}.')
  if encoding not in ('auto', *ENCODINGS):
    raise ConfigError(f'encoding must be auto or one of {", ".join(ENCODINGS)}, got '
                      f'{encoding!r}.')
  out_dir = os.fspath(out_dir)
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    raise RunDirError(f'{out_dir} is not empty; write records into a new directory.')
  os.makedirs(out_dir, exist_ok=True)
  spec = _dataset_spec(dataset)
  spec['tokenizer'] = _save_tokenizer(dataset.tokenizer, out_dir)
  spec['splits'] = {}
  for split, (inputs, labels) in dataset.splits.items():
    spec['splits'][split] = _write_split(split, inputs, labels, out_dir, examples_per_shard,
                                         encoding, progress)
  _write_json(os.path.join(out_dir, SPEC), spec)
  return spec


def _dataset_spec(dataset) -> dict:
  return {'format': FORMAT, 'name': dataset.name, 'task': dataset.task,
          'num_classes': int(dataset.num_classes),
          'input_shape': [int(d) for d in dataset.input_shape],
          'model_kwargs': dict(dataset.model_kwargs),
          'task_kwargs': dict(getattr(dataset, 'task_kwargs', None) or {}),
          'preprocessing': dataset.preprocessing, 'split_info': dataset.split_info}


def _write_split(split, inputs, labels, out_dir, per_shard, encoding, progress) -> dict:
  """Writes one split's shards and labels; returns its entry of spec['splits']."""
  dtype, auto = np.dtype(inputs.dtype), encoding == 'auto'
  if auto:
    first = np.asarray(inputs[:_chunk_rows(inputs)])
    encoding = 'uint8/255' if _exact_pixels(first) else 'raw'
  try:
    shards = _write_shards(split, inputs, out_dir, per_shard, encoding, progress)
  except _NotPixels:
    if not auto:
      raise DataError(f'{split}: inputs are not all k / 255 (float32 pixels as to_float makes '
                      "them); use encoding 'raw'.") from None
    _LOG.info('%s: inputs are not all k / 255 beyond the first rows; writing raw.', split)
    shards = _write_shards(split, inputs, out_dir, per_shard, 'raw', progress)  # same names
    encoding = 'raw'
  labels_file = f'{split}_labels.npy'
  np.save(os.path.join(out_dir, labels_file), np.asarray(labels), allow_pickle=False)
  return {'count': len(inputs), 'dtype': dtype.name, 'encoding': encoding,
          'shards': shards, 'labels': labels_file}


def _write_shards(split, inputs, out_dir, per_shard, encoding, progress):
  """[{'file', 'count'}] of the split's shards, written from `inputs` chunk by chunk."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  n, chunk = len(inputs), _chunk_rows(inputs)
  count = -(-n // per_shard)
  shards = []
  with tqdm(total=n, desc=split, unit='ex', disable=not progress) as bar:
    for s in range(count):
      name = f'{split}-{s:05d}-of-{count:05d}.array_record'
      writer = array_record_module.ArrayRecordWriter(os.path.join(out_dir, name), WRITER_OPTIONS)
      lo, hi = s * per_shard, min(n, (s + 1) * per_shard)
      try:
        for start in range(lo, hi, chunk):
          for row in _encode(np.asarray(inputs[start:min(hi, start + chunk)]), encoding):
            writer.write(row.tobytes())
          bar.update(min(hi, start + chunk) - start)
      finally:
        writer.close()
      shards.append({'file': name, 'count': hi - lo})
  return shards


def _chunk_rows(inputs) -> int:
  row_bytes = np.dtype(inputs.dtype).itemsize * int(np.prod(inputs.shape[1:]))
  return max(1, CHUNK_BYTES // max(row_bytes, 1))


def _exact_pixels(rows: np.ndarray) -> bool:
  """Whether float32 `rows` are all k / 255 for integers k in [0, 255], bit for bit."""
  if rows.dtype != np.float32 or not np.isfinite(rows).all():
    return False
  if rows.size and (rows.min() < 0 or rows.max() > 1):
    return False
  return np.array_equal(_decode_pixels(_quantize(rows)), rows)


def _quantize(rows: np.ndarray) -> np.ndarray:
  return np.rint(rows * 255).astype(np.uint8)


def _decode_pixels(rows: np.ndarray) -> np.ndarray:
  return np.divide(rows, 255, dtype=np.float32)  # as datasets.to_float


def _encode(rows: np.ndarray, encoding: str) -> np.ndarray:
  if encoding == 'raw':
    return np.ascontiguousarray(rows)
  if not _exact_pixels(rows):
    raise _NotPixels
  return _quantize(rows)


def _save_tokenizer(tokenizer, out_dir: str) -> Optional[str]:
  """The kind of `tokenizer` saved as tokenizer.json ('smiles' or 'tokenizers'), or None."""
  if tokenizer is None:
    return None
  from jmed.text import smiles  # pylint: disable=g-import-not-at-top
  kind = 'smiles' if isinstance(tokenizer, smiles.Vocabulary) else 'tokenizers'
  tokenizer.save(os.path.join(out_dir, TOKENIZER))
  return kind


def _write_json(path: str, obj) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1, default=_json_default)
  os.replace(tmp, path)


def _json_default(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f'cannot write {type(value).__name__} {value!r} to {SPEC}.')


# ---------------------------------------------------------------- reading


class RecordArray:
  """A split's inputs `[n, *shape]` in ArrayRecord shards, read on demand.

  `array[index]` (an int, a slice, or a 1-D int or bool array) reads exactly the records it
  names, through grain's `ArrayRecordDataSource`, and returns a NumPy array `[k, *shape]` of
  `dtype` (an int gives one row `[*shape]`). `np.asarray(array)` reads them all. A corrupt
  record raises a `DataError` naming its shard.

  Attributes:
    paths: the shard files, in order; `counts` their records.
    shape, dtype, ndim: as a NumPy array's.
    record_bytes: the bytes of one stored row.
    encoding: how a row is stored (see the module docstring).
    rows_read: rows read so far (all threads), e.g. to check that a process read only its
      share of each batch.
    streamed: True: `jmed.train.loop` streams a training split of these with
      `jmed.data.stream` (grain), reading ahead in threads.
  """

  streamed = True

  def __init__(self, paths: Sequence[str], counts: Sequence[int], row_shape, dtype,
               encoding: str = 'raw'):
    if encoding not in ENCODINGS:
      raise ValueError(f'encoding must be one of {ENCODINGS}, got {encoding!r}.')
    self.paths, self.counts = tuple(paths), tuple(int(c) for c in counts)
    self.row_shape = tuple(int(d) for d in row_shape)
    self.encoding = encoding
    self.dtype = np.dtype(np.float32 if encoding == 'uint8/255' else dtype)
    self._stored = np.dtype(np.uint8 if encoding == 'uint8/255' else dtype)
    self.record_bytes = self._stored.itemsize * int(np.prod(self.row_shape))  # one stored row
    self._ends = np.cumsum(self.counts)
    self._length = int(self._ends[-1]) if self.counts else 0
    self._source = None
    self._lock = threading.Lock()
    self.rows_read = 0

  @property
  def shape(self):
    return (self._length, *self.row_shape)

  @property
  def ndim(self) -> int:
    return 1 + len(self.row_shape)

  def __len__(self) -> int:
    return self.shape[0]

  def __repr__(self) -> str:
    return (f'RecordArray(shape={self.shape}, dtype={self.dtype.name}, '
            f'encoding={self.encoding!r}, shards={len(self.paths)})')

  def __getitem__(self, index) -> np.ndarray:
    if isinstance(index, (int, np.integer)):
      return self._read(np.array([index]))[0]
    if isinstance(index, slice):
      positions = range(len(self))[index]
      return self._read(np.arange(positions.start, positions.stop, positions.step))
    keys = np.asarray(index)
    if keys.dtype == bool:
      keys = np.flatnonzero(keys)
    if keys.ndim != 1 or not (np.issubdtype(keys.dtype, np.integer) or keys.size == 0):
      raise IndexError(f'RecordArray takes an int, a slice or a 1-D int array, got {index!r}.')
    return self._read(keys.astype(np.int64))

  def __array__(self, dtype=None, copy=None):
    del copy
    rows = self[:]
    return rows if dtype is None else rows.astype(dtype)

  def shard_of(self, key: int) -> str:
    """The shard file holding record `key`."""
    return self.paths[int(np.searchsorted(self._ends, key, side='right'))]

  def _read(self, keys: np.ndarray) -> np.ndarray:
    """Rows `keys` [k] (negative counts from the end) as [k, *row_shape] of `dtype`."""
    n = len(self)
    keys = np.where(keys < 0, keys + n, keys)
    if keys.size and (keys.min() < 0 or keys.max() >= n):
      raise IndexError(f'index out of range for {n} rows: {keys[(keys < 0) | (keys >= n)][0]}')
    records = self._records(keys.tolist())
    buffer = bytearray().join(records)  # writable, one copy
    if len(buffer) != len(keys) * self.record_bytes:
      key, record = next((k, r) for k, r in zip(keys, records) if len(r) != self.record_bytes)
      raise DataError(f'{self.shard_of(key)}: a record of {len(record)} bytes, expected '
                      f'{self.record_bytes} ({self._stored.name} {list(self.row_shape)}); '
                      f'the shard does not match {SPEC}.')
    rows = np.frombuffer(buffer, self._stored).reshape(len(keys), *self.row_shape)
    with self._lock:
      self.rows_read += len(keys)
    return _decode_pixels(rows) if self.encoding == 'uint8/255' else rows

  def _records(self, keys: list) -> list:
    """The raw records of `keys`; a reading error names the shard at fault.

    One `source[key]` per record: the source's batched `__getitems__` starts a thread pool (up
    to 64 threads, one per shard touched) on every call, which measured 2x (5 shards) to 8x
    (320 shards) slower for a batch of 256; grain's threads already read batches in parallel.
    """
    source = self._data_source()
    out = []
    for key in keys:
      try:
        out.append(source[key])
      except Exception as error:  # pylint: disable=broad-except  (the reader's RuntimeError)
        raise DataError(f'{self.shard_of(key)}: corrupt shard, record {key - self._first(key)} '
                        f'cannot be read ({error}).') from None
    return out

  def _first(self, key: int) -> int:
    """The global index of the first record of `key`'s shard."""
    shard = int(np.searchsorted(self._ends, key, side='right'))
    return int(self._ends[shard - 1]) if shard else 0

  def _data_source(self):
    with self._lock:
      if self._source is None:
        import grain.python as gp  # pylint: disable=g-import-not-at-top
        # path[start:end] tells the source each shard's size without opening it again.
        self._source = gp.ArrayRecordDataSource(
            [f'{p}[0:{c}]' for p, c in zip(self.paths, self.counts)])
      return self._source


def is_records_dir(path: str) -> bool:
  """Whether `path` is a directory holding spec.json (a records directory)."""
  return os.path.isfile(os.path.join(os.fspath(path), SPEC))


def load(path: str):
  """The `Dataset` written by `write` to `path`: inputs `RecordArray` [n, *input_shape] read
  on demand, labels [n, ...] in memory, and the dataset's own fields from spec.json.

  Every shard is opened to check its record count and the size of its first record.

  Raises:
    MissingDataError: `path`, spec.json, a shard or a labels file is missing (names it).
    DataError: spec.json, a shard or a labels file is corrupt or disagrees with spec.json
      (names it).
  """
  from jmed.data.datasets import Dataset  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  spec = read_spec(path)
  where = os.path.join(path, SPEC)
  try:
    shape = tuple(int(d) for d in spec['input_shape'])
    splits = {split: _load_split(path, split, entry, shape)
              for split, entry in spec['splits'].items()}
    fields = dict(name=spec['name'], num_classes=int(spec['num_classes']), task=spec['task'],
                  input_shape=shape, model_kwargs=spec.get('model_kwargs') or {},
                  task_kwargs=spec.get('task_kwargs') or {},
                  preprocessing=spec.get('preprocessing'), split_info=spec.get('split_info'))
  except (KeyError, TypeError, ValueError, AttributeError) as error:
    if isinstance(error, DataError):
      raise
    raise DataError(f'{where}: corrupt spec ({type(error).__name__}: {error}).') from None
  tokenizer = _load_tokenizer(path, spec.get('tokenizer'))
  return Dataset(splits=splits, tokenizer=tokenizer, **fields)


def read_spec(path: str) -> dict:
  """spec.json of the records directory `path`.

  Raises:
    MissingDataError: no directory or no spec.json. DataError: not a records spec.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    if os.path.exists(path):
      raise DataError(f'{path}: not a directory; records are a directory written by '
                      'scripts/export_records.py.')
    raise MissingDataError(f'Records directory not found: {path}')
  where = os.path.join(path, SPEC)
  if not os.path.isfile(where):
    raise MissingDataError(f'{where} not found: {path} is not a records directory (write one '
                           'with scripts/export_records.py or jmed.data.records.write).')
  try:
    with open(where) as f:
      spec = json.load(f)
  except (OSError, ValueError) as error:
    raise DataError(f'{where}: corrupt spec ({error}).') from None
  if not isinstance(spec, dict) or spec.get('format') != FORMAT:
    found = spec.get('format') if isinstance(spec, dict) else type(spec).__name__
    raise DataError(f'{where}: format {found!r}, expected {FORMAT!r}.')
  return spec


def _load_split(path: str, split: str, entry: dict, shape) -> tuple:
  """(RecordArray, labels) of one split, its shards and labels checked against `entry`."""
  paths = [os.path.join(path, shard['file']) for shard in entry['shards']]
  counts = [int(shard['count']) for shard in entry['shards']]
  inputs = RecordArray(paths, counts, shape, np.dtype(entry['dtype']), entry['encoding'])
  for shard, count in zip(paths, counts):
    _check_shard(shard, count, inputs.record_bytes)
  if len(inputs) != int(entry['count']):
    raise DataError(f'{os.path.join(path, SPEC)}: split {split!r} has {entry["count"]} '
                    f'examples but its shards hold {len(inputs)}.')
  labels = _load_labels(os.path.join(path, entry['labels']), len(inputs))
  return inputs, labels


def _check_shard(shard: str, count: int, record_bytes: int) -> None:
  """Raises unless `shard` opens and holds `count` records, the first of `record_bytes`."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(shard):
    raise MissingDataError(f'Shard not found: {shard}')
  try:
    reader = array_record_module.ArrayRecordReader(shard)
    try:
      found = reader.num_records()
      first = reader.read([0])[0] if found else None
    finally:
      reader.close()
  except Exception as error:  # pylint: disable=broad-except  (the C++ reader's RuntimeError)
    detail = str(error) or 'truncated, or not an ArrayRecord file'
    raise DataError(f'{shard}: corrupt shard ({detail}); export the records again.') from None
  if found != count:
    raise DataError(f'{shard}: {found} records, {SPEC} says {count} (truncated or replaced '
                    'shard?); export the records again.')
  if first is not None and len(first) != record_bytes:
    raise DataError(f'{shard}: records of {len(first)} bytes, expected {record_bytes} for the '
                    f'input shape and dtype in {SPEC}.')


def _load_labels(path: str, count: int) -> np.ndarray:
  if not os.path.isfile(path):
    raise MissingDataError(f'Labels file not found: {path}')
  try:
    labels = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as error:
    raise DataError(f'{path}: corrupt labels file ({error}).') from None
  if len(labels) != count:
    raise DataError(f'{path}: {len(labels)} labels for {count} examples.')
  return labels


def _load_tokenizer(path: str, kind: Optional[str]):
  if kind is None:
    return None
  file = os.path.join(path, TOKENIZER)
  if kind == 'smiles':
    from jmed.text import smiles  # pylint: disable=g-import-not-at-top
    return smiles.load(file)
  if kind == 'tokenizers':
    from jmed.text import tokenizer  # pylint: disable=g-import-not-at-top
    return tokenizer.load(file)
  raise DataError(f'{os.path.join(path, SPEC)}: unknown tokenizer kind {kind!r}.')


def rows_read(dataset, split: str = 'train') -> Optional[int]:
  """Rows read so far from `split`'s inputs when they are a `RecordArray`, else None."""
  inputs = dataset.splits[split][0]
  return inputs.rows_read if isinstance(inputs, RecordArray) else None


# ---------------------------------------------------------------- the 'records' source


def load_user(data, *, text=None, molecule=None):
  """The 'records' source of `jmed.data.user` (`--data DIR`): `load(data.path)`.

  The dataset was made when it was exported, so every other `DataConfig` field must keep its
  default.

  Raises:
    ConfigError: a `DataConfig` field set that does not apply (named).
  """
  del text, molecule
  from jmed.configs import DataConfig  # pylint: disable=g-import-not-at-top
  default = DataConfig()
  set_ = [f.name for f in dataclasses.fields(DataConfig)
          if f.name not in ('path', 'source') and getattr(data, f.name) != getattr(default, f.name)]
  if set_:
    raise ConfigError(f'{", ".join("data." + s for s in set_)} do not apply to records '
                      f'({data.path}): they were fixed when the records were exported.')
  return load(data.path)


def describe(spec: Dict[str, Any]) -> str:
  """One line per split of a spec: examples, shards, encoding, dtype."""
  return '\n'.join(
      f'{split}: {entry["count"]} examples in {len(entry["shards"])} shard(s), '
      f'{entry["encoding"]} ({entry["dtype"]} [n, {", ".join(map(str, spec["input_shape"]))}])'
      for split, entry in spec['splits'].items())
