"""Multi-host training: 2 processes x 2 CPU devices (gloo collectives over 127.0.0.1) against a
1-process, 1-device run of the same global batches, both through scripts/train.py.

The 1-process run holds PneumoniaMNIST in memory; the 2 processes stream it from ArrayRecord
shards exported once (`--data <records>`, jmed.data.records and jmed.data.stream), each reading
only its 16 rows of each global batch of 32. So the comparisons also show that streaming
multi-host training equals in-memory training on one device.

Parameters agree to float32 summation order (the all-reduce adds in another order than one
device): within 1e-5 after 16 SGD steps, while training moved them by more than 1e-2.
"""

import json
import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from jmed import data as jdata
from jmed import distributed
from jmed.data import records
from jmed.train import loop, parallel, restore
from jmed.train.state import create_train_state

from conftest import REPO

# seed CNN with dropout and augmentation (so per-device random bits matter), a mid-epoch
# checkpoint and a validation-picked best checkpoint; 12 steps of a global batch of 32.
TRAIN_ARGS = ['--dataset', 'pneumoniamnist', '--batch-size', '32', '--eval-batch-size', '200',
              '--max-steps', '12', '--epochs', '1', '--dropout-rate', '0.2',
              '--augment', 'chest_xray', '--checkpoint-every', '5', '--optimizer', 'sgd',
              '--learning-rate', '0.05', '--momentum', '0.9', '--no-progress']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _train(data_dir, out, devices: int, extra=()):
  """Starts scripts/train.py with `devices` CPU devices; returns the Popen.

  Every run (1 process and 2) compiles at XLA's lowest backend optimisation level (about a third
  less time than the default for these 3 processes on 2 cores): both sides of each comparison use
  the same setting."""
  env = {**os.environ, 'JAX_NUM_CPU_DEVICES': str(devices), 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': '--xla_backend_optimization_level=0'}
  return subprocess.Popen(
      [sys.executable, str(REPO / 'scripts' / 'train.py'), '--data-dir', str(data_dir),
       '--output-dir', str(out), *TRAIN_ARGS, *extra],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(procs, timeout=300):
  """(stdout, stderr) of each process; all are killed as soon as one fails or hangs."""
  outs = []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=timeout)
      assert p.returncode == 0, stderr[-4000:]
      outs.append((stdout, stderr))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  return outs


def _run_both(data_dir, root, extra=()):
  """Trains (or resumes) root/single on 1 device, the dataset in memory, and root/multi on 2
  processes x 2 devices at once, streaming it from the records in root/records; returns the 2
  processes' (stdout, stderr)."""
  single = _train(data_dir, root / 'single', devices=1, extra=extra)
  port = _free_port()
  workers = [_train(data_dir, root / 'multi', devices=2,
                    extra=[*extra, '--data', str(root / 'records'),
                           '--coordinator-address', f'127.0.0.1:{port}',
                           '--num-processes', '2', '--process-id', str(i)])
             for i in range(2)]
  return _wait([single, *workers])[1:]


@pytest.fixture(scope='module')
def runs(data_dir, tmp_path_factory):
  """(1-process run dir, 2-process run dir, the 2 processes' (stdout, stderr))."""
  root = tmp_path_factory.mktemp('multihost')
  records.write(jdata.load_dataset('pneumoniamnist', data_dir=str(data_dir)), root / 'records',
                progress=False)
  outs = _run_both(data_dir, root)
  return root / 'single', root / 'multi', outs


def _params(run_dir, which, dataset):
  _, _, variables = restore.load_run(str(run_dir), which=which, dataset=dataset)
  return jax.tree.leaves(jax.device_get(variables['params']))


def test_two_processes_train_the_same_parameters_as_one(runs, data_dir):
  single, multi, _ = runs
  dataset = restore.load_run_dataset(restore.read_config(str(single)), str(data_dir))
  for which in ('latest', 'best'):
    one, two = _params(single, which, dataset), _params(multi, which, dataset)
    assert len(one) == len(two)
    for a, b in zip(one, two):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  steps = [sorted(int(p.name) for p in (run / 'checkpoints').iterdir() if p.name.isdigit())
           for run in (single, multi)]
  # checkpoint_every 5 saves after the dispatch of 4 steps that passes step 5, and at the end
  assert steps[0] == steps[1] == [8, 12]
  # the comparison can fail: 12 steps moved the parameters far beyond its tolerance
  cfg = restore.read_config(str(single))
  model = loop.build_model(cfg, dataset)
  init = jax.jit(lambda x: create_train_state(model, optax.sgd(0.0), x, cfg.seed).params)
  start = jax.tree.leaves(init(dataset.splits['train'][0][:1]))
  latest = _params(single, 'latest', dataset)
  assert max(float(np.abs(a - b).max()) for a, b in zip(latest, start)) > 1e-2


def test_two_processes_report_the_same_metrics_once(runs):
  single, multi, outs = runs
  s1 = json.loads((single / 'summary.json').read_text())
  s2 = json.loads((multi / 'summary.json').read_text())
  assert (s1['devices'], s1['processes']) == (1, 1)
  assert (s2['devices'], s2['processes']) == (4, 2)
  for key in ('test_auroc', 'test_accuracy', 'test_loss', 'last_test_auroc'):
    assert s2[key] == pytest.approx(s1[key], rel=1e-4, abs=1e-5), key
  log1 = (single / 'metrics.jsonl').read_text().splitlines()
  log2 = (multi / 'metrics.jsonl').read_text().splitlines()
  assert len(log1) == len(log2) == 1  # written by process 0 only, not once per process
  r1, r2 = json.loads(log1[0]), json.loads(log2[0])
  assert r2['train_loss'] == pytest.approx(r1['train_loss'], rel=1e-5)
  assert r2['val_auroc'] == pytest.approx(r1['val_auroc'], rel=1e-4)
  (out0, err0), (out1, err1) = outs
  assert 'process 0/2: 2 local and 4 global cpu devices' in err0
  assert 'process 1/2: 2 local and 4 global cpu devices' in err1
  for i, err in enumerate((err0, err1)):  # streamed: each process read its rows, no others
    read = re.search(rf'process {i}/2: read (\d+) of 4708 training examples', err)
    assert read and int(read.group(1)) == 12 * 16 + 1, err[-2000:]  # + 1: the model's shape
  assert 'test@best' in out0 and 'test@best' not in out1  # the table is printed once


def test_detect_cluster_reads_the_launcher_environment():
  assert distributed.detect_cluster({}) is None
  assert distributed.detect_cluster({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '1'}) is None
  assert distributed.detect_cluster({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '8'}) == 'slurm'
  assert distributed.detect_cluster({'OMPI_MCA_orte_hnp_uri': 'x',
                                     'OMPI_COMM_WORLD_SIZE': '4'}) == 'mpi'
  assert distributed.detect_cluster({'TPU_WORKER_HOSTNAMES': 'a,b'}) == 'tpu'


def test_initialize_is_a_no_op_for_one_process_and_checks_its_flags():
  where = distributed.initialize('off')
  assert where['process_count'] == 1 and where['global_devices'] == jax.device_count()
  assert distributed.is_primary()
  with pytest.raises(ValueError, match='needs all of'):
    distributed.initialize(coordinator_address='127.0.0.1:1234')
  with pytest.raises(ValueError, match='process_id must be in'):
    distributed.initialize(coordinator_address='127.0.0.1:1234', num_processes=2, process_id=2)
  with pytest.raises(ValueError, match='mode is off'):
    distributed.initialize('off', coordinator_address='h:1', num_processes=2, process_id=0)
  with pytest.raises(ValueError, match='must be one of'):
    distributed.initialize('sometimes')


def test_process_shares_of_batches_put_together_are_the_global_batches():
  images = np.arange(50, dtype=np.float32).reshape(25, 2)
  labels = np.arange(25) % 3
  shares = [slice(0, 4), slice(4, 8)]  # two processes of a global batch of 8
  train = [list(jdata.train_batches(images, labels, 8, seed=1, epoch=2, rows=r)) for r in shares]
  whole = list(jdata.train_batches(images, labels, 8, seed=1, epoch=2))
  assert len(train[0]) == len(whole) == 3
  for a, b, batch in zip(*train, whole):
    for key in batch:
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), batch[key])
  evals = [list(jdata.eval_batches(images, labels, 8, rows=r)) for r in shares]
  whole = list(jdata.eval_batches(images, labels, 8))
  assert len(whole) == 4 and whole[-1]['valid'].sum() == 1  # 25 = 3 * 8 + 1, padded
  for a, b, batch in zip(*evals, whole):
    for key in batch:
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), batch[key])


def test_local_rows_of_one_process_are_the_whole_batch():
  mesh = parallel.make_mesh()
  assert parallel.local_rows(8 * mesh.devices.size, mesh) == slice(0, 8 * mesh.devices.size)
  if mesh.devices.size > 1:
    with pytest.raises(ValueError, match='not divisible'):
      parallel.local_rows(mesh.devices.size + 1, mesh)


def test_two_processes_resume_from_their_checkpoint_like_one(runs, data_dir):
  """After a preemption the same command with --resume continues from the orbax checkpoint the
  processes wrote together (run last in this module: it extends the runs)."""
  single, multi, _ = runs
  _run_both(data_dir, single.parent, extra=['--resume', '--max-steps', '16'])
  dataset = restore.load_run_dataset(restore.read_config(str(single)), str(data_dir))
  for a, b in zip(_params(single, 'latest', dataset), _params(multi, 'latest', dataset)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for run in (single, multi):
    records = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [12, 16]
