"""Importing models, training and optimizers pulls in no data, plotting or search library."""

import json
import subprocess
import sys

from conftest import REPO

HEAVY = ('tensorflow', 'tensorflow_datasets', 'sklearn', 'rdkit', 'matplotlib', 'optuna', 'h5py',
         'tokenizers')
LEAN = ('jmed.models', 'jmed.train', 'jmed.optim', 'jmed.tasks', 'jmed.train.steps',
        'jmed.train.loop', 'jmed.train.ensemble', 'jmed.train.parallel', 'jmed.train.restore',
        'jmed.data.pipeline', 'jmed.data.augment', 'jmed.survival', 'jmed.segmentation',
        'jmed.privacy', 'jmed.uncertainty', 'jmed.metrics')


def _loaded_after(modules) -> list:
  """The HEAVY top-level packages in sys.modules after importing `modules` in a fresh Python."""
  code = ('import importlib, json, sys\n'
          f'for name in {list(modules)!r}: importlib.import_module(name)\n'
          f'print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))))')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=300, cwd=REPO, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_models_training_and_optimizers_import_no_heavy_library():
  assert _loaded_after(LEAN) == []


def test_the_check_sees_a_heavy_import():
  """The same check fails where a heavy library is imported (it is not vacuous)."""
  assert 'tensorflow_datasets' in _loaded_after(['jmed.data.medmnist'])
