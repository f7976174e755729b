#!/usr/bin/env python
"""Where a train step's time goes: images/s and the costliest XLA operations per batch size.

Times `fit`'s data-parallel train step of a model (the seed CNN by default) on random inputs at
each batch size, with and without micro-batches, then traces a few steps with `jax.profiler`
and prints the operations (XLA fusions, dots, copies) that took longest, by their HLO names.
`--xla-dump DIR` also writes the optimised HLO (`*after_optimizations.txt`), to read what each
name computes. No accelerator or data files needed.

  python scripts/profile_step.py --batch-sizes 32,128,512 --top 12
  python scripts/profile_step.py --batch-sizes 32,128,512 --micro-batch-size 512  # no micro-batches
  python scripts/profile_step.py --batch-sizes 512 --xla-dump /tmp/hlo
"""

import argparse
import collections
import functools
import glob
import gzip
import json
import os
import sys
import tempfile
import time


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='seed_cnn')
  parser.add_argument('--input-shape', default='28,28,1', help='per-example input shape')
  parser.add_argument('--num-classes', type=int, default=10)
  parser.add_argument('--batch-sizes', default='32,128,512')
  parser.add_argument('--micro-batch-size', type=int, default=0,
                      help='0: as fit picks it (32-row micro-batches on CPU); at least the '
                           'batch size: none (the whole batch at once)')
  parser.add_argument('--steps-per-dispatch', type=int, default=1,
                      help='steps per call (unrolled: each step gets its own op names)')
  parser.add_argument('--repeats', type=int, default=5, help='timed repeats (the best counts)')
  parser.add_argument('--top', type=int, default=12, help='operations listed per batch size')
  parser.add_argument('--xla-dump', default=None, help='write the optimised HLO here')
  args = parser.parse_args(argv)
  try:
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(',')]
    args.input_shape = tuple(int(n) for n in args.input_shape.split(','))
  except ValueError:
    parser.error('--batch-sizes and --input-shape take comma-separated integers')
  if args.micro_batch_size < 0:
    parser.error('--micro-batch-size must be >= 0')
  return args


def compiled_step(args, batch_size: int):
  """(train_fn, state, batches, micro_batches) of the model at `batch_size`."""
  import jax
  import numpy as np
  from jmed import models
  from jmed.configs import OptimizerConfig
  from jmed.optim import make_optimizer
  from jmed.train import parallel, steps
  from jmed.train.state import create_train_state
  model = models.get_model(args.model, num_classes=args.num_classes)
  tx = make_optimizer(OptimizerConfig(name='sgd', learning_rate=0.01))
  rng = np.random.default_rng(0)
  shape = (args.steps_per_dispatch, batch_size)
  host = {'inputs': rng.random(shape + args.input_shape, np.float32),
          'labels': rng.integers(0, args.num_classes, shape).astype(np.int32)}
  state = create_train_state(model, tx, host['inputs'][0, :1], 0)
  if args.micro_batch_size >= batch_size:
    micro = 1
  elif args.micro_batch_size:
    if batch_size % args.micro_batch_size:
      raise SystemExit(f'error: --micro-batch-size {args.micro_batch_size} does not divide '
                       f'batch {batch_size}')
    micro = batch_size // args.micro_batch_size
  else:
    micro = steps.auto_micro_batches(batch_size, state)
  mesh = parallel.make_mesh()
  train = parallel.data_parallel(
      functools.partial(steps.train_steps, micro_batches=micro), mesh, batch_axis=1)
  state = parallel.replicate(state, mesh)
  batches = parallel.shard_batch(host, mesh, batch_axis=1)
  state, _ = train(state, batches)  # compiles
  jax.block_until_ready(state)
  return train, state, batches, micro


def images_per_sec(train, state, batches, images_per_call: int, repeats: int):
  """The best of `repeats` timings of enough calls for ~0.5 s each; returns (rate, state)."""
  import jax
  start = time.perf_counter()
  state, _ = train(state, batches)
  jax.block_until_ready(state)
  calls = max(2, int(0.5 / max(time.perf_counter() - start, 1e-4)))
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      state, _ = train(state, batches)
    jax.block_until_ready(state)
    best = min(best, (time.perf_counter() - start) / calls)
  return images_per_call / best, state


def op_times(train, state, batches, calls: int = 10):
  """{operation name: (ms per call, count per call)} from a `jax.profiler` trace."""
  import jax
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(calls):
        state, _ = train(state, batches)
      jax.block_until_ready(state)
    path = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)[0]
    with gzip.open(path) as f:
      events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  total, count = collections.Counter(), collections.Counter()
  for e in events:
    name = e.get('name', '')
    # complete events of XLA operations; skip Python frames ('$...') and runtime wrappers
    if e.get('ph') == 'X' and not name.startswith('$') and not any(
        w in name for w in ('Execute', 'PjitFunction', 'ThreadPool', 'Pjrt', 'PjRt')):
      total[name] += e['dur'] / 1e3
      count[name] += 1
  return {n: (t / calls, count[n] / calls) for n, t in total.items()}


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.xla_dump:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' --xla_dump_to={args.xla_dump}').strip()
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  report = []
  for batch_size in args.batch_sizes:
    train, state, batches, micro = compiled_step(args, batch_size)
    rate, state = images_per_sec(train, state, batches, batch_size * args.steps_per_dispatch,
                                 args.repeats)
    ops = op_times(train, state, batches)
    per_step = args.steps_per_dispatch
    top = sorted(ops.items(), key=lambda kv: -kv[1][0])[:args.top]
    print(f'\nbatch {batch_size}, {micro} micro-batch(es): {rate:,.0f} images/s '
          f'({1e3 * batch_size / rate:.2f} ms a step)')
    print(f'  {"ms/step":>8}  {"count":>5}  operation')
    for name, (ms, n) in top:
      print(f'  {ms / per_step:8.3f}  {n / per_step:5.1f}  {name}')
    report.append({'batch_size': batch_size, 'micro_batches': micro, 'images_per_sec': rate,
                   'top_ops_ms_per_step': {n: ms / per_step for n, (ms, _) in top}})
  print(json.dumps(report, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())
