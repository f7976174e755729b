"""Training throughput and model-FLOPs utilisation (MFU) of jmed's real train step.

The step benchmarked is the one `jmed.train.loop.fit` runs: `steps.train_steps` (a leading axis
of `steps_per_dispatch` batches) jit-compiled by `parallel.data_parallel` over a one-axis 'data'
mesh of every device, with parameters and optimizer state in float32 and the model computing in
`dtype`. Each configuration is timed two ways:

  synthetic:  one batch already on the devices, reused every step: pure device speed.
  real data:  batches from a real dataset through jmed's own pipeline each step, as `fit` feeds
              them (`jdata.train_batches` host gather, `parallel.shard_batch` host-to-device copy,
              both in `jdata.prefetch`'s background thread). Close to synthetic = the input
              pipeline is not the bottleneck.

FLOPs come from XLA's cost analysis of the whole step before it is split over devices
(`step_flops` of the lowered program): everything the step computes once (forward, backward,
optimizer update, elementwise work; padding tokens included), not an analytic model count; on
models dominated by matrix products it is close to the usual "6 x parameters x tokens".
MFU = achieved FLOP/s / (devices x peak FLOP/s per device), with the peak from the vendor
datasheets in `PEAK_TFLOPS` (dense, no sparsity).
"""

import dataclasses
import functools
import math
import re
import statistics
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jmed import data as jdata
from jmed import models
from jmed.configs import OptimizerConfig, TextConfig
from jmed.data.datasets import resolve_data_dir
from jmed.optim import make_optimizer
from jmed.train import parallel
from jmed.train import steps as jsteps
from jmed.train.state import create_train_state

# ----------------------------------------------------------------------------------------------
# FLOPs, peaks, MFU


def _cost_dicts(analysis) -> List[dict]:
  if analysis is None:
    return []
  return [analysis] if isinstance(analysis, dict) else [d for d in analysis if d]


def step_flops(compiled) -> Optional[float]:
  """FLOPs of one call of a compiled (or lowered) program, from XLA's cost analysis.

  Args:
    compiled: `jax.jit(f).lower(*args).compile()`, or the `Lowered` itself.

  Returns:
    The 'flops' entry as a float (summed over the entries when the analysis is a list of dicts,
    one per HLO module, as older JAX versions return), or None when the backend reports none.

  On a multi-device mesh the two differ. A `Compiled` reports **per device**: XLA analyses the
  SPMD-partitioned program one device runs, replicated work included. A `Lowered` reports the
  global program before partitioning (and before XLA's optimisations: within ~1% of the
  one-device compiled figure on jmed's train steps). Measured on XLA:CPU with
  `--xla_force_host_platform_device_count`, value and weight gradient of x [64, 256] @ w
  [256, 512] with x sharded over the batch: compiled 3.36e7 FLOPs on 1 device, 1.69e7 on each
  of 2 (2.5% over half: the collectives); lowered 3.36e7 on both. On jmed's data-parallel step
  the compiled per-device count halves on 2 devices for the seed CNN, but not for a Transformer
  with a 20,000-row embedding under AdamW (7.9e7 -> 4.5e7): the optimizer update of replicated
  parameters runs in full on every device. Loops (`lax.scan`, `while`) are counted once, not per
  iteration: analyse unrolled programs such as `steps.train_steps`.
  """
  try:
    entries = _cost_dicts(compiled.cost_analysis())
  except Exception:  # pylint: disable=broad-except  (some backends do not implement it)
    return None
  flops = [float(d['flops']) for d in entries if 'flops' in d]
  total = sum(flops)
  return total if flops and total > 0 else None


@dataclasses.dataclass(frozen=True)
class Peak:
  """Dense peak TFLOP/s of one device (one JAX device) by operand type; None = not offered.

  Attributes:
    pattern: regular expression searched (case-insensitively) in `device.device_kind`.
    bfloat16: bf16 matrix units (tensor cores, MXU).
    float32_default: float32 matmuls at JAX's default precision, which lets XLA use TF32
      tensor cores on Ampere and later GPUs and one bfloat16 pass on TPUs.
    float32_full: true float32 (`jax_default_matmul_precision='highest'`): the GPU's CUDA-core
      FP32 rate; None on TPUs, whose datasheets give no float32 figure.
  """

  pattern: str
  bfloat16: Optional[float]
  float32_default: Optional[float]
  float32_full: Optional[float]


# Vendor datasheets, dense figures (NVIDIA lists TF32/BF16 "with sparsity": halved here). First
# match wins, so specific patterns come before general ones; device_kind strings as JAX reports
# them, e.g. 'NVIDIA H100 80GB HBM3', 'NVIDIA H100 PCIe', 'NVIDIA H200', 'NVIDIA A100-SXM4-80GB',
# 'NVIDIA L4', 'Tesla V100-SXM2-16GB', 'TPU v4', 'TPU v5 lite', 'TPU v5p' ('TPU v5'),
# 'TPU v6 lite'.
PEAK_TFLOPS = (
    # NVIDIA H100 Tensor Core GPU datasheet: SXM5 BF16 1,979* / TF32 989* / FP32 67; PCIe
    # 1,513* / 756* / 51; NVL 1,671* / 835* / 60 (* with sparsity).
    Peak(r'H100.*PCIe', 756.0, 378.0, 51.0),
    Peak(r'H100 NVL', 835.5, 417.5, 60.0),
    Peak(r'H100', 989.4, 494.7, 67.0),  # SXM5: 'NVIDIA H100 80GB HBM3'
    # NVIDIA H200 datasheet: SXM BF16 1,979* / TF32 989* / FP32 67; NVL 1,671* / 835* / 60.
    Peak(r'H200 NVL', 835.5, 417.5, 60.0),
    Peak(r'H200', 989.4, 494.7, 67.0),
    # NVIDIA A100 datasheet (SXM and PCIe, 40 and 80 GB): BF16 312 / TF32 156 / FP32 19.5.
    Peak(r'A100', 312.0, 156.0, 19.5),
    # NVIDIA L4 datasheet: BF16 242* / TF32 120* / FP32 30.3. '\b' keeps L40 / L40S out.
    Peak(r'\bL4\b', 121.0, 60.0, 30.3),
    # NVIDIA V100 datasheet: FP32 15.7 (SXM2), 14 (PCIe), 16.4 (V100S). No bf16 or TF32 units
    # (its tensor cores do fp16 only), so bf16 has no peak and float32 runs on CUDA cores.
    Peak(r'V100S', None, 16.4, 16.4),
    Peak(r'V100.*PCIE', None, 14.0, 14.0),
    Peak(r'V100', None, 15.7, 15.7),
    # Google Cloud TPU system architecture pages, peak bf16 per chip (one JAX device per chip on
    # these generations): v4 275, v5e 197, v5p 459, v6e (Trillium) 918.
    Peak(r'TPU v4', 275.0, 275.0, None),
    Peak(r'TPU v5 ?(lite|e)', 197.0, 197.0, None),
    Peak(r'TPU v5p?\b', 459.0, 459.0, None),
    Peak(r'TPU v6 ?(lite|e)', 918.0, 918.0, None),
)


def find_peak(device_kind: str) -> Optional[Peak]:
  """The first `PEAK_TFLOPS` entry whose pattern occurs in `device_kind`, else None."""
  for peak in PEAK_TFLOPS:
    if re.search(peak.pattern, device_kind, re.IGNORECASE):
      return peak
  return None


def peak_flops(device_kind: str, dtype='bfloat16', precision: Optional[str] = None):
  """Datasheet peak FLOP/s of one device computing in `dtype`, or None if unknown (e.g. CPUs).

  Args:
    device_kind: `jax.devices()[0].device_kind`.
    dtype: the model's compute dtype ('bfloat16' or 'float32').
    precision: float32 matmul precision; default `jax.config.jax_default_matmul_precision`.
      None/'default'/'fastest'/'bfloat16'/'tensorfloat32' -> `Peak.float32_default`,
      'highest'/'float32' -> `Peak.float32_full`.
  """
  peak = find_peak(device_kind)
  if peak is None:
    return None
  name = jnp.dtype(dtype).name
  if name == 'bfloat16':
    tflops = peak.bfloat16
  elif name == 'float32':
    precision = precision or jax.config.jax_default_matmul_precision
    full = str(precision).lower() in ('highest', 'float32', 'f32_f32_f32')
    tflops = peak.float32_full if full else peak.float32_default
  else:
    return None
  return None if tflops is None else tflops * 1e12


def mfu(flops_per_step, step_seconds, num_devices, peak_per_device) -> Optional[float]:
  """Model-FLOPs utilisation in [0, 1]: (flops_per_step / step_seconds) / (devices x peak).

  Args:
    flops_per_step: FLOPs of one global step, all devices together (`step_flops` of the
      lowered step).
    step_seconds: seconds per step.
    num_devices: devices the step runs on.
    peak_per_device: peak FLOP/s of one device; None (unknown device) gives None.
  """
  if not flops_per_step or not peak_per_device or not step_seconds or step_seconds <= 0:
    return None
  return flops_per_step / step_seconds / (num_devices * peak_per_device)


# ----------------------------------------------------------------------------------------------
# Timing


def time_steps(fn, state, batch, steps: int, warmup: int = 1):
  """Times `steps` calls of `state, outputs = fn(state, batch)`, compilation excluded.

  Args:
    fn: a step, e.g. `parallel.data_parallel(...)` or its `.lower(...).compile()`; it may
      donate `state`, which is why the final state is returned.
    state: the initial state (on device).
    batch: a batch on device, reused every call; or an iterator, whose `next` (host input
      pipeline included) is timed with the call.
    steps: timed calls (>= 1).
    warmup: untimed calls first (>= 1 unless `fn` is already compiled).

  Returns:
    (timing, state): timing {'median_s', 'mean_s', 'min_s', 'max_s', 'steps'} in seconds per
    call. Samples are intervals between the completions of consecutive calls, with one call in
    flight (as `fit` runs: the next step is dispatched before the last one's results are read),
    so host dispatch overlaps device work; their sum is the wall time of the timed calls, and
    `mean_s` is that wall time / steps. Waiting uses `jax.block_until_ready` on each call's
    outputs (a donated state cannot be waited on).
  """
  if steps < 1 or warmup < 0:
    raise ValueError(f'steps must be >= 1 and warmup >= 0, got {steps} and {warmup}.')
  get = (lambda: next(batch)) if isinstance(batch, Iterator) else (lambda: batch)
  for _ in range(warmup):
    state, outputs = fn(state, get())
    jax.block_until_ready(outputs)
  jax.block_until_ready(state)
  times, pending = [], None
  start = last = time.perf_counter()
  for _ in range(steps):
    state, outputs = fn(state, get())
    if pending is not None:
      jax.block_until_ready(pending)
      now = time.perf_counter()
      times.append(now - last)
      last = now
    pending = outputs
  jax.block_until_ready((state, pending))
  now = time.perf_counter()
  times.append(now - last)
  timing = {'median_s': statistics.median(times), 'mean_s': (now - start) / steps,
            'min_s': min(times), 'max_s': max(times), 'steps': steps}
  return timing, state


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
    jmed.data.MissingDataError: the files are not there.
  """
  if spec.dataset == 'medical_abstracts':
    text = TextConfig(vocab_size=spec.model_kwargs['vocab_size'], max_length=spec.input_shape[0])
    inputs, labels = jdata.load_dataset(spec.dataset, data_dir=data_dir, text=text).splits['train']
  else:
    inputs, labels = jdata.load_dataset(spec.dataset, data_dir=data_dir).splits['train']
  inputs, labels = inputs[:max_examples], labels[:max_examples]
  if not spec.tokens:
    inputs = fit_images(inputs, spec.input_shape)
  return inputs, labels.astype(np.int32)


def synthetic_batches(spec: BenchModel, batch_size: int, steps_per_dispatch: int = 1,
                      seed: int = 0) -> Dict[str, np.ndarray]:
  """Random host batches {'image': [k, batch, *input_shape], 'label': [k, batch]}: uniform
  [0, 1) float32 images or token ids in [1, vocab_size) (no padding)."""
  rng = np.random.default_rng(seed)
  shape = (steps_per_dispatch, batch_size, *spec.input_shape)
  if spec.tokens:
    inputs = rng.integers(1, spec.model_kwargs['vocab_size'], shape, dtype=np.int32)
  else:
    inputs = rng.random(shape, dtype=np.float32)
  labels = rng.integers(0, spec.num_classes, shape[:2], dtype=np.int32)
  return {'image': inputs, 'label': labels}


def real_batches(inputs, labels, batch_size: int, steps_per_dispatch: int, mesh, seed: int = 0):
  """An endless iterator of device batches [k, batch, ...] from host arrays, made as `fit` makes
  them: shuffled `jdata.train_batches` epochs, stacked k at a time, `parallel.shard_batch` in
  `jdata.prefetch`'s background thread. Fewer examples than a batch are repeated to fill it.
  Call `.close()` when done."""
  if len(inputs) < batch_size:
    index = np.resize(np.arange(len(inputs)), batch_size)
    inputs, labels = inputs[index], labels[index]

  def groups():
    group, epoch = [], 0
    while True:
      for batch in jdata.train_batches(inputs, labels, batch_size, seed=seed, epoch=epoch):
        group.append(batch)
        if len(group) == steps_per_dispatch:
          yield {k: np.stack([b[k] for b in group]) for k in group[0]}
          group = []
      epoch += 1

  return jdata.prefetch(groups(), transform=lambda g: parallel.shard_batch(g, mesh, batch_axis=1))


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
    peak_tflops: peak TFLOP/s per device, overriding the `PEAK_TFLOPS` table.
    mesh: default `parallel.make_mesh()` (every device).

  Returns:
    A row: model, dtype, batch_size, devices, device_kind, step_ms (synthetic median),
    step_ms_mean, step_ms_real_data (median; None without real data), examples_per_sec,
    examples_per_sec_real_data, tokens_per_sec (token models: examples/s x length; else None),
    flops_per_step (global: cost analysis of the unpartitioned program, see `step_flops`),
    flops_per_step_per_device (of the compiled program one device runs), tflops_per_sec
    (achieved: flops_per_step / step time), peak_tflops (per device; None if unknown), mfu
    (None without a peak),
    compile_seconds (trace + compile of one call), and the configuration.
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
  state = parallel.replicate(jax.jit(init)(host['image'][0, :1]), mesh)
  batch = parallel.shard_batch(host, mesh, batch_axis=1)
  del host
  fn = parallel.data_parallel(jsteps.bind(jsteps.train_steps, 'multiclass'), mesh, batch_axis=1)
  start = time.perf_counter()
  lowered = fn.lower(state, batch)
  compiled = lowered.compile()
  compile_seconds = time.perf_counter() - start
  # Global FLOPs from the unpartitioned program: every operation once, not each device's copy
  # of replicated work (the optimizer update); the per-device figure is reported beside it.
  per_device = step_flops(compiled)
  flops = step_flops(lowered) or (per_device * n_dev if per_device else None)
  flops = flops / k if flops else None

  timing, state = time_steps(compiled, state, batch, steps, warmup)
  del batch
  real_timing = None
  if real is not None:
    it = real_batches(*real, local, k, mesh, seed + jax.process_index())
    try:
      real_timing, state = time_steps(compiled, state, it, steps, warmup)
    finally:
      it.close()
  del state

  device_kind = mesh.devices.flat[0].device_kind
  peak = peak_tflops * 1e12 if peak_tflops else peak_flops(device_kind, dtype)
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
      'mfu': mfu(flops, step_s, n_dev, peak),
      'compile_seconds': compile_seconds,
      'input_shape': list(spec.input_shape), 'jmed_model': spec.model,
      'model_kwargs': dict(spec.model_kwargs), 'steps': steps,
      'steps_per_dispatch': k,
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
  data_dir = resolve_data_dir(data_dir)
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
      except (jdata.DataError, OSError) as e:
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
