"""Tests of jmed.text.smiles and the MoleculeNet presets of jmed.data.moleculenet on the real
MoleculeNet CSVs (a user's own SMILES table: test_smiles_source.py)."""

import dataclasses
import importlib.util
import json
import re

import numpy as np
import pytest

from conftest import real_data_dir
from jmed import data
from jmed.configs import MoleculeConfig, OptimizerConfig, TrainConfig
from jmed.data import files
from jmed.data import labels as jlabels
from jmed.data import moleculenet
from jmed.data import splits as jsplits
from jmed.text import smiles as jsmiles

FOLDER = real_data_dir() / 'moleculenet'
HAS_RDKIT = importlib.util.find_spec('rdkit') is not None
ESOL_TARGET = 'measured log solubility in mols per litre'
FRACTIONS = (0.8, 0.1, 0.1)


def _needs(*names):
  missing = [n for n in names if not (FOLDER / n).is_file()]
  return pytest.mark.skipif(not HAS_RDKIT or bool(missing),
                            reason=f'RDKit or {missing} under {FOLDER} missing.')


needs_rdkit = pytest.mark.skipif(not HAS_RDKIT, reason='RDKit not installed.')
needs_esol = _needs('delaney-processed.csv')
needs_bbbp = _needs('BBBP.csv')
needs_all = _needs('delaney-processed.csv', 'BBBP.csv', 'tox21.csv')


def _molecules(path, skip_invalid=False):
  """(rows kept, their SMILES, their RDKit molecules) of a SMILES CSV."""
  path = str(path)
  return moleculenet.read_molecules(files.read_table(path), path, 'smiles', skip_invalid)


@pytest.fixture(scope='module')
def esol_table():
  return _molecules(FOLDER / 'delaney-processed.csv')


@pytest.fixture(scope='module')
def bbbp_table():
  return _molecules(FOLDER / 'BBBP.csv', skip_invalid=True)


@pytest.fixture(scope='module')
def esol():
  return data.load_dataset('esol', data_dir=real_data_dir(),
                           molecule=MoleculeConfig(max_length=64))


def _write_esol_csv(path, smiles):
  rows = [f'mol{i},{s},{-1.5 + i}' for i, s in enumerate(smiles)]
  path.write_text('\n'.join([f'Compound ID,smiles,{ESOL_TARGET}'] + rows) + '\n')
  return path


def test_tokenize_splits_atoms_bonds_and_ring_closures():
  assert jsmiles.tokenize('CC(=O)Nc1ccc(Cl)cc1') == [
      'C', 'C', '(', '=', 'O', ')', 'N', 'c', '1', 'c', 'c', 'c', '(', 'Cl',
      ')', 'c', 'c', '1']
  assert jsmiles.tokenize('Br[C@@H]1CC%10[nH+].[Na+]') == [
      'Br', '[C@@H]', '1', 'C', 'C', '%10', '[nH+]', '.', '[Na+]']
  assert jsmiles.tokenize('F/C=C\\F') == ['F', '/', 'C', '=', 'C', '\\', 'F']
  for bad, where in (('CC O', "' ' at position 2"), ('C[Si', "'[' at position 1"),
                     ('', 'empty')):
    with pytest.raises(data.DataError, match=re.escape(where)) as error:
      jsmiles.tokenize(bad)
    assert repr(bad) in str(error.value)


@needs_esol
def test_tokens_join_back_to_every_esol_smiles(esol_table):
  every = esol_table[1]
  assert len(every) == 1128
  for s in every:
    assert ''.join(jsmiles.tokenize(s)) == s
  vocab = jsmiles.build_vocab(every)
  ids = jsmiles.encode(vocab, every, max_length=100)  # The longest has 97 tokens.
  assert jsmiles.decode(vocab, ids) == list(every)
  assert (ids[:, 0] == jsmiles.BOS_ID).all()


def test_vocabulary_encode_save_load(tmp_path):
  vocab = jsmiles.build_vocab(['CCO', 'c1ccccc1', 'CCCl'])
  assert vocab.tokens[:4] == ('[PAD]', '[UNK]', '[BOS]', '[EOS]')
  assert vocab.tokens[4] == 'c' and vocab.vocab_size == 9  # c, C, 1, O, Cl.
  ids = jsmiles.encode(vocab, ['CCO', 'CBr', 'CCCCCCCC'], max_length=6)
  assert ids.dtype == np.int32 and ids.shape == (3, 6)
  c, o = vocab.ids['C'], vocab.ids['O']
  np.testing.assert_array_equal(ids[0], [2, c, c, o, 3, 0])
  np.testing.assert_array_equal(ids[1], [2, c, 1, 3, 0, 0])  # Br is unknown.
  np.testing.assert_array_equal(ids[2], [2, c, c, c, c, 3])  # Truncated.
  path = tmp_path / 'run' / 'tokenizer.json'
  vocab.save(path)
  assert jsmiles.load(path) == vocab
  assert json.loads(path.read_text())['pattern'] == jsmiles.PATTERN
  path.write_text('{"format": "other"}')
  with pytest.raises(data.DataError, match=str(path)):
    jsmiles.load(path)
  with pytest.raises(data.MissingDataError, match='nothing.json'):
    jsmiles.load(tmp_path / 'nothing.json')
  with pytest.raises(data.DataError, match='single string'):
    jsmiles.encode(vocab, 'CCO', 8)


@needs_rdkit
def test_invalid_smiles_error_names_file_row_column_and_smiles(tmp_path, caplog):
  path = _write_esol_csv(tmp_path / 'delaney-processed.csv',
                         ['CCO', 'c1ccccc1O', 'C1CC(', 'CC(=O)O ', 'CCN'])
  with pytest.raises(data.DataError, match=r"row 3, column 'smiles'") as error:
    _molecules(path)
  assert str(path) in str(error.value) and "'C1CC('" in str(error.value)
  with pytest.raises(data.DataError, match=r"row 3, column 'smiles'"):
    data.load_dataset('esol', data_dir=_root(tmp_path),
                      molecule=MoleculeConfig(skip_invalid=False))
  frame, smiles, mols = _molecules(path, skip_invalid=True)
  assert frame.index.tolist() == [0, 1, 3, 4] and len(mols) == 4  # the file's rows, kept
  assert "row 3, column 'smiles': dropped" in caplog.text and 'dropped 1 rows' in caplog.text
  assert smiles == ['CCO', 'c1ccccc1O', 'CC(=O)O', 'CCN']  # Stripped.
  labels = jlabels.Labels('regression', (ESOL_TARGET,)).encode(frame, str(path))
  np.testing.assert_allclose(labels[:, 0], [-1.5, -0.5, 1.5, 2.5])


def _root(tmp_path):
  """A data root whose moleculenet/ folder holds tmp_path's CSV."""
  root = tmp_path / 'root'
  (root / 'moleculenet').mkdir(parents=True, exist_ok=True)
  target = root / 'moleculenet' / 'delaney-processed.csv'
  target.write_text((tmp_path / 'delaney-processed.csv').read_text())
  return root


@needs_rdkit
def test_missing_file_and_bad_split_are_named(tmp_path):
  with pytest.raises(data.MissingDataError, match='delaney-processed.csv'):
    moleculenet.load('esol', tmp_path)
  with pytest.raises(data.DataError, match='split'):
    moleculenet.load('bbbp', tmp_path, split='time')


def test_presets_are_smiles_tables():
  """ESOL, BBBP and Tox21 are DataConfigs of the generic source, not code of their own."""
  config = moleculenet.PRESETS['tox21'].data_config('tox21.csv')
  assert (config.source, config.task, config.split, config.smiles_column) == (
      'smiles', 'multilabel', 'random', 'smiles')
  assert files.columns_of(config.label_column) == list(moleculenet.TOX21_TASKS)
  assert moleculenet.PRESETS['bbbp'].data_config('BBBP.csv').split == 'scaffold'
  assert moleculenet.PRESETS['bbbp'].data_config('BBBP.csv', 'random', 3).split_seed == 3
  assert jsplits.fractions_of(config) == pytest.approx(FRACTIONS)


@needs_bbbp
def test_bbbp_skip_invalid_drops_exactly_the_unparsable_rows(bbbp_table):
  from rdkit import Chem, rdBase  # pylint: disable=g-import-not-at-top
  import csv  # pylint: disable=g-import-not-at-top
  with open(FOLDER / 'BBBP.csv', newline='') as f, rdBase.BlockLogs():
    rows = list(csv.DictReader(f))
    bad = [i for i, r in enumerate(rows) if Chem.MolFromSmiles(r['smiles']) is None]
  assert len(rows) == 2050 and len(bad) == 11  # MoleculeNet keeps 2,039.
  frame, smiles, _ = bbbp_table
  assert sorted(set(range(2050)) - set(frame.index)) == bad
  assert len(smiles) == 2039 and set(frame['p_np']) == {'0', '1'}
  with pytest.raises(data.DataError, match=r"row 60, column 'smiles'"):
    _molecules(FOLDER / 'BBBP.csv')


@needs_bbbp
def test_scaffold_split_shares_no_scaffold_and_is_deterministic(bbbp_table):
  keys = moleculenet.scaffolds(bbbp_table[2])
  split = jsplits.scaffold(keys, FRACTIONS)
  assert [len(split[s]) for s in jsplits.SPLITS] == [1631, 204, 204]
  np.testing.assert_array_equal(
      np.sort(np.concatenate(list(split.values()))), np.arange(2039))
  keys = np.array(keys, dtype=object)
  train, valid, test = (set(keys[split[s]]) for s in jsplits.SPLITS)
  assert not (train & valid or train & test or valid & test)
  again = jsplits.scaffold(list(keys), FRACTIONS)
  for s in jsplits.SPLITS:
    np.testing.assert_array_equal(split[s], again[s])


def test_scaffold_split_fills_largest_groups_first():
  keys = ['a'] * 5 + ['b'] * 3 + ['c'] + ['d']  # n = 10: 8 / 1 / 1.
  split = jsplits.scaffold(keys, FRACTIONS)
  assert split['train'].tolist() == list(range(8))
  assert split['validation'].tolist() == [9]  # Ties: later index first.
  assert split['test'].tolist() == [8]


@pytest.mark.parametrize('n, sizes', [(1128, [902, 113, 113]),  # ESOL
                                      (7823, [6258, 782, 783])])  # Tox21
def test_random_split_is_seeded_disjoint_and_covering(n, sizes):
  first = jsplits.random(n, 0, FRACTIONS)
  again = jsplits.random(n, 0, FRACTIONS)
  other = jsplits.random(n, 1, FRACTIONS)
  for s in jsplits.SPLITS:
    np.testing.assert_array_equal(first[s], again[s])
  assert not np.array_equal(first['train'], other['train'])
  assert not np.array_equal(first['test'], other['test'])
  assert [len(first[s]) for s in jsplits.SPLITS] == sizes
  np.testing.assert_array_equal(
      np.sort(np.concatenate(list(first.values()))), np.arange(n))


@needs_all
@pytest.mark.parametrize('name, task, labels, sizes', [
    ('esol', 'regression', (np.float32, (1,)), (902, 113, 113)),
    ('bbbp', 'binary', (np.int32, ()), (1631, 204, 204)),
    ('tox21', 'multilabel', (np.int32, (12,)), (6258, 782, 783)),
])
def test_load_dataset_smiles_shapes_and_dtypes(name, task, labels, sizes):
  dataset = data.load_dataset(name, data_dir=real_data_dir(),
                              molecule=MoleculeConfig(max_length=96))
  assert dataset.task == task and dataset.input_shape == (96,)
  assert tuple(dataset.sizes.values()) == sizes
  # Read by the generic source: its preprocessing and split record come along.
  assert dataset.name == name and dataset.preprocessing['source'] == 'smiles'
  assert dataset.preprocessing['labels']['columns'] == list(
      moleculenet.PRESETS[name].label_columns)
  assert dataset.split_info['rule'] == moleculenet.PRESETS[name].split
  vocab = dataset.tokenizer
  assert dataset.model_kwargs == {'vocab_size': vocab.vocab_size}
  for split, (ids, y) in dataset.splits.items():
    assert ids.dtype == np.int32 and ids.shape == (len(y), 96), split
    assert y.dtype == labels[0] and y.shape[1:] == labels[1], split
    assert (ids[:, 0] == jsmiles.BOS_ID).all() and ids.max() < vocab.vocab_size
  train_ids = dataset.splits['train'][0]
  assert not (train_ids == jsmiles.UNK_ID).any()  # Vocabulary learned on train.
  if name == 'tox21':
    y = dataset.splits['train'][1]
    assert set(np.unique(y)) == {-1, 0, 1}


@needs_esol
def test_fingerprints_hold_the_same_molecules_as_smiles(esol):
  fps = data.load_dataset('esol', data_dir=real_data_dir(),
                          molecule=MoleculeConfig(features='fingerprint',
                                                  fingerprint_bits=256))
  assert fps.input_shape == (256,) and fps.tokenizer is None
  for split in jsplits.SPLITS:
    np.testing.assert_array_equal(fps.splits[split][1], esol.splits[split][1])
    assert fps.splits[split][0].dtype == np.float32


def test_dataset_validates_regression_labels():
  x = np.zeros((3, 4), np.float32)
  y = np.array([[0.5], [-2.0], [1.0]], np.float32)
  assert data.Dataset('toy', {'train': (x, y)}, 1, 'regression', (4,)).sizes == {'train': 3}
  for bad, match in ((y.astype(np.float64), 'float32'), (y[:, 0], 'float32'),
                     (np.where(y > 0, np.nan, y), 'NaN')):
    with pytest.raises(data.DataError, match=match):
      data.Dataset('toy', {'train': (x, bad)}, 1, 'regression', (4,))


@needs_esol
def test_fit_esol_smiles_cnn_beats_predicting_the_training_mean(esol, tmp_path):
  from jmed.train.loop import fit  # pylint: disable=g-import-not-at-top
  cfg = TrainConfig(
      model='text_cnn', dataset='esol', epochs=6, batch_size=32, eval_batch_size=113,
      optimizer=OptimizerConfig(name='adam', learning_rate=3e-3),
      model_kwargs={'embed_dim': 32, 'features': 32, 'widths': [3, 5]},
      steps_per_dispatch=1, progress=False, output_dir=str(tmp_path / 'run'))
  summary = fit(cfg, esol)
  train_y, test_y = esol.splits['train'][1], esol.splits['test'][1]
  mean_rmse = float(np.sqrt(np.mean((test_y - train_y.mean()) ** 2)))  # 2.19
  assert summary['best']['metric'] == 'val_rmse' and summary['best']['lower_is_better']
  # The task standardised the targets with the training split's mean and std.
  assert summary['target_scale']['mean'] == pytest.approx([train_y.mean()], rel=1e-5)
  assert summary['target_scale']['std'] == pytest.approx([train_y.std()], rel=1e-5)
  assert summary['test_rmse'] < 0.7 * mean_rmse, (summary['test_rmse'], mean_rmse)
  saved = jsmiles.load(tmp_path / 'run' / 'tokenizer.json')
  assert saved == esol.tokenizer
  again = dataclasses.replace(cfg, output_dir=str(tmp_path / 'again'))
  assert fit(again, esol)['test_rmse'] == pytest.approx(summary['test_rmse'], rel=1e-5)


@needs_esol
def test_an_mlp_on_smiles_token_ids_is_refused_before_writing(esol, tmp_path):
  """Token ids are not features: the MLP says to use fingerprints (or a sequence model)."""
  from jmed.train.loop import fit  # pylint: disable=g-import-not-at-top
  cfg = TrainConfig(model='mlp', dataset='esol', progress=False,
                    output_dir=str(tmp_path / 'run'))
  with pytest.raises(ValueError, match='fingerprint'):
    fit(cfg, esol)
  assert not (tmp_path / 'run').exists()


@needs_esol
def test_without_a_data_dir_the_csv_is_downloaded_once_into_the_cache(tmp_path, monkeypatch):
  """The online path, run against a file:// URL of the real CSV (this machine has no network)."""
  source = FOLDER / 'delaney-processed.csv'
  preset = moleculenet.PRESETS['esol']
  monkeypatch.setitem(moleculenet.PRESETS, 'esol',
                      dataclasses.replace(preset, url=source.as_uri()))
  monkeypatch.delenv('JMED_DATA_DIR', raising=False)
  monkeypatch.setenv('JMED_CACHE_DIR', str(tmp_path / 'cache'))
  online = data.load_dataset('esol', molecule=MoleculeConfig(max_length=64))
  cached = tmp_path / 'cache' / 'moleculenet' / 'delaney-processed.csv'
  assert cached.read_bytes() == source.read_bytes()
  offline = data.load_dataset('esol', data_dir=real_data_dir(),
                              molecule=MoleculeConfig(max_length=64))
  for split in ('train', 'validation', 'test'):
    for a, b in zip(online.splits[split], offline.splits[split]):
      np.testing.assert_array_equal(a, b)
  monkeypatch.setitem(moleculenet.PRESETS, 'esol',
                      dataclasses.replace(preset, url=(tmp_path / 'absent.csv').as_uri()))
  assert data.load_dataset('esol').sizes == online.sizes  # cached: no second download
  monkeypatch.setenv('JMED_CACHE_DIR', str(tmp_path / 'empty'))
  with pytest.raises(data.MissingDataError, match='esol: download of'):
    data.load_dataset('esol')
  assert not list((tmp_path / 'empty' / 'moleculenet').iterdir())
