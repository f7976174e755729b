"""FLOPs, peak FLOP/s, model-FLOPs utilisation (MFU) and step timing for jmed's train steps.

  step_flops:  FLOPs of one call of a compiled or lowered program, from XLA's cost analysis:
               everything the program computes once (forward, backward, optimizer update,
               elementwise work), not an analytic model count.
  peak_flops:  datasheet peak FLOP/s of one device by its `device_kind` and compute dtype, from
               `PEAK_TFLOPS` (dense, no sparsity; `find_peak` gives the matching `Peak`).
  mfu:         achieved FLOP/s / (devices x peak FLOP/s per device).
  time_steps:  seconds per call of a step, compilation excluded, with one call in flight as
               `jmed.train.loop.fit` runs them.

scripts/bench_throughput.py uses these to report throughput and MFU per model, batch and dtype.
"""

import dataclasses
import re
import statistics
import time
from typing import Iterator, List, Optional

import jax
import jax.numpy as jnp

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
