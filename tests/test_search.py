"""Tests of jmed.search: config paths, spaces, and real grid / random / Bayesian searches
(a tiny MLP on the real METABRIC survival set), including resumption after an interruption, and
the direction of the objective on a regression (ESOL) and a survival (METABRIC) task."""

import csv
import dataclasses
import json
import os

import pytest

from conftest import real_data_dir
from jmed import data as jdata
from jmed import search
from jmed.configs import (SURVIVAL_RECIPES, MoleculeConfig, OptimizerConfig, TrainConfig,
                          load_config)
from jmed.train import loop

SPACE = {'optimizer.learning_rate': ('loguniform', 1e-4, 1e-2),
         'dropout_rate': ('uniform', 0.0, 0.5),
         'model_kwargs.hidden': ('choice', [[8], [8, 8]]),
         'batch_size': ('int', 128, 256)}


@pytest.fixture(scope='module')
def metabric():
  path = real_data_dir()
  if not (path / 'survival').is_dir():
    pytest.skip(f'real data not found at {path}; set JMED_DATA_DIR')
  return jdata.load_dataset('metabric', data_dir=str(path))


@pytest.fixture(scope='module')
def esol():
  path = real_data_dir()
  if not (path / 'moleculenet').is_dir():
    pytest.skip(f'MoleculeNet data not found under {path}; set JMED_DATA_DIR')
  return jdata.load_dataset('esol', data_dir=str(path),
                            molecule=MoleculeConfig(features='fingerprint'))


@pytest.fixture()
def base():
  """DeepSurv-style MLP recipe, shrunk: 2 epochs of 4 steps."""
  return dataclasses.replace(SURVIVAL_RECIPES['metabric'], epochs=2, batch_size=256,
                             model_kwargs={'hidden': [8]}, progress=False,
                             data_dir=str(real_data_dir()))


def _counting_fit(monkeypatch, interrupt_on=None):
  """Replaces search's fit with one that records its configs; call `interrupt_on` (1-based)
  trains fully, then loses its summary.json and raises KeyboardInterrupt (as if stopped after
  its last checkpoint)."""
  calls = []

  def fake_fit(cfg, dataset=None):
    calls.append(cfg)
    summary = loop.fit(cfg, dataset)
    if len(calls) == interrupt_on:
      os.remove(os.path.join(cfg.output_dir, 'summary.json'))
      raise KeyboardInterrupt
    return summary

  monkeypatch.setattr(search, 'fit', fake_fit)
  return calls


# --- Config paths and spaces --------------------------------------------------------------------


def test_override_sets_nested_and_dict_paths():
  cfg = TrainConfig(model_kwargs={'hidden': [32], 'other': 1})
  new = search.override(cfg, {'optimizer.learning_rate': 0.5, 'privacy.l2_clip': 2.0,
                              'model_kwargs.hidden': [64, 64], 'epochs': 3})
  assert new.optimizer.learning_rate == 0.5 and new.privacy.l2_clip == 2.0
  assert new.model_kwargs == {'hidden': [64, 64], 'other': 1} and new.epochs == 3
  assert new.optimizer.name == cfg.optimizer.name
  assert cfg.optimizer.learning_rate == 0.01 and cfg.model_kwargs['hidden'] == [32]  # untouched


@pytest.mark.parametrize('path, message', [
    ('optimizer.lr', 'valid fields of OptimizerConfig: name, learning_rate'),
    ('learning_rate', 'valid fields of TrainConfig: model, dataset'),
    ('epochs.count', "'epochs' is a plain value"),
    ('optimizer', "'optimizer.<field>'"),
])
def test_override_rejects_unknown_paths(path, message):
  with pytest.raises(ValueError, match=f'{path!r}') as e:
    search.override(TrainConfig(), {path: 1})
  assert message in str(e.value)


@pytest.mark.parametrize('space, message', [
    ({'dropout_rate': ('normal', 0, 1)}, 'kind one of'),
    ({'optimizer.learning_rate': ('loguniform', 0.0, 1.0)}, 'low > 0'),
    ({'batch_size': ('int', 8.5, 16)}, 'integer bounds'),
    ({'dropout_rate': ('uniform', 0.5, 0.1)}, 'must be <='),
    ({'dropout_rate': ('choice', [])}, 'non-empty list'),
    ({'optimizer.nope': ('choice', [1])}, 'valid fields of OptimizerConfig'),
    ({'select_metric': ('choice', ['loss'])}, 'one objective'),
])
def test_bad_spaces_are_refused(space, message):
  with pytest.raises(ValueError, match=message):
    search.parse_space(space)


def test_grid_enumerates_the_product():
  space = {'batch_size': ['choice', [16, 32, 64]], 'model_kwargs.hidden': ('choice', [[8], [4, 4]])}
  points = search.grid_points(space)
  assert points == [{'batch_size': b, 'model_kwargs.hidden': h}
                    for b in (16, 32, 64) for h in ([8], [4, 4])]
  with pytest.raises(ValueError, match='dropout_rate'):
    search.grid_points({**space, 'dropout_rate': ('uniform', 0.0, 0.5)})


def test_random_is_reproducible_and_in_range():
  points = [search.random_point(SPACE, 7, i) for i in range(20)]
  assert points == [search.random_point(SPACE, 7, i) for i in range(20)]
  assert points != [search.random_point(SPACE, 8, i) for i in range(20)]
  for p in points:
    assert 1e-4 <= p['optimizer.learning_rate'] <= 1e-2 and 0 <= p['dropout_rate'] <= 0.5
    assert isinstance(p['batch_size'], int) and 128 <= p['batch_size'] <= 256
    assert p['model_kwargs.hidden'] in ([8], [8, 8])
  assert len({p['dropout_rate'] for p in points}) == 20


# --- Real searches ------------------------------------------------------------------------------


def test_grid_search_writes_results_and_best_config(tmp_path, metabric, base):
  # batch_size 4096 exceeds METABRIC's training split: fit raises ValueError, the trial fails.
  space = {'optimizer.learning_rate': ('choice', [1e-4, 3e-2]), 'batch_size': ('choice',
                                                                               [256, 4096])}
  result = search.search(base, space, method='grid', search_dir=str(tmp_path), dataset=metabric,
                         progress=False)
  trials = result['trials']
  assert [t['status'] for t in trials] == ['done', 'failed', 'done', 'failed']
  assert 'exceeds the 1218 training examples' in trials[1]['message']
  assert result['metric'] == 'val_c_index' and result['direction'] == 'maximize'
  done = [t for t in trials if t['status'] == 'done']
  assert result['best'] == max(done, key=lambda t: t['objective'])
  for t in done:  # the objective is the summary's validation metric at the best epoch
    with open(os.path.join(t['output_dir'], 'summary.json')) as f:
      summary = json.load(f)
    assert t['objective'] == summary['best']['value'] and t['test'] == summary['test_c_index']

  with open(tmp_path / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['trial'] for r in rows] == ['0', '1', '2', '3']
  assert {'optimizer.learning_rate', 'batch_size', 'val_c_index', 'test_c_index', 'status',
          'seconds'} <= set(rows[0])
  assert float(rows[2]['val_c_index']) == pytest.approx(trials[2]['objective'], rel=1e-5)
  assert f"| {result['best']['number']} * |" in (tmp_path / 'results.md').read_text()
  best_cfg = load_config(tmp_path / 'best_config.json')
  assert best_cfg == dataclasses.replace(search.override(base, result['best']['params']),
                                         output_dir=result['best']['output_dir'])
  assert json.loads((tmp_path / 'best.json').read_text())['number'] == result['best']['number']
  assert json.loads((tmp_path / 'search.json').read_text())['method'] == 'grid'


def test_minimized_metric_picks_the_lowest(tmp_path, metabric, base):
  base = dataclasses.replace(base, select_metric='loss')
  space = {'optimizer.learning_rate': ('choice', [1e-4, 3e-2])}
  result = search.search(base, space, method='grid', search_dir=str(tmp_path), dataset=metabric,
                         progress=False)
  assert result['direction'] == 'minimize' and result['metric'] == 'val_loss'
  values = [t['objective'] for t in result['trials']]
  assert values[0] != values[1] and result['best']['objective'] == min(values)


@pytest.mark.parametrize('name, metric, direction', [('esol', 'val_rmse', 'minimize'),
                                                     ('metabric', 'val_c_index', 'maximize')])
def test_auto_objective_follows_the_task(tmp_path, request, name, metric, direction):
  """select_metric 'auto': the task picks the metric and whether lower is better (RMSE is
  minimised on regression, the C-index maximised on survival); the best trial is the lowest or
  the highest accordingly."""
  dataset = request.getfixturevalue(name)
  assert dataset.task == ('regression' if name == 'esol' else 'survival')
  base = TrainConfig(model='mlp', dataset=name, epochs=1, batch_size=128, eval_batch_size=128,
                     model_kwargs={'hidden': [8]}, optimizer=OptimizerConfig(name='adam'),
                     molecule=MoleculeConfig(features='fingerprint'), progress=False)
  assert base.select_metric == 'auto'
  space = {'optimizer.learning_rate': ('loguniform', 1e-4, 3e-2)}
  result = search.search(base, space, method='random', trials=2, search_dir=str(tmp_path),
                         dataset=dataset, progress=False)
  assert result['direction'] == direction and result['metric'] == metric
  trials = result['trials']
  assert [t['status'] for t in trials] == ['done', 'done']
  values = [t['objective'] for t in trials]
  assert values[0] != values[1]
  assert result['best']['objective'] == (min(values) if direction == 'minimize' else max(values))
  assert search.objective_direction(base, dataset.task) == direction


@pytest.mark.parametrize('method', ['random', 'bayes'])
def test_interrupted_search_resumes(tmp_path, metabric, base, monkeypatch, method):
  space = {'optimizer.learning_rate': ('loguniform', 1e-4, 3e-2),
           'dropout_rate': ('uniform', 0.0, 0.5)}
  kwargs = dict(method=method, trials=4, search_dir=str(tmp_path), seed=3, dataset=metabric,
                startup_trials=2, progress=False)
  calls = _counting_fit(monkeypatch, interrupt_on=3)
  with pytest.raises(KeyboardInterrupt):
    search.search(base, space, **kwargs)
  assert len(calls) == 3
  assert (tmp_path / 'trial_002' / 'checkpoints').is_dir()
  assert not (tmp_path / 'trial_002' / 'summary.json').exists()
  assert '| running |' in (tmp_path / 'results.md').read_text()  # written on the way out

  calls = _counting_fit(monkeypatch)
  result = search.search(base, space, **kwargs)
  # Trials 0 and 1 were not re-run; 2 continued from its checkpoint; 3 is new.
  assert [c.output_dir for c in calls] == [str(tmp_path / 'trial_002'),
                                           str(tmp_path / 'trial_003')]
  assert [c.resume for c in calls] == [True, False]
  trials = result['trials']
  assert [t['status'] for t in trials] == ['done'] * 4
  with open(tmp_path / 'results.csv') as f:
    assert [r['status'] for r in csv.DictReader(f)] == ['done'] * 4
  for i, t in enumerate(trials):  # what an uninterrupted search would have proposed
    if method == 'random':
      expected = search.random_point(space, 3, i)
    else:  # a fresh study with the finished trials replayed
      expected = search.bayes_point(space, 3, i, trials[:i], 'maximize', startup_trials=2)
    assert t['params'] == pytest.approx(expected)
  assert len({t['params']['dropout_rate'] for t in trials}) == 4

  calls = _counting_fit(monkeypatch)
  again = search.search(base, space, **kwargs)  # all finished: nothing runs
  assert calls == [] and again['best'] == result['best']
  with pytest.raises(ValueError, match='another search'):
    search.search(base, {**space, 'dropout_rate': ('uniform', 0.0, 0.1)}, **kwargs)
  with pytest.raises(ValueError, match='another search'):
    search.search(base, space, **{**kwargs, 'method': 'random' if method == 'bayes' else 'bayes'})


def test_bayes_start_up_trials_spread_out():
  # Nearby integer seeds would make optuna's random start-up draws nearly equal.
  points = [search.bayes_point(SPACE, 0, i, [], 'maximize') for i in range(8)]
  assert points == [search.bayes_point(SPACE, 0, i, [], 'maximize') for i in range(8)]
  dropout = sorted(p['dropout_rate'] for p in points)
  assert min(b - a for a, b in zip(dropout, dropout[1:])) > 1e-3
  assert dropout[-1] - dropout[0] > 0.25


def test_search_refuses_what_it_cannot_score(tmp_path, metabric, base):
  space = {'dropout_rate': ('choice', [0.0])}
  no_val = dataclasses.replace(metabric, splits={k: v for k, v in metabric.splits.items()
                                                  if k != 'validation'})
  with pytest.raises(ValueError, match='validation split'):
    search.search(base, space, method='grid', search_dir=str(tmp_path), dataset=no_val)
  with pytest.raises(ValueError, match='each trial loads its own dataset'):
    search.search(base, {'text.max_length': ('choice', [8])}, method='grid',
                  search_dir=str(tmp_path), dataset=metabric)
  with pytest.raises(ValueError, match='needs a number of trials'):
    search.search(base, space, method='random', search_dir=str(tmp_path), dataset=metabric)
  assert not os.listdir(tmp_path)  # refused before writing anything
