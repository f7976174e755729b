#!/usr/bin/env python
"""Training throughput of jmed's seed CNN against the seed's own Keras model, swept over batch sizes.

Same data (MNIST offline protocol, 8,000 training images), epochs and machine for every peer. Each
measurement runs in its own fresh process (TensorFlow's and XLA's thread pools in one process slow
each other down: measured, both lose about a third), and rounds alternate the peers and batch sizes
so that all see the same machine state. jmed's figure is what `jmed.train.fit` reports (compilation
excluded); Keras' is `model.fit` wall time after a warm-up fit (tracing excluded). The ratio per
batch size is of the medians over rounds. Needs TensorFlow: `pip install -e .[bench]`.

Peers: 'jmed' (float32, the default config), 'keras' (float32), and on request 'jmed_whole'
(float32 without micro-batches: each step's whole batch at once, as before they existed) and
'jmed_bf16' (bfloat16 compute, float32 parameters).

  python scripts/bench_seed_cnn.py --data-dir ../shared/data --batch-sizes 32,128,512 --rounds 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

PEERS = ('jmed', 'keras', 'jmed_whole', 'jmed_bf16')


def jmed_round(dataset, args, peer: str) -> float:
  from jmed.configs import OptimizerConfig, TrainConfig
  from jmed.train.loop import fit
  with tempfile.TemporaryDirectory() as out:
    cfg = TrainConfig(model='seed_cnn', dataset=args.dataset, epochs=args.epochs,
                      batch_size=args.batch_size, optimizer=OptimizerConfig('sgd', 0.01),
                      steps_per_dispatch=args.steps_per_dispatch, output_dir=out, progress=False,
                      dtype='bfloat16' if peer == 'jmed_bf16' else 'float32',
                      micro_batch_size=args.batch_size if peer == 'jmed_whole' else 0)
    return fit(cfg, dataset=dataset)['train_images_per_sec']


def keras_round(dataset, args) -> float:
  import keras_seed
  x, y = dataset.splits['train']
  model = keras_seed.compile_model(keras_seed.build_model(dataset.num_classes,
                                                          dataset.input_shape))
  model.fit(x[:20 * args.batch_size], y[:20 * args.batch_size], batch_size=args.batch_size,
            epochs=1, verbose=0)  # warm-up: tracing and graph building
  start = time.perf_counter()
  model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
  return args.epochs * len(x) / (time.perf_counter() - start)


def run_worker(peer: str, batch_size: int, args) -> float:
  """Runs one round of `peer` at `batch_size` in a fresh process; returns its images/s."""
  argv = ['--worker', peer, '--batch-size', str(batch_size), '--dataset', args.dataset,
          '--epochs', str(args.epochs), '--steps-per-dispatch', str(args.steps_per_dispatch)]
  if args.data_dir:
    argv += ['--data-dir', args.data_dir]
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv],
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f'{peer} round at batch {batch_size} failed:\n{proc.stderr[-3000:]}')
  return float(proc.stdout.strip().splitlines()[-1])


def sweep(args, peers, batch_sizes) -> dict:
  """{batch: {peer: [images/s per round]}}, rounds alternating peers and batch sizes."""
  results = {b: {p: [] for p in peers} for b in batch_sizes}
  for r in range(args.rounds):
    for b in batch_sizes:
      for peer in peers if r % 2 == 0 else peers[::-1]:
        results[b][peer].append(run_worker(peer, b, args))
      print(f'round {r} batch {b}: ' + ', '.join(
          f'{p} {results[b][p][-1]:.0f}' for p in peers) + ' images/s', flush=True)
  return results


def report(args, results, peers) -> dict:
  rows = []
  for b, by_peer in results.items():
    med = {p: statistics.median(v) for p, v in by_peer.items()}
    rows.append({'batch_size': b, 'images_per_sec': by_peer, 'median': med,
                 **{f'ratio_{p}_over_keras': med[p] / med['keras']
                    for p in peers if p != 'keras' and 'keras' in med}})
  return {'dataset': args.dataset, 'epochs_per_round': args.epochs, 'rounds': args.rounds,
          'steps_per_dispatch': args.steps_per_dispatch, 'cpu_count': os.cpu_count(),
          'peers': list(peers), 'batches': rows}


def markdown(rep: dict) -> str:
  peers = rep['peers']
  others = [p for p in peers if p != 'keras']
  head = ('| batch | ' + ' | '.join(f'{p} images/s' for p in peers) + ' | ' +
          ' | '.join(f'{p} / keras' for p in others) + ' |')
  lines = [head, '|' + '---|' * (1 + len(peers) + len(others))]
  for row in rep['batches']:
    lines.append(f'| {row["batch_size"]} | ' +
                 ' | '.join(f'{row["median"][p]:,.0f}' for p in peers) + ' | ' +
                 ' | '.join(f'{row[f"ratio_{p}_over_keras"]:.2f}x' for p in others) + ' |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--dataset', default='mnist')
  parser.add_argument('--data-dir', default=None)
  parser.add_argument('--batch-sizes', default='32,128,512',
                      help='comma-separated batch sizes of the sweep')
  parser.add_argument('--peers', default='jmed,keras',
                      help=f'comma-separated, from {",".join(PEERS)}; ratios are against keras')
  parser.add_argument('--epochs', type=int, default=2, help='epochs per timed round')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps-per-dispatch', type=int, default=4)
  parser.add_argument('--output', default=None, help='also write the results JSON here')
  parser.add_argument('--worker', choices=PEERS, help=argparse.SUPPRESS)
  parser.add_argument('--batch-size', type=int, default=32, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args.worker:
    from jmed import data as jdata
    dataset = jdata.load_dataset(args.dataset, data_dir=args.data_dir)
    rate = (keras_round(dataset, args) if args.worker == 'keras' else
            jmed_round(dataset, args, args.worker))
    print(rate)
    return 0

  peers = tuple(p.strip() for p in args.peers.split(','))
  unknown = [p for p in peers if p not in PEERS]
  if unknown or 'keras' not in peers:
    parser.error(f'--peers must include keras and name only {", ".join(PEERS)}; got {args.peers}')
  try:
    batch_sizes = [int(b) for b in args.batch_sizes.split(',')]
  except ValueError:
    parser.error(f'--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}')
  rep = report(args, sweep(args, peers, batch_sizes), peers)
  print(json.dumps(rep, indent=2))
  print(markdown(rep))
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(rep, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
