"""Training batches streamed from a lazy array with grain: reads overlap compute.

`train_batches` gives the batches `jmed.data.pipeline.train_batches` gives (same order, same
rows, same dtypes), but as a grain `MapDataset` over batch indices, each mapped to "gather my
rows of batch i", read ahead by a pool of threads (`to_iter_dataset` with `gp.ReadOptions`).
Only the rows asked for are read, so with `rows` a process's share
(`jmed.train.parallel.local_rows`) each process reads its own examples of each global batch
and nothing else. `start` skips to any batch of the epoch without reading the ones before:
a run resumed mid-epoch sees exactly the batches an uninterrupted one would.

The inputs are anything indexable by an int array that returns NumPy rows: a
`jmed.data.records.RecordArray` (ArrayRecord shards), `jmed.data.images.ImageFiles`, or a
NumPy array.
"""

from typing import Iterator, Optional

import grain.python as gp
import numpy as np

from jmed.data import pipeline

NUM_THREADS = 4  # batches read at once
PREFETCH = 4  # batches read ahead of the one consumed


def train_batches(inputs, labels: np.ndarray, batch_size: int, *, seed: int, epoch: int,
                  rows: slice = slice(None), start: int = 0, stop: Optional[int] = None,
                  num_threads: int = NUM_THREADS,
                  prefetch: int = PREFETCH) -> Iterator[pipeline.Batch]:
  """Batches `start`..`stop` of one shuffled training epoch, read ahead in threads.

  Args:
    inputs: `[n, ...]`, floating or integer, in memory or lazy (e.g. a `RecordArray`).
    labels: `[n, ...]`.
    batch_size: examples per global batch; the last incomplete batch is dropped.
    seed: base seed of the shuffle.
    epoch: epoch index; order is `pipeline.epoch_permutation(n, seed, epoch)`.
    rows: the rows of each batch to read, e.g. this process's share.
    start: the first batch (0 .. n // batch_size); earlier batches are not read.
    stop: one past the last batch (None: the epoch's end); later batches are not read.
    num_threads: threads reading batches.
    prefetch: batches read ahead (each `[len(rows), ...]` in memory while it waits).

  Returns:
    An iterator of `{'inputs': [b, ...], 'labels': [b, ...]}`, b the length of `rows` of
    `batch_size`: the items `start:stop` of `pipeline.train_batches(inputs, labels,
    batch_size, seed=seed, epoch=epoch, rows=rows)`. Closing it (or exhausting it) stops
    its threads. Arguments are checked at call time.
  """
  n = pipeline.check_arrays(inputs, labels, batch_size)  # the in-memory pipeline's checks
  batches = n // batch_size
  if batches == 0:
    raise ValueError(f'batch_size {batch_size} > {n} examples: no complete batch.')
  stop = batches if stop is None else min(stop, batches)
  if not 0 <= start <= stop:
    raise ValueError(f'start must be in [0, {stop}], got {start}.')
  if num_threads < 1 or prefetch < 1:
    raise ValueError(f'num_threads and prefetch must be >= 1, got {num_threads}, {prefetch}.')
  order = pipeline.epoch_permutation(n, seed, epoch)

  def read_batch(i: int) -> pipeline.Batch:
    return pipeline.gather(inputs, labels, order[i * batch_size:(i + 1) * batch_size][rows])

  dataset = gp.MapDataset.range(start, stop).map(read_batch)
  options = gp.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  return _closing(iter(dataset.to_iter_dataset(options)))


def _closing(iterator) -> Iterator[pipeline.Batch]:
  """Yields from grain's `iterator`, closing it (its thread pool) when done or closed."""
  try:
    yield from iterator
  finally:
    iterator.close()
