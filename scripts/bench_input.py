#!/usr/bin/env python
r"""Host input throughput of the streaming pipeline (jmed.data.records + jmed.data.stream).

  python scripts/bench_input.py
  python scripts/bench_input.py --batch-size 256 --processes 8 --threads 1 4 8 \
      --examples 224x224x3:uint8/255 224x224x3:raw --seconds 5 --output input.json

For each example kind (shape:encoding; 'uint8/255' stores pixels as bytes and decodes them to
float32, as records.write does for [0, 1] images; 'raw' stores float32) it writes synthetic
records (uniform noise pixels: the worst case for compression) to a temporary folder, then
times `stream.train_batches` for one process's rows of each global batch (--batch-size split
over --processes; this is process 0) with each --threads count, for about --seconds after a
first batch. Prints a table and, with --output, JSON: global batches/s (the step rate the input
can feed), this process's examples/s and MB/s of float32 batches, and the write rate (MB
written per second, making the noise included).

The shards are listed --repeat times to make a long epoch from few files (the same files, just
written, so read from the page cache): this measures the pipeline's CPU cost (reading records,
decompressing, decoding, gathering), not the disk. No accelerator is needed.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

from jmed.data import records, stream
from jmed.data.datasets import Dataset

DEFAULT_EXAMPLES = ('224x224x3:uint8/255', '224x224x3:raw', '28x28x1:uint8/255',
                    '64x64x64x1:uint8/255')


class _Noise:
  """A lazy float32 array [n, *shape] of uniform noise pixels k / 255 (seeded by the first row
  asked for), so writing streams it as it would a dataset larger than memory."""

  dtype = np.dtype(np.float32)

  def __init__(self, n: int, shape):
    self.shape = (n, *shape)
    self.ndim = len(self.shape)

  def __len__(self):
    return self.shape[0]

  def __getitem__(self, index):
    rows = np.atleast_1d(np.arange(len(self))[index])
    rng = np.random.default_rng(int(rows[0]) if rows.size else 0)
    pixels = rng.integers(0, 256, (len(rows), *self.shape[1:]), np.uint8)
    return np.divide(pixels, 255, dtype=np.float32)


def _parse_kind(kind: str):
  shape, _, encoding = kind.partition(':')
  if encoding not in records.ENCODINGS:
    raise SystemExit(f'{kind}: the encoding must be one of {", ".join(records.ENCODINGS)}')
  return tuple(int(d) for d in shape.split('x')), encoding


def _write(folder: str, shape, encoding: str, max_bytes: int, batch_size: int):
  """(RecordArray of the written examples, seconds, bytes written)."""
  stored = (1 if encoding == 'uint8/255' else 4) * int(np.prod(shape))
  n = max(batch_size, min(1024, max_bytes // stored))
  dataset = Dataset(name='noise', splits={'train': (_Noise(n, shape), np.zeros(n, np.int32))},
                    num_classes=2, task='binary', input_shape=shape)
  start = time.perf_counter()
  records.write(dataset, folder, examples_per_shard=256, encoding=encoding, progress=False)
  seconds = time.perf_counter() - start
  size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
  return records.load(folder).splits['train'][0], seconds, size


def _repeated(inputs: records.RecordArray, repeat: int) -> records.RecordArray:
  return records.RecordArray(inputs.paths * repeat, inputs.counts * repeat, inputs.row_shape,
                             inputs.dtype, inputs.encoding)


def _time(inputs, labels, batch_size: int, rows: slice, threads: int, prefetch: int,
          seconds: float) -> dict:
  """Batches and examples per second of `rows` of each global batch after the first batch."""
  batches, epoch, elapsed = 0, 0, 0.0
  start = None
  while elapsed < seconds:
    it = stream.train_batches(inputs, labels, batch_size, seed=0, epoch=epoch, rows=rows,
                              num_threads=threads, prefetch=prefetch)
    for _ in it:
      if start is None:  # the first batch: threads start, files open
        start = time.perf_counter()
        continue
      batches += 1
      elapsed = time.perf_counter() - start
      if elapsed >= seconds:
        it.close()
        break
    epoch += 1
  local = len(range(batch_size)[rows])
  row_mb = 4 * int(np.prod(inputs.row_shape)) / 1e6
  return {'threads': threads, 'batches': batches, 'seconds': round(elapsed, 3),
          'batches_per_sec': batches / elapsed, 'examples_per_sec': batches * local / elapsed,
          'mb_per_sec': batches * local * row_mb / elapsed}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--examples', nargs='+', default=DEFAULT_EXAMPLES,
                      help='example kinds, <d1>x<d2>x...:<encoding>.')
  parser.add_argument('--batch-size', type=int, default=256, help='global batch.')
  parser.add_argument('--processes', type=int, default=1,
                      help='processes sharing each global batch; this is process 0.')
  parser.add_argument('--threads', type=int, nargs='+', default=(1, 4),
                      help='grain reading threads (stream num_threads) to time.')
  parser.add_argument('--prefetch', type=int, default=stream.PREFETCH,
                      help='batches read ahead.')
  parser.add_argument('--seconds', type=float, default=2.0, help='timing per configuration.')
  parser.add_argument('--max-mb', type=int, default=256,
                      help='at most this many MB of distinct examples written per kind.')
  parser.add_argument('--repeat', type=int, default=64,
                      help='the shards listed this many times make one epoch.')
  parser.add_argument('--output', default='', help='also write the results as JSON here.')
  args = parser.parse_args(argv)
  if args.batch_size % args.processes:
    raise SystemExit(f'--batch-size {args.batch_size} must divide over --processes '
                     f'{args.processes}')
  rows = slice(0, args.batch_size // args.processes)
  results = []
  for kind in args.examples:
    shape, encoding = _parse_kind(kind)
    with tempfile.TemporaryDirectory() as folder:
      written, write_seconds, size = _write(folder, shape, encoding, args.max_mb << 20,
                                            args.batch_size)
      inputs = _repeated(written, args.repeat)
      labels = np.zeros(len(inputs), np.int32)
      for threads in args.threads:
        row = _time(inputs, labels, args.batch_size, rows, threads, args.prefetch, args.seconds)
        row.update(example=kind, stored_kb=round(size / len(written) / 1e3, 1),
                   write_mb_per_sec=size / 1e6 / write_seconds)
        results.append(row)
        print(f'{kind:>22} threads {threads:>2}: {row["batches_per_sec"]:8.2f} batches/s '
              f'{row["examples_per_sec"]:9.0f} examples/s', file=sys.stderr, flush=True)
  report = {'batch_size': args.batch_size, 'processes': args.processes,
            'rows_per_batch': rows.stop, 'prefetch': args.prefetch, 'cpus': os.cpu_count(),
            'machine': platform.platform(), 'results': results}
  print(_table(report))
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(report, f, indent=1)
  return 0


def _table(report: dict) -> str:
  lines = [f'global batch {report["batch_size"]}, {report["rows_per_batch"]} rows per batch '
           f'read by this process (1 of {report["processes"]}), prefetch {report["prefetch"]}, '
           f'{report["cpus"]} CPUs', '',
           '| examples | stored KB/example | threads | global batches/s | examples/s '
           '| MB/s (float32) | write MB/s |', '|---|---|---|---|---|---|---|']
  for r in report['results']:
    lines.append(f'| {r["example"]} | {r["stored_kb"]} | {r["threads"]} | '
                 f'{r["batches_per_sec"]:.2f} | {r["examples_per_sec"]:.0f} | '
                 f'{r["mb_per_sec"]:.0f} | {r["write_mb_per_sec"]:.0f} |')
  return '\n'.join(lines)


if __name__ == '__main__':
  sys.exit(main())
