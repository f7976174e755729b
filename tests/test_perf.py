"""jmed.perf (FLOPs from XLA's cost analysis, peak table, MFU, timing), the throughput
benchmark of scripts/bench_throughput.py (its model catalogue, one configuration, the table, the
CLI), the Keras sweep's report (scripts/bench_seed_cnn.py) and the step profiler
(scripts/profile_step.py)."""

import argparse
import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmed import perf
from conftest import REPO

sys.path.insert(0, str(REPO / 'scripts'))
import bench_seed_cnn  # noqa: E402  (scripts/bench_seed_cnn.py)
import bench_throughput  # noqa: E402  (scripts/bench_throughput.py)
import profile_step  # noqa: E402  (scripts/profile_step.py)

M, K, N = 64, 256, 512  # x [M, K] @ w [K, N]: 2 * M * K * N FLOPs


def _dense_loss(w, x):
  return jnp.sum(x @ w)


def test_dense_flops_match_the_analytic_count():
  w, x = jnp.ones((K, N)), jnp.ones((M, K))
  matmul = 2 * M * K * N
  forward = jax.jit(_dense_loss).lower(w, x)
  # Gradients for both operands: two more products of the same size, 3x the forward.
  both = jax.jit(jax.value_and_grad(_dense_loss, argnums=(0, 1))).lower(w, x)
  assert perf.step_flops(forward.compile()) == pytest.approx(matmul, rel=0.05)
  assert perf.step_flops(both.compile()) == pytest.approx(3 * matmul, rel=0.05)
  assert perf.step_flops(both) == pytest.approx(3 * matmul, rel=0.05)  # a Lowered works too


class _Fake:

  def __init__(self, analysis):
    self.analysis = analysis

  def cost_analysis(self):
    if isinstance(self.analysis, Exception):
      raise self.analysis
    return self.analysis


@pytest.mark.parametrize('analysis, expected', [
    ({'flops': 10.0, 'bytes accessed': 3.0}, 10.0),
    ([{'flops': 10.0}, {'flops': 5.0}], 15.0),  # a list of dicts, one per HLO module
    ({'bytes accessed': 3.0}, None),             # no 'flops'
    ([], None), (None, None), ({'flops': -1.0}, None),
    (NotImplementedError('no cost analysis'), None),
])
def test_step_flops_reads_every_form_of_cost_analysis(analysis, expected):
  assert perf.step_flops(_Fake(analysis)) == expected


_PER_DEVICE_SCRIPT = textwrap.dedent("""
    import json, jax, jax.numpy as jnp, numpy as np
    from jmed import perf
    from jmed.train import parallel
    out = {}
    for devices in (1, 2):
      mesh = parallel.make_mesh(jax.devices()[:devices])
      w = parallel.replicate(jnp.ones((256, 512)), mesh)
      x = parallel.shard_batch(np.ones((64, 256), np.float32), mesh)
      lowered = jax.jit(jax.value_and_grad(lambda w, x: jnp.sum(x @ w))).lower(w, x)
      out[devices] = {'lowered': perf.step_flops(lowered),
                      'compiled': perf.step_flops(lowered.compile())}
    print(json.dumps(out))
""")


def test_cost_analysis_is_per_device_when_compiled_and_global_when_lowered():
  """Batch split over 2 forced CPU devices: each device's compiled program does half the
  FLOPs of the one-device program; the lowered (unpartitioned) program counts them all."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO))
  proc = subprocess.run([sys.executable, '-c', _PER_DEVICE_SCRIPT], env=env,
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  forward_and_weight_grad = 2 * (2 * 64 * 256 * 512)
  for devices in ('1', '2'):
    assert out[devices]['lowered'] == pytest.approx(forward_and_weight_grad, rel=0.05)
  assert out['1']['compiled'] == pytest.approx(forward_and_weight_grad, rel=0.05)
  assert out['2']['compiled'] == pytest.approx(forward_and_weight_grad / 2, rel=0.05)


@pytest.mark.parametrize('kind, bf16, fp32', [
    ('NVIDIA H100 80GB HBM3', 989.4, 494.7),  # SXM5
    ('NVIDIA H100 PCIe', 756.0, 378.0),
    ('NVIDIA H100 NVL', 835.5, 417.5),
    ('NVIDIA H200', 989.4, 494.7),
    ('NVIDIA H200 NVL', 835.5, 417.5),
    ('NVIDIA A100-SXM4-80GB', 312.0, 156.0),
    ('NVIDIA A100-PCIE-40GB', 312.0, 156.0),
    ('NVIDIA L4', 121.0, 60.0),
    ('Tesla V100-SXM2-16GB', None, 15.7),
    ('Tesla V100-PCIE-32GB', None, 14.0),
    ('TPU v4', 275.0, 275.0),
    ('TPU v5 lite', 197.0, 197.0),
    ('TPU v5e', 197.0, 197.0),
    ('TPU v5p', 459.0, 459.0),
    ('TPU v5', 459.0, 459.0),
    ('TPU v6 lite', 918.0, 918.0),
])
def test_peak_table_matches_device_kinds_as_jax_reports_them(kind, bf16, fp32):
  def tflops(dtype, **kw):
    peak = perf.peak_flops(kind, dtype, **kw)
    return None if peak is None else peak / 1e12
  assert tflops('bfloat16') == (None if bf16 is None else pytest.approx(bf16))
  assert tflops(jnp.float32, precision='default') == pytest.approx(fp32)


def test_peak_is_none_for_unknown_devices_and_full_fp32_uses_cuda_cores():
  for kind in ('cpu', 'NVIDIA L40S', 'NVIDIA GeForce RTX 4090', 'TPU v3', ''):
    assert perf.peak_flops(kind, 'bfloat16') is None, kind
  assert perf.peak_flops('cpu', 'float32') is None
  assert perf.peak_flops('NVIDIA H100 80GB HBM3', 'float32', precision='highest') == 67.0e12
  assert perf.peak_flops('TPU v4', 'float32', precision='highest') is None
  assert perf.peak_flops('NVIDIA H100 80GB HBM3', 'float16') is None  # not tabulated


def test_mfu_arithmetic():
  # 8 devices of 100 TFLOP/s; 400 TFLOP per 1 s step -> half the peak.
  assert perf.mfu(400e12, 1.0, 8, 100e12) == pytest.approx(0.5)
  assert perf.mfu(400e12, 2.0, 8, 100e12) == pytest.approx(0.25)
  assert perf.mfu(1e12, 0.01, 1, 200e12) == pytest.approx(0.5)
  assert perf.mfu(1e12, 1.0, 1, None) is None
  assert perf.mfu(None, 1.0, 1, 1e12) is None


def test_time_steps_threads_state_and_takes_a_batch_or_an_iterator():
  fn = jax.jit(lambda s, b: (s + b.sum(), {'out': b.sum()}), donate_argnums=(0,))
  timing, state = perf.time_steps(fn, jnp.zeros(()), jnp.ones(3), steps=5, warmup=2)
  assert float(state) == 7 * 3  # warm-up calls update the state too
  assert timing['steps'] == 5
  assert 0 < timing['min_s'] <= timing['median_s'] <= timing['max_s']
  assert timing['mean_s'] > 0
  batches = iter([jnp.full(3, float(i)) for i in range(4)])
  _, state = perf.time_steps(fn, jnp.zeros(()), batches, steps=3, warmup=1)
  assert float(state) == 3 * (0 + 1 + 2 + 3)
  with pytest.raises(ValueError):
    perf.time_steps(fn, jnp.zeros(()), jnp.ones(3), steps=0)


def test_fit_images_upsamples_and_tiles_channels():
  images = np.arange(2 * 2 * 2, dtype=np.float32).reshape(2, 2, 2, 1)
  out = bench_throughput.fit_images(images, (8, 8, 3))
  assert out.shape == (2, 8, 8, 3)
  np.testing.assert_array_equal(out[:, ::4, ::4, 0], images[..., 0])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])
  assert bench_throughput.fit_images(images, (2, 2, 1)) is images
  with pytest.raises(ValueError):
    bench_throughput.fit_images(images, (5, 5, 1))


def _check_row(row, spec, batch_size, dtype):
  assert row['model'] == spec.name and row['batch_size'] == batch_size
  assert row['dtype'] == dtype and row['devices'] == jax.device_count()
  assert row['device_kind'] == jax.devices()[0].device_kind
  for key in ('step_ms', 'step_ms_mean', 'examples_per_sec', 'flops_per_step', 'tflops_per_sec',
              'compile_seconds'):
    assert math.isfinite(row[key]) and row[key] > 0, key
  assert row['examples_per_sec'] == pytest.approx(batch_size / row['step_ms'] * 1e3)
  assert row['tflops_per_sec'] == pytest.approx(row['flops_per_step'] / row['step_ms'] / 1e9)
  if row['micro_batches'] == 1:  # else None: XLA counts a micro-batch scan's body once
    assert row['flops_per_step_per_device'] == pytest.approx(
        row['flops_per_step'] / row['devices'], rel=0.15)  # bf16: + conversions
  else:
    assert row['flops_per_step_per_device'] is None


def test_benchmark_seed_cnn_synthetic_and_real_data(data_dir):
  spec = bench_throughput.bench_models('smoke')['seed_cnn']
  real = bench_throughput.real_data(spec, data_dir, max_examples=64)
  assert real[0].shape == (64, 28, 28, 1) and real[1].shape == (64,)
  row = bench_throughput.benchmark(spec, 64, 'float32', steps=2, warmup=1, real=real,
                                   peak_tflops=1.0)
  _check_row(row, spec, 64, 'float32')
  assert row['micro_batches'] == 2  # as `fit` trains on a CPU: 2 micro-batches of 32
  assert row['step_ms_real_data'] > 0 and row['examples_per_sec_real_data'] > 0
  assert row['tokens_per_sec'] is None
  # One train step of the seed CNN: conv 3x3x1->32 at 26x26, 3x3x32->64 at 10x10 (the 11th
  # row and column, which pooling drops, are not computed), dense 1600->64->2; forward 2 FLOPs
  # per multiply-add, backward about twice the forward; every micro-batch counted.
  forward = 2 * (26 * 26 * 9 * 32 + 10 * 10 * 9 * 32 * 64 + 1600 * 64 + 64 * 2)
  assert row['flops_per_step'] == pytest.approx(3 * forward * 64, rel=0.15)
  assert row['peak_tflops'] == 1.0
  assert row['mfu'] == pytest.approx(row['tflops_per_sec'] / 1.0)
  assert row['mfu'] is not None


def test_benchmark_transformer_reports_tokens_per_second():
  spec = bench_throughput.bench_models('smoke')['transformer']
  row = bench_throughput.benchmark(spec, 8, 'float32', steps=2, warmup=1)
  _check_row(row, spec, 8, 'float32')
  assert row['tokens_per_sec'] == pytest.approx(row['examples_per_sec'] * spec.input_shape[0])
  assert row['step_ms_real_data'] is None  # no real data given
  if jax.default_backend() == 'cpu':
    assert row['mfu'] is None and row['peak_tflops'] is None  # no CPU peak


def test_unknown_model_and_failed_rows():
  with pytest.raises(ValueError, match='unknown benchmark models'):
    bench_throughput.run(['resnet9000'], size='smoke')
  table = bench_throughput.markdown_table([{'model': 'x', 'dtype': 'float32', 'batch_size': 1,
                                            'error': 'XlaRuntimeError: RESOURCE_EXHAUSTED'}])
  assert 'failed: XlaRuntimeError' in table


def test_script_smoke_runs_end_to_end_on_real_data(data_dir, tmp_path):
  out = tmp_path / 'bench.json'
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'))
  proc = subprocess.run(
      [sys.executable, str(REPO / 'scripts' / 'bench_throughput.py'), '--smoke', '--models',
       'seed_cnn', '--dtypes', 'float32', 'bfloat16', '--data-dir', str(data_dir),
       '--output', str(out)],
      capture_output=True, text=True, timeout=300, check=False, env=env)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert f'x {jax.devices()[0].device_kind}' in proc.stdout  # the table names the device
  assert '| model | dtype | batch | step ms | step ms (real data) |' in proc.stdout
  report = json.loads(out.read_text())
  assert report['size'] == 'smoke'
  rows = report['rows']
  assert [(r['model'], r['dtype']) for r in rows] == [('seed_cnn', 'float32'),
                                                      ('seed_cnn', 'bfloat16')]
  for row in rows:
    assert row['step_ms'] > 0 and row['step_ms_real_data'] > 0 and row['flops_per_step'] > 0


def test_seed_cnn_sweep_reports_median_ratios_per_batch():
  """The sweep's report and table from measured rounds (no workers run here)."""
  args = argparse.Namespace(dataset='mnist', epochs=2, rounds=3, steps_per_dispatch=4)
  results = {32: {'jmed': [10.0, 30.0, 20.0], 'keras': [10.0, 10.0, 40.0]},
             512: {'jmed': [5.0, 6.0, 7.0], 'keras': [12.0, 12.0, 12.0]}}
  rep = bench_seed_cnn.report(args, results, ('jmed', 'keras'))
  assert [r['batch_size'] for r in rep['batches']] == [32, 512]
  assert rep['batches'][0]['ratio_jmed_over_keras'] == pytest.approx(2.0)  # 20 / 10
  assert rep['batches'][1]['ratio_jmed_over_keras'] == pytest.approx(0.5)
  table = bench_seed_cnn.markdown(rep)
  assert '| 32 | 20 | 10 | 2.00x |' in table and '| 512 | 6 | 12 | 0.50x |' in table
  with pytest.raises(SystemExit):
    bench_seed_cnn.main(['--peers', 'jmed'])  # no keras to compare with


def test_profile_step_times_and_lists_operations(capsys):
  profile_step.main(['--batch-sizes', '8,64', '--top', '3', '--repeats', '1'])
  out = capsys.readouterr().out
  report = json.loads(out[out.index('['):])
  assert [r['batch_size'] for r in report] == [8, 64]
  assert [r['micro_batches'] for r in report] == [1, 2]  # fit's choice on CPU: 32-row ones
  for row in report:
    assert row['images_per_sec'] > 0 and 1 <= len(row['top_ops_ms_per_step']) <= 3
    assert all(ms > 0 for ms in row['top_ops_ms_per_step'].values())
