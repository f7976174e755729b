"""Tox21 (a preset of jmed.data.moleculenet's SMILES source) on the real MoleculeNet CSV, and
the MLP.

The split functions' tests that hold for any MoleculeNet set (`splits.random`, `splits.scaffold`
on toy keys) are in test_moleculenet.py; here are Tox21's own: its 12 assays with missing labels,
fingerprints, and its random and scaffold splits.
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import real_data_dir
from jmed import data
from jmed.data import files
from jmed.data import labels as jlabels
from jmed.data import moleculenet
from jmed.data import splits as jsplits
from jmed.models.mlp import MLP

FOLDER = real_data_dir() / 'moleculenet'
CSV = FOLDER / 'tox21.csv'
N_ROWS = 7_823  # Rows of ../shared/data/moleculenet/tox21.csv.
HAS_RDKIT = importlib.util.find_spec('rdkit') is not None
FRACTIONS = (0.8, 0.1, 0.1)

needs_rdkit = pytest.mark.skipif(not HAS_RDKIT, reason='RDKit not installed.')
needs_tox21 = pytest.mark.skipif(
    not (CSV.is_file() and HAS_RDKIT),
    reason=f'{CSV} not found (set JMED_DATA_DIR to the shared data root) or '
    'RDKit not installed.')


class Table:
  """A Tox21 file's parsable rows: `frame`, `smiles`, `mols`, `labels` int32 [n, 12]."""

  def __init__(self, path, skip_invalid=False):
    self.path = str(path)
    self.frame, self.smiles, self.mols = moleculenet.read_molecules(
        files.read_table(self.path), self.path, 'smiles', skip_invalid)
    self.labels = jlabels.Labels('multilabel', moleculenet.TOX21_TASKS).encode(
        self.frame, self.path)


@pytest.fixture(scope='module')
def table():
  return Table(moleculenet.find_csv('tox21', FOLDER))


@pytest.fixture(scope='module')
def dataset():
  return data.load_dataset('tox21', data_dir=real_data_dir())


def _write_csv(path, smiles):
  header = ','.join(moleculenet.TOX21_TASKS + ('mol_id', 'smiles'))
  rows = [','.join(['0'] * 11 + ['', f'TOX{i}', s]) for i, s in
          enumerate(smiles)]
  path.write_text('\n'.join([header] + rows) + '\n')
  return path


@needs_tox21
def test_table_sizes_and_label_statistics(table):
  assert len(moleculenet.TOX21_TASKS) == 12
  assert table.path == str(CSV)
  assert table.labels.shape == (N_ROWS, 12) and table.labels.dtype == np.int32
  assert len(table.smiles) == len(table.mols) == len(table.frame) == N_ROWS
  assert set(np.unique(table.labels)) == {-1, 0, 1}
  missing = (table.labels == -1).mean()
  assert 0.15 < missing < 0.20, missing  # 17.1% in this file.
  measured = (table.labels != -1).sum(0)
  rate = (table.labels == 1).sum(0) / measured
  assert ((0.02 < rate) & (rate < 0.20)).all(), rate  # 2.9% .. 16.2%.
  assert (measured > 5_000).all()


@needs_tox21
def test_load_dataset_random_split(dataset, table):
  assert dataset.task == 'multilabel' and dataset.num_classes == 12
  assert dataset.input_shape == (1024,)
  assert dataset.sizes == {'train': 6_258, 'validation': 782, 'test': 783}
  features, labels = dataset.splits['train']
  assert features.dtype == np.float32 and labels.dtype == np.int32
  assert set(np.unique(features)) == {0.0, 1.0}
  assert 10 < features.sum(1).mean() < 60  # Bits set per molecule.
  # Tox21's default form: 1024-bit fingerprints of the rows of the seed-0 random split.
  index = jsplits.random(N_ROWS, 0, FRACTIONS)['train']
  np.testing.assert_array_equal(labels, table.labels[index])
  np.testing.assert_array_equal(
      features[:50], moleculenet.fingerprints([table.mols[i] for i in index[:50]], bits=1024))


@needs_tox21
def test_scaffold_split_disjoint_and_no_shared_scaffold(table):
  scaffolds = moleculenet.scaffolds(table.mols)
  split = jsplits.scaffold(scaffolds, FRACTIONS)
  np.testing.assert_array_equal(
      np.sort(np.concatenate(list(split.values()))), np.arange(N_ROWS))
  sizes = [len(split[s]) for s in jsplits.SPLITS]
  assert 0.75 * N_ROWS < sizes[0] <= 0.8 * N_ROWS and min(sizes) > 0
  scaffolds = np.array(scaffolds, dtype=object)
  sets = [set(scaffolds[split[s]]) for s in jsplits.SPLITS]
  assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
  # The largest scaffold group (acyclic molecules, '') goes to train.
  assert '' in sets[0]
  again = jsplits.scaffold(list(scaffolds), FRACTIONS)
  for s in jsplits.SPLITS:
    np.testing.assert_array_equal(split[s], again[s])


@needs_rdkit
def test_invalid_smiles_names_row_or_is_skipped(tmp_path, caplog):
  smiles = ['CCO', 'c1ccccc1O', 'C1CC(', 'CC(=O)O'] + ['C' * k for k in range(2, 10)]
  path = _write_csv(tmp_path / 'tox21.csv', smiles)
  with pytest.raises(data.DataError, match=r"row 3, column 'smiles'") as error:
    moleculenet.load('tox21', tmp_path, features='fingerprint', bits=64)
  assert "'C1CC('" in str(error.value) and str(path) in str(error.value)
  table = Table(path, skip_invalid=True)
  assert 'dropped 1 rows' in caplog.text and "row 3, column 'smiles': dropped" in caplog.text
  assert table.smiles[:3] == ['CCO', 'c1ccccc1O', 'CC(=O)O']
  np.testing.assert_array_equal(table.frame.index[:3], [0, 1, 3])  # the file's data rows
  np.testing.assert_array_equal(table.labels[:, -1], -1)  # empty cell: missing
  np.testing.assert_array_equal(table.labels[:, :-1], 0)
  dataset = moleculenet.load('tox21', tmp_path, features='fingerprint', split='random',
                             skip_invalid=True, bits=64)
  assert sum(dataset.sizes.values()) == 11 and dataset.sizes['train'] == 8
  assert dataset.splits['train'][0].shape == (8, 64)
  assert dataset.splits['train'][1].shape == (8, 12)


@needs_rdkit
def test_bad_tox21_label_names_row_column_and_path(tmp_path):
  path = _write_csv(tmp_path / 'tox21.csv', ['C' * k for k in range(1, 13)])
  path.write_text(path.read_text().replace('0,0,0,0,0,0,0,0,0,0,0,,TOX1,',
                                           '0,0,0,0,0,0,0,0,0,0,2,,TOX1,'))
  with pytest.raises(data.DataError, match=r"row 2, column 'SR-MMP': label '2'") as error:
    moleculenet.load('tox21', tmp_path, features='fingerprint', bits=64)
  assert str(path) in str(error.value)


def test_missing_file_names_path(tmp_path):
  with pytest.raises(data.MissingDataError, match=str(tmp_path)):
    moleculenet.load('tox21', tmp_path, features='fingerprint')
  with pytest.raises(data.MissingDataError, match='tox21.csv'):
    moleculenet.find_csv('tox21', tmp_path)
  with pytest.raises(data.MissingDataError, match='moleculenet'):
    data.load_dataset('tox21', data_dir=tmp_path)


def test_dataset_accepts_missing_labels_only_for_multilabel():
  x = np.zeros((4, 8), np.float32)
  y = np.array([[-1, 0], [1, 0], [0, 1], [1, -1]], np.int32)
  ds = data.Dataset('toy', {'train': (x, y)}, 2, 'multilabel', (8,))
  assert ds.sizes == {'train': 4}
  with pytest.raises(data.DataError, match=r'labels \(1, 0 or -1 = missing\) outside'):
    data.Dataset('toy', {'train': (x, y * 2)}, 2, 'multilabel', (8,))
  with pytest.raises(data.DataError, match='labels outside'):
    data.Dataset('toy', {'train': (x, y[:, 0].copy())}, 2, 'binary', (8,))


def test_mlp_shapes_and_finite_gradient():
  model = MLP(num_classes=12, hidden=(32, 16), dropout_rate=0.5,
              dtype=jnp.bfloat16)
  x = np.random.default_rng(0).random((5, 32, 32)) < 0.1  # Flattened: 1024.
  x = jnp.asarray(x, jnp.float32)
  params = jax.jit(model.init)(jax.random.key(1), x)  # jit: faster than eager.
  kernel = params['params']['Dense_0']['kernel']
  assert kernel.shape == (1024, 32) and kernel.dtype == jnp.float32
  logits = jax.jit(model.apply)(params, x)
  assert logits.shape == (5, 12) and logits.dtype == jnp.float32

  def loss(p):
    out = model.apply(p, x, train=True, rngs={'dropout': jax.random.key(2)})
    return jnp.mean(out ** 2)

  grads = jax.tree_util.tree_leaves(jax.jit(jax.grad(loss))(params))
  assert all(bool(jnp.isfinite(g).all()) for g in grads)
  assert any(bool(jnp.abs(g).sum() > 0) for g in grads)
