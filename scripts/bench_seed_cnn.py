#!/usr/bin/env python
"""Training throughput of jmed's seed CNN against the seed's own Keras model, in one run.

Same data (MNIST offline protocol, 8,000 training images), batch, epochs and machine; rounds
alternate jmed and Keras so that both see the same machine state. Each round runs in its own
process: TensorFlow's and XLA's thread pools in one process slow each other down (measured: both
lose about a third). jmed's figure is what `jmed.train.fit` reports (compilation excluded);
Keras' is `model.fit` wall time after a warm-up fit (tracing excluded). Needs TensorFlow:
`pip install -e .[bench]`.

  python scripts/bench_seed_cnn.py --data-dir ../shared/data --rounds 3
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


def jmed_round(dataset, args, steps_per_dispatch) -> float:
  from jmed.configs import OptimizerConfig, TrainConfig
  from jmed.train.loop import fit
  with tempfile.TemporaryDirectory() as out:
    cfg = TrainConfig(model='seed_cnn', dataset=args.dataset, epochs=args.epochs,
                      batch_size=args.batch_size, optimizer=OptimizerConfig('sgd', 0.01),
                      steps_per_dispatch=steps_per_dispatch, output_dir=out, progress=False)
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


def run_worker(peer: str, argv) -> float:
  """Runs one round of `peer` in a fresh process; returns its images/s."""
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), '--worker', peer, *argv],
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f'{peer} round failed:\n{proc.stderr[-3000:]}')
  return float(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--dataset', default='mnist')
  parser.add_argument('--data-dir', default=None)
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--epochs', type=int, default=2, help='epochs per timed round')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps-per-dispatch', type=int, default=4)
  parser.add_argument('--output', default=None, help='also write the results JSON here')
  parser.add_argument('--worker', choices=('jmed', 'keras'), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  argv = sys.argv[1:] if argv is None else argv

  if args.worker:
    from jmed import data as jdata
    dataset = jdata.load_dataset(args.dataset, data_dir=args.data_dir)
    rate = (jmed_round(dataset, args, args.steps_per_dispatch) if args.worker == 'jmed' else
            keras_round(dataset, args))
    print(rate)
    return 0

  results = {'jmed': [], 'keras': []}
  for r in range(args.rounds):
    for peer in ('jmed', 'keras'):
      results[peer].append(run_worker(peer, argv))
    print(f'round {r}: jmed {results["jmed"][-1]:.0f} images/s, '
          f'keras {results["keras"][-1]:.0f} images/s', flush=True)
  med = {k: statistics.median(v) for k, v in results.items()}
  report = {
      'dataset': args.dataset, 'batch_size': args.batch_size,
      'epochs_per_round': args.epochs, 'rounds': args.rounds,
      'steps_per_dispatch': args.steps_per_dispatch, 'cpu_count': os.cpu_count(),
      'jmed_images_per_sec': results['jmed'], 'keras_images_per_sec': results['keras'],
      'median_jmed': med['jmed'], 'median_keras': med['keras'],
      'ratio_jmed_over_keras': med['jmed'] / med['keras'],
  }
  print(json.dumps(report, indent=2))
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(report, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
