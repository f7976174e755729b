#!/usr/bin/env python
"""Training throughput and MFU of jmed's train step (the one `fit` runs) per model, batch, dtype.

Each configuration is timed on a batch kept on the devices (synthetic: device speed) and on real
data through jmed's input pipeline (PneumoniaMNIST, resized on the host for 224x224x3 inputs;
Medical Abstracts token ids), so the two step times show whether the input pipeline keeps up.
FLOPs come from XLA's cost analysis; MFU uses the datasheet peak of the device (`jmed.perf`),
or --peak-tflops. Sizes: 'full' (ResNet-50 at 224, BERT-base-sized Transformer over 512 tokens,
large batches) on GPU/TPU, 'small' on CPU; --smoke runs in seconds. A configuration that fails
(e.g. out of memory) is reported in the table and the exit status is 1.

The step is `steps.train_steps` (a leading axis of --steps-per-dispatch batches) jit-compiled by
`parallel.data_parallel` over a one-axis 'data' mesh of every device, parameters and optimizer
state in float32, the model computing in the row's dtype, in `fit`'s micro-batches on a CPU
(`steps.auto_micro_batches`); real-data batches come from
`pipeline.train_batches` and `parallel.shard_batch` in `pipeline.prefetch`'s background thread,
as `fit` feeds them.

  python scripts/bench_throughput.py --data-dir ../shared/data --output bench.json
  python scripts/bench_throughput.py --models resnet50_imagenet --batch-sizes 256 --dtypes bfloat16
"""

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  (after the repository root is on the path, as every import below)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jmed import models  # noqa: E402
from jmed import perf  # noqa: E402
from jmed.configs import OptimizerConfig, TextConfig  # noqa: E402
from jmed.data import datasets  # noqa: E402
from jmed.data import pipeline  # noqa: E402
from jmed.errors import DataError  # noqa: E402
from jmed.optim import make_optimizer  # noqa: E402
from jmed.train import parallel  # noqa: E402
from jmed.train import steps as jsteps  # noqa: E402
from jmed.train.state import create_train_state  # noqa: E402

DEFAULT_MODELS = ('seed_cnn', 'resnet50_imagenet', 'transformer')


# ----------------------------------------------------------------------------------------------
# What is benchmarked


@dataclasses.dataclass(frozen=True)
class BenchModel:
  """One benchmark model: a jmed model, its per-example input shape and its real-data source.

  Attributes:
    name: row label, e.g. 'resnet50_imagenet'.
    model: name in `jmed.models.MODELS`.
    input_shape: per example: (height, width, channels) images or (length,) token ids.
    num_classes: logits.
    dataset: real-data source, 'pneumoniamnist' (28x28 grey; resized on the host to
      `input_shape` by `fit_images`) or 'medical_abstracts' (token ids).
    model_kwargs: the model's hyperparameters (vocab_size for token models).
    optimizer: the optimizer the step applies.
    batch_sizes: default global batch sizes.
  """

  name: str
  model: str
  input_shape: tuple
  num_classes: int
  dataset: str
  model_kwargs: dict = dataclasses.field(default_factory=dict)
  optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
  batch_sizes: tuple = (32, 128, 256)

  @property
  def tokens(self) -> bool:
    """Whether inputs are token ids [batch, length]."""
    return len(self.input_shape) == 1


_SGD = OptimizerConfig('sgd', 0.1, momentum=0.9)
SIZES = ('smoke', 'small', 'full')
# BERT-base sizes: matrix products large enough for a meaningful accelerator MFU.
_BERT_BASE = {'embed_dim': 768, 'num_layers': 12, 'num_heads': 12, 'mlp_dim': 3072}
_TINY_TEXT = {'embed_dim': 32, 'num_layers': 1, 'num_heads': 2, 'mlp_dim': 64}
# size -> transformer (sequence length, vocabulary cap, model_kwargs); the vocabulary is the
# tokenizer's cap (`TextConfig.vocab_size`), so real token ids always fit.
_TEXT = {'full': (512, 20000, _BERT_BASE), 'small': (128, 20000, {}),
         'smoke': (32, 2000, _TINY_TEXT)}
_IMAGENET_INPUT = {'full': (224, 224, 3), 'small': (224, 224, 3), 'smoke': (56, 56, 3)}
_BATCH_SIZES = {  # size -> model -> default global batch sizes
    'full': {'seed_cnn': (256, 1024, 4096), 'resnet50': (128, 256, 512),
             'resnet50_imagenet': (64, 128, 256), 'transformer': (32, 64, 128)},
    'small': {'seed_cnn': (32, 128, 512), 'resnet50': (8, 16), 'resnet50_imagenet': (2, 4),
              'transformer': (32, 128)},
    'smoke': {'seed_cnn': (8,), 'resnet50': (4,), 'resnet50_imagenet': (2,),
              'transformer': (8,)},
}


def bench_models(size: str = 'full') -> Dict[str, BenchModel]:
  """The benchmark models at `size`: name -> `BenchModel`.

  'full' (accelerators): ResNet-50 at 224x224x3 and a BERT-base-sized Transformer (768 wide, 12
  layers, 12 heads, MLP 3072) over 512 tokens, at large batches. 'small' (CPU, minutes):
  ResNet-50 at 224 at batches 2 and 4, the Transformer at its default size (128 wide, 2 layers)
  over 128 tokens. 'smoke': seconds, for tests. The seed CNN and the small-stem ResNet-50
  ('resnet50') take PneumoniaMNIST's 28x28 at every size.
  """
  if size not in SIZES:
    raise ValueError(f'size must be one of {SIZES}, got {size!r}.')
  length, vocab, text_kwargs = _TEXT[size]
  batches = _BATCH_SIZES[size]
  specs = [
      BenchModel('seed_cnn', 'seed_cnn', (28, 28, 1), 2, 'pneumoniamnist',
                 optimizer=OptimizerConfig('sgd', 0.01), batch_sizes=batches['seed_cnn']),
      BenchModel('resnet50', 'resnet50', (28, 28, 1), 2, 'pneumoniamnist', optimizer=_SGD,
                 batch_sizes=batches['resnet50']),
      BenchModel('resnet50_imagenet', 'resnet50_imagenet', _IMAGENET_INPUT[size], 2,
                 'pneumoniamnist', optimizer=_SGD, batch_sizes=batches['resnet50_imagenet']),
      BenchModel('transformer', 'transformer', (length,), 5, 'medical_abstracts',
                 model_kwargs={'vocab_size': vocab, 'max_length': length, **text_kwargs},
                 optimizer=OptimizerConfig('adamw', 1e-3),
                 batch_sizes=batches['transformer']),
  ]
  return {s.name: s for s in specs}


def fit_images(images: np.ndarray, shape: Sequence[int]) -> np.ndarray:
  """Resizes host images [n, h, w, c] to [n, *shape] by integer nearest-neighbour upsampling
  and channel tiling (e.g. PneumoniaMNIST 28x28x1 -> 224x224x3: each pixel an 8x8 block, grey
  copied to 3 channels). Raises if the sizes are not integer multiples."""
  h, w, c = shape
  _, h0, w0, c0 = images.shape
  if h % h0 or w % w0 or c % c0:
    raise ValueError(f'cannot tile images {images.shape[1:]} into {tuple(shape)}.')
  if (h, w, c) == (h0, w0, c0):
    return images
  out = np.empty((len(images), h, w, c), images.dtype)
  for i in range(0, len(images), 256):  # chunks: no full-size intermediate copies
    x = images[i:i + 256]
    out[i:i + 256] = np.tile(x.repeat(h // h0, 1).repeat(w // w0, 2), (1, 1, 1, c // c0))
  return out


def real_data(spec: BenchModel, data_dir=None, max_examples: Optional[int] = None):
  """The real training inputs and labels for `spec`, through jmed's own loaders.

  Args:
    spec: the benchmark model.
    data_dir: jmed's data root (None: $JMED_DATA_DIR).
    max_examples: keep at most this many (bounds host memory for upsampled images: 1,024
      images of 224x224x3 float32 are 0.6 GB).

  Returns:
    (inputs [n, *spec.input_shape] float32 images or int32 token ids, labels [n] int32).

  Raises:
    jmed.errors.MissingDataError: the files are not there.
  """
  text = None
  if spec.dataset == 'medical_abstracts':
    text = TextConfig(vocab_size=spec.model_kwargs['vocab_size'], max_length=spec.input_shape[0])
  dataset = datasets.load_dataset(spec.dataset, data_dir=data_dir, text=text)
  inputs, labels = dataset.splits['train']
  inputs, labels = inputs[:max_examples], labels[:max_examples]
  if not spec.tokens:
    inputs = fit_images(inputs, spec.input_shape)
  return inputs, labels.astype(np.int32)


def synthetic_batches(spec: BenchModel, batch_size: int, steps_per_dispatch: int = 1,
                      seed: int = 0) -> Dict[str, np.ndarray]:
  """Random host batches {'inputs': [k, batch, *input_shape], 'labels': [k, batch]}: uniform
  [0, 1) float32 images or token ids in [1, vocab_size) (no padding)."""
  rng = np.random.default_rng(seed)
  shape = (steps_per_dispatch, batch_size, *spec.input_shape)
  if spec.tokens:
    inputs = rng.integers(1, spec.model_kwargs['vocab_size'], shape, dtype=np.int32)
  else:
    inputs = rng.random(shape, dtype=np.float32)
  labels = rng.integers(0, spec.num_classes, shape[:2], dtype=np.int32)
  return {'inputs': inputs, 'labels': labels}


def real_batches(inputs, labels, batch_size: int, steps_per_dispatch: int, mesh, seed: int = 0):
  """An endless iterator of device batches [k, batch, ...] from host arrays, made as `fit` makes
  them: shuffled `pipeline.train_batches` epochs, stacked k at a time, `parallel.shard_batch` in
  `pipeline.prefetch`'s background thread. Fewer examples than a batch are repeated to fill it.
  Call `.close()` when done."""
  if len(inputs) < batch_size:
    index = np.resize(np.arange(len(inputs)), batch_size)
    inputs, labels = inputs[index], labels[index]

  def groups():
    group, epoch = [], 0
    while True:
      for batch in pipeline.train_batches(inputs, labels, batch_size, seed=seed, epoch=epoch):
        group.append(batch)
        if len(group) == steps_per_dispatch:
          yield {k: np.stack([b[k] for b in group]) for k in group[0]}
          group = []
      epoch += 1

  return pipeline.prefetch(groups(),
                           transform=lambda g: parallel.shard_batch(g, mesh, batch_axis=1))


# ----------------------------------------------------------------------------------------------
# One configuration, and a sweep


def benchmark(spec: BenchModel, batch_size: int, dtype='float32', *, steps: int = 20,
              warmup: int = 2, real: Optional[tuple] = None, steps_per_dispatch: int = 1,
              peak_tflops: Optional[float] = None, mesh=None, seed: int = 0) -> Dict[str, Any]:
  """Benchmarks jmed's train step for one (model, global batch size, compute dtype).

  Args:
    spec: the model (see `bench_models`).
    batch_size: global batch, split over the mesh's devices.
    dtype: compute dtype; parameters and optimizer state stay float32.
    steps, warmup: timed and untimed steps (each variant).
    real: (inputs, labels) host arrays (`real_data`) for the real-data variant; None skips it.
    steps_per_dispatch: steps per compiled call, as `TrainConfig.steps_per_dispatch` (unrolled:
      compile time grows with it).
    peak_tflops: peak TFLOP/s per device, overriding the `perf.PEAK_TFLOPS` table.
    mesh: default `parallel.make_mesh()` (every device).

  Returns:
    A row: model, dtype, batch_size, devices, device_kind, step_ms (synthetic median),
    step_ms_mean, step_ms_real_data (median; None without real data), examples_per_sec,
    examples_per_sec_real_data, tokens_per_sec (token models: examples/s x length; else None),
    flops_per_step (global: cost analysis of the unpartitioned program, see `perf.step_flops`),
    flops_per_step_per_device (of the compiled program one device runs), tflops_per_sec
    (achieved: flops_per_step / step time), peak_tflops (per device; None if unknown), mfu
    (None without a peak), compile_seconds (trace + compile of one call), and the
    configuration.
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_batch_size(batch_size, mesh)
  k, n_dev = steps_per_dispatch, mesh.devices.size
  local = batch_size // jax.process_count()  # each process feeds its slice of the global batch
  model = models.get_model(spec.model, num_classes=spec.num_classes, dtype=jnp.dtype(dtype),
                           **spec.model_kwargs)
  host = synthetic_batches(spec, local, k, seed + jax.process_index())
  init = functools.partial(create_train_state, model, make_optimizer(spec.optimizer), seed=seed)
  # jit: one compilation instead of one per initializer op.
  state = parallel.replicate(jax.jit(init)(host['inputs'][0, :1]), mesh)
  batch = parallel.shard_batch(host, mesh, batch_axis=1)
  del host
  micro = jsteps.auto_micro_batches(batch_size, state)  # as `fit` does
  fn, whole = (parallel.data_parallel(jsteps.bind(jsteps.train_steps, 'multiclass',
                                                  micro_batches=m), mesh, batch_axis=1)
               for m in (micro, 1))
  start = time.perf_counter()
  lowered = fn.lower(state, batch)
  compiled = lowered.compile()
  compile_seconds = time.perf_counter() - start
  # Global FLOPs from the unpartitioned program: every operation once, not each device's copy
  # of replicated work (the optimizer update); the per-device figure is reported beside it. A
  # micro-batch scan is counted once, not per iteration, so FLOPs come from the whole-batch
  # program (lowered only: the same work).
  per_device = perf.step_flops(compiled) if micro == 1 else None
  flops = perf.step_flops(whole.lower(state, batch) if micro > 1 else lowered) or (
      per_device * n_dev if per_device else None)
  flops = flops / k if flops else None

  timing, state = perf.time_steps(compiled, state, batch, steps, warmup)
  del batch
  real_timing = None
  if real is not None:
    it = real_batches(*real, local, k, mesh, seed + jax.process_index())
    try:
      real_timing, state = perf.time_steps(compiled, state, it, steps, warmup)
    finally:
      it.close()
  del state

  device_kind = mesh.devices.flat[0].device_kind
  peak = peak_tflops * 1e12 if peak_tflops else perf.peak_flops(device_kind, dtype)
  step_s = timing['median_s'] / k
  real_s = real_timing['median_s'] / k if real_timing else None
  per_sec = batch_size / step_s
  length = spec.input_shape[0] if spec.tokens else None
  return {
      'model': spec.name, 'dtype': jnp.dtype(dtype).name, 'batch_size': batch_size,
      'devices': n_dev, 'device_kind': device_kind,
      'step_ms': 1e3 * step_s, 'step_ms_mean': 1e3 * timing['mean_s'] / k,
      'step_ms_real_data': 1e3 * real_s if real_s else None,
      'examples_per_sec': per_sec,
      'examples_per_sec_real_data': batch_size / real_s if real_s else None,
      'tokens_per_sec': per_sec * length if length else None,
      'flops_per_step': flops,
      'flops_per_step_per_device': per_device / k if per_device else None,
      'tflops_per_sec': flops / step_s / 1e12 if flops else None,
      'peak_tflops': peak / 1e12 if peak else None,
      'mfu': perf.mfu(flops, step_s, n_dev, peak),
      'compile_seconds': compile_seconds,
      'input_shape': list(spec.input_shape), 'jmed_model': spec.model,
      'model_kwargs': dict(spec.model_kwargs), 'steps': steps,
      'steps_per_dispatch': k, 'micro_batches': micro,
  }


def run(names: Sequence[str], *, size: str = 'full', batch_sizes: Optional[Sequence[int]] = None,
        dtypes: Sequence[str] = ('float32', 'bfloat16'), steps: int = 20, warmup: int = 2,
        data_dir=None, peak_tflops: Optional[float] = None, steps_per_dispatch: int = 1,
        log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
  """`benchmark` over models x batch sizes x dtypes; returns the rows.

  Real data is loaded once per model from `data_dir` (None: $JMED_DATA_DIR); when there is none
  the real-data variant is skipped with a note through `log`. A configuration that fails (for
  example out of device memory) gives a row with 'error' instead of stopping the sweep.
  """
  specs = bench_models(size)
  unknown = sorted(set(names) - set(specs))
  if unknown:
    raise ValueError(f'unknown benchmark models {unknown}; valid: {", ".join(specs)}.')
  data_dir = datasets.resolve_data_dir(data_dir)
  rows = []
  for name in names:
    spec = specs[name]
    sizes = list(batch_sizes or spec.batch_sizes)
    real = None
    if data_dir is None:
      log(f'{name}: no data dir (--data-dir or $JMED_DATA_DIR): real-data variant skipped.')
    else:
      try:
        pool = max(1024, 2 * max(sizes) * steps_per_dispatch)
        real = real_data(spec, data_dir, max_examples=pool)
      except (DataError, OSError) as e:
        log(f'{name}: real-data variant skipped: {e}')
    for batch_size in sizes:
      for dtype in dtypes:
        try:
          row = benchmark(spec, batch_size, dtype, steps=steps, warmup=warmup, real=real,
                          steps_per_dispatch=steps_per_dispatch, peak_tflops=peak_tflops)
        except Exception as e:  # pylint: disable=broad-except  (OOM etc.: keep sweeping)
          row = {'model': name, 'dtype': dtype, 'batch_size': batch_size,
                 'error': f'{type(e).__name__}: {str(e)[:500]}'}
        log(format_row(row))
        rows.append(row)
  return rows


# ----------------------------------------------------------------------------------------------
# Reporting


def _fmt(value, digits: int = 1) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return '-'
  if isinstance(value, float):
    return f'{value:,.{digits}f}'
  return str(value)


def format_row(row: dict) -> str:
  """One progress line per row."""
  if 'error' in row:
    return f'{row["model"]} {row["dtype"]} batch {row["batch_size"]}: FAILED {row["error"]}'
  return (f'{row["model"]} {row["dtype"]} batch {row["batch_size"]}: {row["step_ms"]:.2f} ms/step '
          f'({_fmt(row["step_ms_real_data"], 2)} real data), '
          f'{row["examples_per_sec"]:,.0f} ex/s, {_fmt(row["tflops_per_sec"], 3)} TFLOP/s, '
          f'MFU {_fmt(row["mfu"] and 100 * row["mfu"])}%, compile {row["compile_seconds"]:.1f} s')


COLUMNS = ('model', 'dtype', 'batch', 'step ms', 'step ms (real data)', 'examples/s',
           'tokens/s', 'GFLOP/step', 'TFLOP/s', 'MFU %', 'compile s')


def markdown_table(rows: Sequence[dict]) -> str:
  """The rows as a markdown table headed by the device (kind and count)."""
  ok = [r for r in rows if 'error' not in r]
  head = (f'Device: {ok[0]["devices"]} x {ok[0]["device_kind"]} ({jax.default_backend()})'
          if ok else 'Device: -')
  lines = [head, '', '| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
  for r in rows:
    if 'error' in r:
      cells = [r['model'], r['dtype'], r['batch_size'], 'failed: ' + r['error'][:80]] + [''] * 7
    else:
      cells = [r['model'], r['dtype'], r['batch_size'], _fmt(r['step_ms'], 2),
               _fmt(r['step_ms_real_data'], 2), _fmt(r['examples_per_sec'], 0),
               _fmt(r['tokens_per_sec'], 0),
               _fmt(r['flops_per_step'] and r['flops_per_step'] / 1e9, 2),
               _fmt(r['tflops_per_sec'], 3), _fmt(r['mfu'] and 100 * r['mfu'], 1),
               _fmt(r['compile_seconds'], 1)]
    lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
  return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--models', nargs='+', default=None,
                      help=f'benchmark models (default {" ".join(DEFAULT_MODELS)}; also '
                           'resnet50: small stem at 28x28)')
  parser.add_argument('--batch-sizes', nargs='+', type=int, default=None,
                      help='global batch sizes (default: per model and size, see '
                           'bench_models)')
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


def defaults(args) -> Dict[str, Any]:
  """`run`'s size, models, steps and warm-up from the flags and the backend ('auto' = small on
  CPU, full on GPU/TPU; --smoke: tiny models, 3 steps, 1 warm-up)."""
  cpu = jax.default_backend() == 'cpu'
  auto = 'small' if cpu else 'full'
  return {
      'size': 'smoke' if args.smoke else auto if args.size == 'auto' else args.size,
      'names': args.models or (['seed_cnn', 'transformer'] if args.smoke else
                               list(DEFAULT_MODELS)),
      'steps': args.steps or (3 if args.smoke else 10 if cpu else 20),
      'warmup': 1 if args.smoke else args.warmup,
  }


def main(argv=None) -> int:
  args = parse_args(argv)
  chosen = defaults(args)
  print(f'{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}), '
        f'size {chosen["size"]}', flush=True)
  rows = run(chosen['names'], size=chosen['size'], batch_sizes=args.batch_sizes,
             dtypes=args.dtypes, steps=chosen['steps'], warmup=chosen['warmup'],
             data_dir=args.data_dir, peak_tflops=args.peak_tflops,
             steps_per_dispatch=args.steps_per_dispatch,
             log=lambda line: print(line, flush=True))
  print()
  print(markdown_table(rows))
  if args.output:
    with open(args.output, 'w') as f:
      json.dump({'size': chosen['size'], 'backend': jax.default_backend(),
                 'jax': jax.__version__, 'rows': rows}, f, indent=2)
  return 1 if any('error' in r for r in rows) else 0


if __name__ == '__main__':
  sys.exit(main())
