"""scripts/train.py: enumerated flags checked by argparse before any data loads; a user's
mistake is one line `error: ...` and exit 1 (--debug: the traceback); a bug keeps its
traceback."""

import importlib.util

import pytest

from conftest import REPO
from jmed import configs, optim
from jmed.errors import MissingDataError
from jmed.train import loop


@pytest.fixture(scope='module')
def script():
  spec = importlib.util.spec_from_file_location('train_script', REPO / 'scripts' / 'train.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def no_training(monkeypatch):
  """Fails the test if anything gets as far as loading data or training."""
  def refuse(*args, **kwargs):
    raise AssertionError('reached fit / load_dataset')
  monkeypatch.setattr(loop, 'fit', refuse)
  monkeypatch.setattr(loop, 'load_dataset', refuse)


@pytest.mark.parametrize('flags', [
    ['--dtype', 'float8'], ['--model', 'vgg'], ['--dataset', 'cifar10'], ['--augment', 'flips'],
    ['--optimizer', 'adagrad'], ['--schedule', 'linear'], ['--class-weights', 'inverse'],
    ['--select-metric', 'kappa'], ['--tokenizer', 'bpe'], ['--molecule-features', 'coulomb'],
    ['--molecule-split', 'time'], ['--dp-accountant', 'moments'], ['--source', 'xlsx'],
    ['--task', 'ranking'], ['--split', 'temporal'], ['--missing', 'drop'], ['--channels', '2']])
def test_enumerated_flags_are_refused_before_any_data(script, no_training, tmp_path, capsys,
                                                      flags):
  out = tmp_path / 'run'
  with pytest.raises(SystemExit) as exit_:
    script.main([*flags, '--output-dir', str(out)])
  assert exit_.value.code == 2
  assert f'argument {flags[0]}: invalid choice' in capsys.readouterr().err
  assert not out.exists()


def test_choices_come_from_the_library(script):
  assert script.CHOICES['optimizer'] == tuple(optim.OPTIMIZERS)
  assert script.CHOICES['data_split'] == configs.SPLIT_RULES
  assert {'auto', 'auroc', 'c_index', 'rmse', 'dice', 'loss'} <= set(
      script.CHOICES['select_metric'])
  assert 'float8' not in script.CHOICES['dtype']


def test_data_flags_fill_the_data_config(script):
  cfg, _, debug = script.parse_args([
      '--data', 'patients.csv', '--label-column', 'outcome', '--ignore-columns', 'id, name',
      '--split', 'group', '--group-column', 'patient', '--split-seed', '3',
      '--validation-fraction', '0.2', '--missing', 'refuse', '--channels', '3', '--debug'])
  assert (cfg.data.path, cfg.data.label_column, cfg.data.ignore_columns) == (
      'patients.csv', 'outcome', 'id, name')
  assert (cfg.data.split, cfg.data.group_column, cfg.data.split_seed) == ('group', 'patient', 3)
  assert (cfg.data.validation_fraction, cfg.data.missing, cfg.data.channels) == (0.2, 'refuse', 3)
  assert debug and cfg.molecule.split_seed == 0  # --split-seed is the data's, not MoleculeNet's


def _missing_data_flags(tmp_path, own_file=False):
  """Flags of a run whose data file is missing: a built-in dataset's or the user's own."""
  out = tmp_path / 'run'
  data = (['--data', str(tmp_path / 'patients.csv'), '--label-column', 'outcome'] if own_file
          else ['--dataset', 'metabric', '--data-dir', str(tmp_path / 'none')])
  return out, ['--model', 'mlp', *data, '--output-dir', str(out), '--no-progress']


@pytest.mark.parametrize('own_file', [False, True])
def test_a_missing_data_file_is_one_line_and_exit_1(script, tmp_path, capsys, own_file):
  out, flags = _missing_data_flags(tmp_path, own_file)
  assert script.main(flags) == 1
  err = capsys.readouterr().err
  errors = [line for line in err.splitlines() if line.startswith('error: ')]
  name = 'patients.csv' if own_file else 'metabric'
  assert len(errors) == 1 and name in errors[0] and 'not found' in errors[0]
  assert 'Traceback' not in err
  assert not out.exists()


def test_debug_shows_the_traceback(script, tmp_path):
  _, flags = _missing_data_flags(tmp_path)
  with pytest.raises(MissingDataError):
    script.main([*flags, '--debug'])


def test_a_bug_is_not_caught(script, monkeypatch, tmp_path):
  def bug(cfg):
    raise TypeError('a bug')
  monkeypatch.setattr(loop, 'fit', bug)
  with pytest.raises(TypeError, match='a bug'):
    script.main(['--output-dir', str(tmp_path / 'run')])
  monkeypatch.setattr(loop, 'fit', lambda cfg: (_ for _ in ()).throw(ValueError('plain')))
  with pytest.raises(ValueError, match='plain'):
    script.main(['--output-dir', str(tmp_path / 'run')])


def test_prints_the_table_and_the_summary_path(script, monkeypatch, tmp_path, capsys):
  summary = {'model': 'mlp', 'dataset': 'metabric', 'task': 'survival', 'steps': 4,
             'best': None, 'test_c_index': 0.6, 'last_test_c_index': 0.6}
  monkeypatch.setattr(loop, 'fit', lambda cfg: summary)
  assert script.main(['--output-dir', str(tmp_path / 'run')]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == 'mlp on metabric (survival): 4 steps' and '{' not in ''.join(lines)
  assert lines[-1] == f'summary: {tmp_path / "run" / "summary.json"}'
