"""Shared fixtures: the real data under ../shared/data (or $JMED_DATA_DIR)."""

import concurrent.futures
import os
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jmed import data as jdata

REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path:
  return Path(os.environ.get('JMED_DATA_DIR') or REPO.parent / 'shared' / 'data')


@pytest.fixture(scope='session')
def data_dir() -> Path:
  path = real_data_dir()
  if not (path / 'mnist').is_dir():
    pytest.skip(f'real data not found at {path}; set JMED_DATA_DIR')
  return path


@pytest.fixture(scope='session')
def mnist(data_dir):
  """MNIST offline protocol: 8,000 train / 2,000 test images of the official test split."""
  return jdata.load_dataset('mnist', data_dir=str(data_dir))


def subset(dataset, train: int, test: int):
  """The first `train` / `test` examples of a dataset, as a new Dataset."""
  import dataclasses
  splits = dict(dataset.splits)
  splits['train'] = tuple(a[:train] for a in splits['train'])
  splits['test'] = tuple(a[:test] for a in splits['test'])
  return dataclasses.replace(dataset, splits=splits)


def packed_series(rng, batch=3, steps=6, features=4):
  """Packed GRU-D input [batch, steps, 1 + 3 * features] (see jmed.data.timeseries.pack):
  valid flag, values (0 where unobserved), observed mask, time since the last observation;
  series of lengths 6, 4 and 2, then padding."""
  x = np.zeros((batch, steps, 1 + 3 * features), np.float32)
  for b, length in enumerate([6, 4, 2][:batch]):
    x[b, :length, 0] = 1
    observed = rng.random((length, features)) < 0.6
    x[b, :length, 1:1 + features] = rng.normal(size=(length, features)) * observed
    x[b, :length, 1 + features:1 + 2 * features] = observed
    x[b, :length, 1 + 2 * features:] = rng.random((length, features))
  return x


def packed_graphs(rows=6):
  """Packed D-MPNN input [3, rows, 17] (see jmed.data.graphs.pack) without RDKit: ethanol-like
  C-C-O (3 atoms, 4 directed bonds), a C=O pair and a lone atom."""
  from jmed.data import graphs
  def graph(atomic_numbers, bonds):
    atoms = np.array([[z - 1, 1, 4, 0, 1, 2, 0, z * 0.012] for z in atomic_numbers], np.float32)
    pairs = [(v, w) for v, w, _ in bonds for v, w in ((v, w), (w, v))]
    codes = np.array([[kind, 0, 0, 0] for _, _, kind in bonds for _ in (0, 1)],
                     np.float32).reshape(-1, 4)
    source = np.array([v for v, _ in pairs], np.int64)
    target = np.array([w for _, w in pairs], np.int64)
    return graphs.Graph(atoms, codes, source, target, np.arange(len(pairs)) ^ 1)
  return graphs.pack([graph([6, 6, 8], [(0, 1, 0), (1, 2, 0)]), graph([6, 8], [(0, 1, 1)]),
                      graph([7], [])], rows)


def run_on_forced_devices(tmp_path, devices: int, script: str, inputs_path,
                          fast_compile: bool = False):
  """Runs `script` in a fresh Python with `devices` forced CPU devices.

  The script gets `inputs_path` and an output .npz path as argv[1:3]; returns (its saved
  arrays, its stdout). A fresh process is needed: the device count is fixed at JAX start-up.
  `fast_compile` lowers XLA's backend optimisation (about half the compile time of a tiny
  model; both sides of a comparison must use the same setting).
  """
  out = tmp_path / f'out{devices}.npz'
  flags = f'--xla_force_host_platform_device_count={devices}'
  if fast_compile:
    flags += ' --xla_backend_optimization_level=0'
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO))
  proc = subprocess.run([sys.executable, '-c', script, str(inputs_path), str(out)],
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(np.load(out)), proc.stdout


def one_and_four_devices(tmp_path, script: str, inputs_path):
  """(arrays saved by `script` on 1 forced CPU device, on 4), both processes run at once with
  `fast_compile` (see `run_on_forced_devices`)."""
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    one, four = pool.map(
        lambda n: run_on_forced_devices(tmp_path, n, script, inputs_path, fast_compile=True)[0],
        (1, 4))
  assert int(one.pop('devices')) == 1 and int(four.pop('devices')) == 4
  return one, four


_HIDE_TENSORFLOW = textwrap.dedent("""
    import json, sys

    class Hide:  # Every import finder answers "not installed" for TF.
      def __init__(self, finder):
        self.finder = finder
      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'tensorflow':
          return None
        find = getattr(self.finder, 'find_spec', None)
        return find(name, path, target) if find else None

    sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
""")


def run_without_tensorflow(body: str, *args) -> dict:
  """Runs `body` in a fresh Python where TensorFlow cannot be imported; `args` are its argv[1:].

  `body` prints one JSON object as its last line of output, which is returned.
  """
  env = dict(os.environ, PYTHONPATH=str(REPO))
  result = subprocess.run(
      [sys.executable, '-c', _HIDE_TENSORFLOW + textwrap.dedent(body), *map(str, args)],
      capture_output=True, text=True, timeout=120, check=False, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])
