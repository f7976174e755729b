"""Tests of the SIDER and ClinTox presets of jmed.data.moleculenet on the real MoleculeNet CSVs
(issue 16), of quoted column names and canonical SMILES, and of compare_molecules' tables and
random forest on them (no network training here)."""

import collections
import csv
import importlib.util
import os
import sys

import numpy as np
import pytest

from conftest import real_data_dir
from jmed import data
from jmed.configs import MOLECULE_RECIPES, DataConfig, MoleculeConfig
from jmed.data import datasets as jdatasets
from jmed.data import files, moleculenet
from jmed.text import smiles as jsmiles

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'scripts'))
import compare_molecules  # noqa: E402  (scripts/compare_molecules.py)

FOLDER = real_data_dir() / 'moleculenet'
HAS_RDKIT = importlib.util.find_spec('rdkit') is not None
# name -> (file, labels, rows, split sizes 80/10/10, max_length fitting the longest SMILES)
PRESETS = {'sider': ('sider.csv', 27, 1427, (1141, 143, 143), 916),
           'clintox': ('clintox.csv', 2, 1478, (1182, 148, 148), 248)}

needs_rdkit = pytest.mark.skipif(not HAS_RDKIT, reason='RDKit not installed.')


def _needs(*names):
  missing = [n for n in names if not (FOLDER / n).is_file()]
  return pytest.mark.skipif(not HAS_RDKIT or bool(missing),
                            reason=f'RDKit or {missing} under {FOLDER} missing.')


def _read_csv(path):
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def test_quoted_column_names_round_trip():
  names = ['FDA_APPROVED', 'Congenital, familial and genetic disorders', 'say "hi"']
  spec = files.join_columns(names)
  assert files.columns_of(spec) == names
  assert files.columns_of('a, b') == ['a', 'b'] and files.columns_of('') == []
  assert files.columns_of('a, "b, c" , d') == ['a', 'b, c', 'd']


@_needs('sider.csv', 'clintox.csv')
def test_presets_name_every_label_column_of_the_files():
  for name, (filename, labels, *_) in PRESETS.items():
    preset = moleculenet.PRESETS[name]
    header, _ = _read_csv(FOLDER / filename)
    assert preset.label_columns == tuple(header[1:]) and len(header) == labels + 1
    assert (preset.task, preset.split, preset.smiles_column) == ('multilabel', 'random', 'smiles')
    assert preset.url.endswith(f'{filename}.gz') and filename in preset.filenames
    assert name in jdatasets.MOLECULENET_NAMES and name in jdatasets.NAMES
    assert set(MOLECULE_RECIPES[name]) >= {'transformer', 'gru', 'text_cnn'}
    assert compare_molecules.MOLECULENET_PAPER[name]
  assert moleculenet.PRESETS['sider'].label_columns == moleculenet.SIDER_TASKS
  assert moleculenet.PRESETS['clintox'].label_columns == ('FDA_APPROVED', 'CT_TOX')


@_needs('sider.csv', 'clintox.csv')
@pytest.mark.parametrize('name', sorted(PRESETS))
def test_real_file_loads_every_molecule_with_its_labels_once(name):
  """Token ids decode back to the file's SMILES (tokens unseen in training as [UNK]): each row
  lands in exactly one split, with its own labels (no cell is empty in these files, so no label
  is -1)."""
  filename, labels, rows, sizes, max_length = PRESETS[name]
  header, table = _read_csv(FOLDER / filename)
  assert len(table) == rows and all(v in ('0', '1') for row in table for v in row[1:])
  dataset = data.load_dataset(name, data_dir=real_data_dir(),
                              molecule=MoleculeConfig(max_length=max_length))
  known = dataset.tokenizer.ids
  unused = collections.Counter(  # (SMILES as decoded, labels) of each file row not yet seen
      (''.join(t if t in known else '[UNK]' for t in jsmiles.tokenize(row[0])), tuple(row[1:]))
      for row in table)
  assert dataset.task == 'multilabel' and dataset.num_classes == labels
  assert tuple(dataset.sizes.values()) == sizes and dataset.split_info['rule'] == 'random'
  assert dataset.preprocessing['labels']['columns'] == header[1:]
  for split, (ids, y) in dataset.splits.items():
    assert ids.dtype == np.int32 and ids.shape == (len(y), max_length)
    assert y.dtype == np.int32 and y.shape == (len(y), labels)
    assert (ids[:, -1] == jsmiles.PAD_ID).all()  # nothing truncated
    for s, row in zip(jsmiles.decode(dataset.tokenizer, ids), y):
      key = (s, tuple(str(v) for v in row))
      assert unused[key] > 0, f'{split}: {key} is no file row, or a second copy of one'
      unused[key] -= 1
  assert not +unused  # every row once


@needs_rdkit
def test_empty_cells_are_missing_and_a_bad_label_or_smiles_is_named(tmp_path, caplog):
  """A ClinTox-shaped file: -1 exactly where a cell is empty; a bad label or SMILES raises
  naming the file, row and column; skip_invalid drops and logs the unparsable row."""
  smiles = ['C' * k + 'O' for k in range(1, 21)] + ['c1ccccc1' + 'C' * k for k in range(20)]
  rows = [[s, str(i % 2), str((i // 2) % 2)] for i, s in enumerate(smiles)]
  rows[3][2], rows[10][1] = '', ''

  def write(rows):
    with open(tmp_path / 'clintox.csv', 'w', newline='') as f:
      csv.writer(f).writerows([['smiles', 'FDA_APPROVED', 'CT_TOX']] + rows)

  write(rows)
  dataset = moleculenet.load('clintox', tmp_path, max_length=16)
  assert dataset.sizes == {'train': 32, 'validation': 4, 'test': 4}
  y = np.concatenate([labels for _, labels in dataset.splits.values()])
  assert (y == -1).sum() == 2 and set(np.unique(y)) == {-1, 0, 1}
  write(rows[:6] + [[rows[6][0], '1', 'yes']] + rows[7:])
  with pytest.raises(data.DataError, match=r"clintox.csv, row 7, column 'CT_TOX'.*'yes'"):
    moleculenet.load('clintox', tmp_path, max_length=16)
  write(rows[:4] + [['C1CC(', '1', '0']] + rows[5:])
  with pytest.raises(data.DataError, match=r"clintox.csv, row 5, column 'smiles'.*C1CC\("):
    moleculenet.load('clintox', tmp_path, max_length=16)
  dataset = moleculenet.load('clintox', tmp_path, max_length=16, skip_invalid=True)
  assert sum(dataset.sizes.values()) == 39 and 'dropped 1 rows' in caplog.text


@needs_rdkit
def test_canonical_smiles_give_one_spelling_per_molecule(tmp_path):
  path = tmp_path / 'mols.csv'
  spellings = ['C1=CC=CC=C1', 'c1ccccc1', 'OCC', 'CCO'] * 5
  with open(path, 'w', newline='') as f:
    csv.writer(f).writerows([['smiles', 'y']] + [[s, i % 2] for i, s in enumerate(spellings)])
  config = DataConfig(path=str(path), source='smiles', label_column='y', split='random')
  ids = {}
  for canonical in (False, True):
    dataset = moleculenet.load_user(config, molecule=MoleculeConfig(
        max_length=10, canonical=canonical))
    assert dataset.preprocessing.get('canonical', False) == canonical
    every = np.concatenate([x for x, _ in dataset.splits.values()])
    ids[canonical] = {tuple(row) for row in every}
  assert len(ids[False]) == 4 and len(ids[True]) == 2


def test_per_task_tables_are_per_dataset():
  rows = [{'dataset': 'sider', 'model': 'a', 'metric': 'auroc', 'split': 'random',
           'test': [0.6], 'val': [0.6],
           'test_per_task': {t: [0.5] for t in moleculenet.SIDER_TASKS}},
          {'dataset': 'clintox', 'model': 'b', 'metric': 'auroc', 'split': 'random',
           'test': [0.9], 'val': [], 'test_per_task': {'FDA_APPROVED': [None],
                                                        'CT_TOX': [0.8]}}]
  table = compare_molecules.format_molecule_rows(rows)
  assert '| model | FDA_APPROVED | CT_TOX |' in table
  assert '| clintox: b | n/a | 0.800' in table
  assert table.count('\n| model | ') == 2  # a per-task table for each dataset


@_needs('clintox.csv')
def test_random_forest_scores_both_clintox_tasks():
  fps = data.load_dataset('clintox', data_dir=real_data_dir(), molecule=MoleculeConfig(
      features='fingerprint', fingerprint_bits=256))
  result = compare_molecules.molecule_random_forest(fps, min_samples_leaf=(1,),
                                                    n_estimators=20, n_jobs=1)
  assert len(result['test']['auroc_per_label']) == 2
  assert 0.5 < result['test']['auroc'] <= 1 and 0.5 < result['val']['auroc'] <= 1
