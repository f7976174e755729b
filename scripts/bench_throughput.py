#!/usr/bin/env python
"""Training throughput and MFU of jmed's train step (the one `fit` runs) per model, batch, dtype.

Each configuration is timed on a batch kept on the devices (synthetic: device speed) and on real
data through jmed's input pipeline (PneumoniaMNIST, resized on the host for 224x224x3 inputs;
Medical Abstracts token ids), so the two step times show whether the input pipeline keeps up.
FLOPs come from XLA's cost analysis; MFU uses the datasheet peak of the device (`jmed.perf`),
or --peak-tflops. Sizes: 'full' (ResNet-50 at 224, BERT-base-sized Transformer over 512 tokens,
large batches) on GPU/TPU, 'small' on CPU; --smoke runs in seconds. A configuration that fails
(e.g. out of memory) is reported in the table and the exit status is 1.

  python scripts/bench_throughput.py --data-dir ../shared/data --output bench.json
  python scripts/bench_throughput.py --models resnet50_imagenet --batch-sizes 256 --dtypes bfloat16
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_MODELS = ('seed_cnn', 'resnet50_imagenet', 'transformer')


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--models', nargs='+', default=None,
                      help=f'benchmark models (default {" ".join(DEFAULT_MODELS)}; also '
                           'resnet50: small stem at 28x28)')
  parser.add_argument('--batch-sizes', nargs='+', type=int, default=None,
                      help='global batch sizes (default: per model and size, see '
                           'jmed.perf.bench_models)')
  parser.add_argument('--dtypes', nargs='+', default=['float32', 'bfloat16'],
                      choices=['float32', 'bfloat16'], help='compute dtypes')
  parser.add_argument('--size', default='auto', choices=['auto', 'small', 'full'],
                      help="model and batch sizes: 'auto' = small on CPU, full on GPU/TPU")
  parser.add_argument('--steps', type=int, default=None, help='timed steps (default 20; 10 on '
                      'CPU)')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps after compilation')
  parser.add_argument('--steps-per-dispatch', type=int, default=1,
                      help='steps per compiled call, as TrainConfig.steps_per_dispatch')
  parser.add_argument('--data-dir', default=None,
                      help='jmed data root for the real-data variant (default $JMED_DATA_DIR; '
                           'skipped with a note when absent)')
  parser.add_argument('--peak-tflops', type=float, default=None,
                      help='peak TFLOP/s per device for MFU (default: datasheet table by '
                           'device kind; none for CPUs)')
  parser.add_argument('--output', default=None, help='write the rows as JSON here')
  parser.add_argument('--smoke', action='store_true',
                      help='tiny models, one batch size, 3 steps: checks it runs (seconds)')
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top  (after --help)
  from jmed import perf  # pylint: disable=g-import-not-at-top

  cpu = jax.default_backend() == 'cpu'
  size = 'smoke' if args.smoke else ('small' if cpu else 'full') if args.size == 'auto' else (
      args.size)
  models = args.models or (['seed_cnn', 'transformer'] if args.smoke else list(DEFAULT_MODELS))
  steps = args.steps or (3 if args.smoke else 10 if cpu else 20)
  warmup = 1 if args.smoke else args.warmup
  print(f'{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}), '
        f'size {size}', flush=True)
  rows = perf.run(models, size=size, batch_sizes=args.batch_sizes, dtypes=args.dtypes,
                  steps=steps, warmup=warmup, data_dir=args.data_dir,
                  peak_tflops=args.peak_tflops, steps_per_dispatch=args.steps_per_dispatch,
                  log=lambda line: print(line, flush=True))
  print()
  print(perf.markdown_table(rows))
  if args.output:
    with open(args.output, 'w') as f:
      json.dump({'size': size, 'backend': jax.default_backend(), 'jax': jax.__version__,
                 'rows': rows}, f, indent=2)
  return 1 if any('error' in r for r in rows) else 0


if __name__ == '__main__':
  sys.exit(main())
