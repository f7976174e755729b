"""The 'smiles' source (jmed.data.moleculenet.load_user / featurize) on users' SMILES tables.

MoleculeNet's ESOL and BBBP, read as a user's file with their own or other column names, must
give the built-in datasets' arrays; a small synthetic table covers inference, missing labels,
errors and the featurize round trip.
"""

import csv
import dataclasses
import importlib.util
import json

import numpy as np
import pytest

from conftest import real_data_dir
from jmed import data
from jmed.configs import DataConfig, MoleculeConfig, TrainConfig
from jmed.data import files, moleculenet, splits, user

FOLDER = real_data_dir() / 'moleculenet'
ESOL = FOLDER / 'delaney-processed.csv'
BBBP = FOLDER / 'BBBP.csv'
ESOL_TARGET = 'measured log solubility in mols per litre'
HAS_RDKIT = importlib.util.find_spec('rdkit') is not None
FRACTIONS = (0.8, 0.1, 0.1)

pytestmark = pytest.mark.skipif(
    not (HAS_RDKIT and ESOL.is_file() and BBBP.is_file()),
    reason=f'RDKit or the MoleculeNet CSVs under {FOLDER} missing.')

# 24 small molecules RDKit parses: alkanes, alcohols, amines and a few rings.
SMILES = (['C' * k for k in range(1, 9)] + ['C' * k + 'O' for k in range(1, 9)]
          + ['C' * k + 'N' for k in range(1, 5)] + ['c1ccccc1', 'C1CCCCC1', 'c1ccncc1',
                                                   'C1CCOC1'])


def _write(path, header, rows):
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path


def _esol_rows():
  with open(ESOL, newline='') as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def esol():
  return data.load_dataset('esol', data_dir=real_data_dir())


@pytest.fixture(scope='module')
def solubility(tmp_path_factory):
  """ESOL as a user's `mol,logS` CSV."""
  path = tmp_path_factory.mktemp('user') / 'solubility.csv'
  return _write(path, ['mol', 'logS'], [(r['smiles'], r[ESOL_TARGET]) for r in _esol_rows()])


def _same(a, b):
  assert a.sizes == b.sizes and a.task == b.task and a.num_classes == b.num_classes
  assert a.input_shape == b.input_shape and a.model_kwargs == b.model_kwargs
  assert a.tokenizer == b.tokenizer
  for split in a.splits:
    for x, y in zip(a.splits[split], b.splits[split]):
      assert x.dtype == y.dtype
      np.testing.assert_array_equal(x, y)


def test_presets_equal_the_generic_source_on_their_files(esol):
  """load_dataset('esol' | 'bbbp') is load_user on the same file with the preset's columns
  (the task inferred, the recommended split given)."""
  generic = moleculenet.load_user(DataConfig(path=str(ESOL), label_column=ESOL_TARGET,
                                             split='random'))
  assert generic.name == 'delaney-processed' and generic.task == 'regression'
  _same(generic, esol)
  molecule = MoleculeConfig(features='fingerprint', fingerprint_bits=128)
  bbbp = data.load_dataset('bbbp', data_dir=real_data_dir(), molecule=molecule)
  generic = moleculenet.load_user(DataConfig(path=str(BBBP), label_column='p_np',
                                             split='scaffold'), molecule=molecule)
  assert generic.task == 'binary' and generic.preprocessing['labels']['classes'] == ['0', '1']
  assert bbbp.split_info['rule'] == generic.split_info['rule'] == 'scaffold'
  _same(generic, bbbp)


def test_a_mol_logs_csv_is_builtin_esol(solubility, esol, tmp_path):
  """--data solubility.csv --smiles-column mol --label-column logS: the same split (random,
  seed 0, 80/10/10), vocabulary, token ids and labels as the built-in ESOL; featurize gives
  each row the inputs training gave it."""
  cfg = TrainConfig(data=DataConfig(path=str(solubility), smiles_column='mol',
                                    label_column='logS'))
  dataset = user.load(cfg)
  assert dataset.name == 'solubility'
  info = dataset.split_info
  assert (info['rule'], info['seed'], info['column']) == ('random', 0, None)
  assert info['fractions'] == pytest.approx(FRACTIONS)
  assert info['sizes'] == {'train': 902, 'validation': 113, 'test': 113}
  _same(dataset, esol)
  preprocessing = json.loads(json.dumps(dataset.preprocessing))  # JSON-able, as saved
  assert preprocessing == {'source': 'smiles', 'labels': {'task': 'regression',
                           'columns': ['logS'], 'classes': []}, 'features': 'smiles',
                           'max_length': 128, 'bits': 1024, 'smiles_column': 'mol'}
  dataset.tokenizer.save(tmp_path / 'tokenizer.json')  # as the training loop does
  rows = user.featurize(str(solubility), cfg, preprocessing, str(tmp_path))
  assert rows.ids[:2] == ['row 1', 'row 2'] and len(rows.ids) == 1128
  for split, index in splits.random(1128, 0, FRACTIONS).items():
    np.testing.assert_array_equal(rows.inputs[index], dataset.splits[split][0])
    np.testing.assert_array_equal(rows.labels[index], dataset.splits[split][1])


def test_scaffold_split_keeps_scaffolds_apart(tmp_path):
  rows = _esol_rows()
  path = _write(tmp_path / 'esol.csv', ['mol', 'row'],
                [(r['smiles'], i) for i, r in enumerate(rows)])
  dataset = moleculenet.load_user(
      DataConfig(path=str(path), smiles_column='mol', label_column='row', task='regression',
                 split='scaffold'),
      molecule=MoleculeConfig(features='fingerprint', fingerprint_bits=16))
  assert dataset.split_info['rule'] == 'scaffold' and dataset.split_info['seed'] is None
  _, _, mols = moleculenet.read_molecules(files.read_table(str(path)), str(path), 'mol', False)
  keys = np.array(moleculenet.scaffolds(mols), dtype=object)
  seen = {}
  for split, (_, labels) in dataset.splits.items():  # each label is its row
    index = labels[:, 0].astype(int)
    assert (np.diff(index) > 0).all()  # the file's order within a split
    seen[split] = set(keys[index])
  assert sorted(np.concatenate([d[1][:, 0] for d in dataset.splits.values()])) == list(
      range(len(rows)))
  assert not (seen['train'] & seen['validation'] or seen['train'] & seen['test']
              or seen['validation'] & seen['test'])
  assert dataset.sizes['train'] <= 0.8 * len(rows)


def test_multilabel_empty_cells_are_missing(tmp_path):
  rows = [(s, '' if i % 5 == 0 else i % 2, '1' if i % 3 == 0 else '0')
          for i, s in enumerate(SMILES)]
  path = _write(tmp_path / 'assays.csv', ['smiles', 'toxic', 'active'], rows)
  dataset = moleculenet.load_user(DataConfig(path=str(path), label_column='toxic, active'),
                                  molecule=MoleculeConfig(max_length=16))
  assert dataset.task == 'multilabel' and dataset.num_classes == 2
  assert dataset.input_shape == (16,) and dataset.split_info['rule'] == 'random'
  labels = np.concatenate([y for _, y in dataset.splits.values()])
  assert labels.dtype == np.int32 and labels.shape == (24, 2)
  assert (labels[:, 0] == -1).sum() == 5 and set(np.unique(labels[:, 1])) == {0, 1}


def test_multiclass_is_stratified_and_class_names_any_text(tmp_path):
  kinds = ('alkane', 'alcohol', 'other')
  rows = [(s, kinds[0] if 'O' not in s and 'N' not in s and '1' not in s else
           kinds[1] if s.endswith('O') and '1' not in s else kinds[2]) for s in SMILES]
  path = _write(tmp_path / 'kinds.csv', ['smiles', 'kind'], rows)
  dataset = moleculenet.load_user(
      DataConfig(path=str(path), label_column='kind', validation_fraction=0.25,
                 test_fraction=0.25), molecule=MoleculeConfig(features='fingerprint'))
  assert dataset.task == 'multiclass' and dataset.num_classes == 3
  assert dataset.preprocessing['labels']['classes'] == ['alcohol', 'alkane', 'other']
  assert dataset.split_info['rule'] == 'stratified'
  for _, labels in dataset.splits.values():
    assert set(labels) == {0, 1, 2}  # every class in every split


def test_unparsable_smiles_is_named_or_skipped(tmp_path, caplog):
  smiles = list(SMILES)
  smiles[6] = 'C1CC('
  path = _write(tmp_path / 'mols.csv', ['mol', 'y'],
                [(s, i / 10) for i, s in enumerate(smiles)])
  config = DataConfig(path=str(path), smiles_column='mol', label_column='y')
  with pytest.raises(data.DataError) as error:
    moleculenet.load_user(config, molecule=MoleculeConfig(skip_invalid=False))
  assert f"{path}, row 7, column 'mol'" in str(error.value) and "'C1CC('" in str(error.value)
  dataset = moleculenet.load_user(config, molecule=MoleculeConfig(skip_invalid=True))
  assert sum(dataset.sizes.values()) == 23
  assert f"{path}, row 7, column 'mol': dropped" in caplog.text
  labels = np.concatenate([y for _, y in dataset.splits.values()])[:, 0]
  assert not np.isclose(labels, 0.6).any()  # the dropped row's label


def test_missing_columns_name_the_header(tmp_path, solubility):
  config = DataConfig(path=str(solubility), smiles_column='mol', label_column='logs')
  with pytest.raises(data.DataError, match=r"no column 'logs' \(given by --label-column\)") as e:
    moleculenet.load_user(config)
  assert "['mol', 'logS']" in str(e.value) and str(solubility) in str(e.value)
  with pytest.raises(data.DataError, match=r"no column 'smiles' \(given by --smiles-column\)"):
    moleculenet.load_user(dataclasses.replace(config, smiles_column='smiles'))


@pytest.mark.parametrize('cell, match', [('', 'the label is missing'),
                                         ('2', "class '2' is not among the training classes")])
def test_a_bad_label_is_named_with_its_row(tmp_path, cell, match):
  rows = [(s, i % 2, 'train' if i < 18 else 'validation' if i < 21 else 'test')
          for i, s in enumerate(SMILES)]
  rows[22] = (rows[22][0], cell, 'test')
  path = _write(tmp_path / 'bbbp.csv', ['smiles', 'p_np', 'split'], rows)
  with pytest.raises(data.DataError, match=rf"row 23, column 'p_np': {match}"):
    moleculenet.load_user(DataConfig(path=str(path), label_column='p_np', task='binary'))


@pytest.mark.parametrize('features', ['smiles', 'fingerprint'])
def test_featurize_round_trip(tmp_path, features):
  """A file with a split column: featurize gives each row the inputs training gave it, labels
  only when the file has the label column, and drops an unparsable row when told to."""
  part = ['train'] * 16 + ['validation'] * 4 + ['test'] * 4
  rows = [(i, s, i % 2, p) for i, (s, p) in enumerate(zip(SMILES, part))]
  path = _write(tmp_path / 'mols.csv', ['id', 'smiles', 'label', 'split'], rows)
  molecule = MoleculeConfig(features=features, max_length=12, fingerprint_bits=64)
  cfg = TrainConfig(molecule=molecule, data=DataConfig(path=str(path), label_column='label'))
  dataset = user.load(cfg)
  assert dataset.split_info['rule'] == 'column' and dataset.task == 'binary'
  run_dir = tmp_path / 'run'
  if dataset.tokenizer is not None:
    dataset.tokenizer.save(run_dir / 'tokenizer.json')
  preprocessing = json.loads(json.dumps(dataset.preprocessing))
  rows_of = user.featurize(str(path), cfg, preprocessing, str(run_dir))
  part = np.array(part)
  for split, (inputs, labels) in dataset.splits.items():
    np.testing.assert_array_equal(rows_of.inputs[part == split], inputs)
    np.testing.assert_array_equal(rows_of.labels[part == split], labels)
  unlabelled = _write(tmp_path / 'new.csv', ['smiles'], [('CCO',), ('C1CC(',), ('c1ccccc1',)])
  scored = user.featurize(str(unlabelled), cfg, preprocessing, str(run_dir))
  assert scored.labels is None and scored.ids == ['row 1', 'row 3']
  np.testing.assert_array_equal(scored.inputs[1], rows_of.inputs[SMILES.index('c1ccccc1')])
  strict = dataclasses.replace(cfg, molecule=dataclasses.replace(molecule, skip_invalid=False))
  with pytest.raises(data.DataError, match=r"new.csv, row 2, column 'smiles'"):
    user.featurize(str(unlabelled), strict, preprocessing, str(run_dir))
