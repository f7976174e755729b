"""A pure-NumPy input pipeline: shuffled train batches, padded eval batches.

Batches are dicts of host arrays:

  train: {'inputs': [batch, ...], 'labels': [batch, ...]}
  eval:  the same plus 'valid': [batch] float32, 1 on real examples, 0 on padding.

Inputs are images [batch, height, width, channels], token ids, feature vectors,
...; labels are in the layout of the dataset's task (`jmed.tasks`). Floating
arrays come out float32, integer ones (token ids, class ids) int32.
"""

import queue
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, Optional

import numpy as np

Batch = Dict[str, np.ndarray]


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  """The training order of epoch `epoch`: a permutation of `range(n)`.

  Drawn from `np.random.default_rng((seed, epoch))`, so it is the same for the
  same `(seed, epoch)` and differs across epochs. A train loop may gather with
  it on device instead of calling `train_batches`.

  Returns:
    int64 indices `[n]`.
  """
  if n < 0 or seed < 0 or epoch < 0:
    raise ValueError(f'n, seed and epoch must be >= 0, got {n}, {seed}, '
                     f'{epoch}.')
  return np.random.default_rng((seed, epoch)).permutation(n)


def train_batches(inputs: np.ndarray, labels: np.ndarray, batch_size: int, *,
                  seed: int, epoch: int, drop_remainder: bool = True,
                  rows: slice = slice(None), start: int = 0) -> Iterator[Batch]:
  """Batches of one shuffled training epoch.

  Args:
    inputs: `[n, ...]`, floating or integer (token ids).
    labels: `[n, ...]`.
    batch_size: examples per batch.
    seed: base seed of the shuffle.
    epoch: epoch index; order is `epoch_permutation(n, seed, epoch)`.
    drop_remainder: drop the last incomplete batch (static shapes for jit).
    rows: the rows of each batch to gather, e.g. a data-parallel process's share
      (`jmed.train.parallel.local_rows`); only those examples are read.
    start: the first batch of the epoch to give (a run resumed mid-epoch); the batches before
      it are not read.

  Returns:
    An iterator of `{'inputs': [b, ...], 'labels': [b, ...]}`,
    b = batch_size (except possibly the last batch when `drop_remainder` is
    False), or the length of `rows` of it. Arguments are checked at call time.
  """
  n = check_arrays(inputs, labels, batch_size)
  if drop_remainder and n < batch_size:
    raise ValueError(f'batch_size {batch_size} > {n} examples: with '
                     'drop_remainder=True no batch would be produced.')
  if start < 0:
    raise ValueError(f'start must be >= 0, got {start}.')
  order = epoch_permutation(n, seed, epoch)
  stop = n - n % batch_size if drop_remainder else n
  return _gather_batches(inputs, labels, order[start * batch_size:stop], batch_size, rows)


def _model_dtype(x: np.ndarray) -> np.ndarray:
  """float32 for floating arrays, int32 for integer ones (no copy when already so)."""
  kind = np.float32 if np.issubdtype(x.dtype, np.floating) else np.int32
  return x.astype(kind, copy=False)


def gather(inputs, labels, index: np.ndarray) -> Batch:
  """`{'inputs': inputs[index], 'labels': labels[index]}` in the model's dtypes (float32 or
  int32); only the rows in `index` are read from a lazy array."""
  return {'inputs': _model_dtype(inputs[index]), 'labels': _model_dtype(labels[index])}


def _gather_batches(inputs, labels, order, batch_size, rows) -> Iterator[Batch]:
  """Yields `inputs[order]`, `labels[order]` in chunks of `batch_size` (`rows` of each)."""
  for start in range(0, len(order), batch_size):
    yield gather(inputs, labels, order[start:start + batch_size][rows])


def eval_batches(inputs: np.ndarray, labels: np.ndarray, batch_size: int,
                 rows: slice = slice(None)) -> Iterator[Batch]:
  """Batches holding every example once, in order, at a fixed batch size.

  The last batch is zero-padded to `batch_size`; its 'valid' is 1 on real
  examples and 0 on padding, so metrics weighted by the mask count each
  example exactly once while shapes stay static for jit.

  Args:
    inputs: `[n, ...]`.
    labels: `[n, ...]`.
    batch_size: examples per batch.
    rows: the rows of each padded batch to produce, e.g. a data-parallel
      process's share (`jmed.train.parallel.local_rows`).

  Returns:
    An iterator of `{'inputs': [batch_size, ...], 'labels': [batch_size, ...],
    'valid': [batch_size] float32}` (the length of `rows` instead of
    batch_size when given). Arguments are checked at
    call time.
  """
  check_arrays(inputs, labels, batch_size)
  return _padded_batches(inputs, labels, batch_size, rows)


def _padded_batches(inputs, labels, batch_size, rows) -> Iterator[Batch]:
  """Yields `rows` of consecutive batches, the last batch zero-padded and masked."""
  positions = np.arange(batch_size)[rows]
  for start in range(0, len(inputs), batch_size):
    index = start + positions
    index = index[index < len(inputs)]
    batch = gather(inputs, labels, index)
    batch = {key: _pad(value, len(positions)) for key, value in batch.items()}
    batch['valid'] = (start + positions < len(inputs)).astype(np.float32)
    yield batch


def _pad(x: np.ndarray, size: int) -> np.ndarray:
  """Zero-pads `x` along axis 0 to `size` rows."""
  if len(x) == size:
    return x
  padding = [(0, size - len(x))] + [(0, 0)] * (x.ndim - 1)
  return np.pad(x, padding)


def check_arrays(inputs: np.ndarray, labels: np.ndarray, batch_size: int) -> int:
  """Validates batching arguments; returns the number of examples."""
  if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
    raise ValueError(f'batch_size must be a positive int, got {batch_size!r}.')
  if inputs.ndim < 2:
    raise ValueError('inputs must be [n, ...] (images [n, height, width, channels]), got '
                     f'shape {inputs.shape}.')
  if labels.ndim < 1:
    raise ValueError(f'labels must be [n, ...], got shape {labels.shape}.')
  if len(inputs) != len(labels):
    raise ValueError(f'{len(inputs)} inputs but {len(labels)} labels.')
  if not (np.issubdtype(inputs.dtype, np.floating)
          or inputs.dtype in (np.int32, np.int64)):
    raise ValueError('inputs must be floating point (e.g. images in [0, 1]: '
                     'divide uint8 pixels by 255) or int32/int64 token ids, got '
                     f'{inputs.dtype}.')
  return len(inputs)


_END = object()


class _Raised:
  """Carries a producer exception to the consumer."""

  def __init__(self, error: BaseException):
    self.error = error


def prefetch(iterator: Iterable[Any], size: int = 2, *,
             transform: Optional[Callable[[Any], Any]] = None) -> Iterator[Any]:
  """Runs `iterator` (and `transform`) in a background thread, `size` ahead.

  Args:
    iterator: any iterable, e.g. `train_batches(...)`.
    size: how many items may wait in the queue.
    transform: optional function applied to each item in the background
      thread, e.g. `jax.device_put` to overlap host-to-device copies.

  Returns:
    An iterator over the (transformed) items, in order. An exception raised by
    `iterator` or `transform` is re-raised by the consumer's `next`.
  """
  if size < 1:
    raise ValueError(f'size must be >= 1, got {size}.')
  return _Prefetcher(iter(iterator), size, transform)


class _Prefetcher:
  """Iterator side of `prefetch`; stops its daemon thread when closed."""

  def __init__(self, iterator, size, transform):
    self._queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._done = False
    self._thread = threading.Thread(
        target=_produce, args=(iterator, transform, self._queue, self._stop),
        name='jmed-prefetch', daemon=True)
    self._thread.start()

  def __iter__(self):
    return self

  def __next__(self):
    if self._done:
      raise StopIteration
    item = self._queue.get()
    if item is _END or isinstance(item, _Raised):
      self._done = True
      if isinstance(item, _Raised):
        raise item.error
      raise StopIteration
    return item

  def close(self):
    """Stops the producer thread early (it exits at its next item)."""
    self._done = True
    self._stop.set()

  def __del__(self):
    self._stop.set()


def _produce(iterator, transform, out: queue.Queue, stop: threading.Event):
  """Thread body: pushes items, then `_END` or the exception raised."""
  try:
    for item in iterator:
      if transform is not None:
        item = transform(item)
      if not _put(out, item, stop):
        return
  except BaseException as error:  # pylint: disable=broad-except
    _put(out, _Raised(error), stop)
    return
  _put(out, _END, stop)


def _put(out: queue.Queue, item: Any, stop: threading.Event) -> bool:
  """Puts `item` unless `stop` is set first; returns whether it was put."""
  while not stop.is_set():
    try:
      out.put(item, timeout=0.1)
      return True
    except queue.Full:
      continue
  return False
