"""Tests of jmed.survival (Cox, Harrell's C, logistic hazard), the 'survival' task kind and
DeepSurv's loader (jmed.data.deepsurv)."""

import math
import os
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jmed import models
from jmed import survival
from jmed import tasks
from jmed.data import DataError, MissingDataError
from jmed.data import deepsurv

DATA_DIR = Path(os.environ.get('JMED_DATA_DIR') or
                Path(__file__).resolve().parents[1].parent / 'shared' / 'data')
needs_data = pytest.mark.skipif(
    not (DATA_DIR / 'survival').is_dir(),
    reason=f'{DATA_DIR / "survival"} not found (set JMED_DATA_DIR to the shared '
    'data root).')


@pytest.fixture(scope='module')
def metabric():
  return deepsurv.load('metabric', DATA_DIR)


def _random_survival(seed, n, tied=True):
  rng = np.random.default_rng(seed)
  if tied:
    time = rng.integers(1, 10, n).astype(np.float64)  # Many ties.
  else:
    time = rng.permutation(n).astype(np.float64) + 1.0
  event = rng.integers(0, 2, n)
  risk = rng.normal(size=n)
  return risk, time, event


def _loop_cox_loss(risk, time, event):
  """Independent float64 Breslow negative log partial likelihood / events."""
  total, events = 0.0, 0
  for i in range(len(risk)):
    if event[i]:
      denominator = sum(math.exp(risk[j]) for j in range(len(risk))
                        if time[j] >= time[i])
      total += math.log(denominator) - risk[i]
      events += 1
  return total / max(events, 1)


def _loop_concordance(time, risk, event):
  """Brute-force Harrell's C with lifelines' comparability and tie rules."""
  correct = ties = pairs = 0
  for i in range(len(time)):
    if not event[i]:
      continue
    for j in range(len(time)):
      if time[i] < time[j] or (time[i] == time[j] and not event[j]):
        pairs += 1
        correct += risk[i] > risk[j]
        ties += risk[i] == risk[j]
  return (correct + ties / 2) / pairs


# --- Cox loss ---------------------------------------------------------------


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_cox_loss_matches_loop_with_tied_times(seed):
  risk, time, event = _random_survival(seed, 40, tied=True)
  assert len(np.unique(time)) < 40 and event.sum() > 0
  expected = _loop_cox_loss(risk, time, event)
  loss = jax.jit(survival.cox_loss)(risk.astype(np.float32), time, event)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
  np.testing.assert_allclose(survival.breslow_nll_numpy(risk, time, event),
                             expected, rtol=1e-12)
  terms = survival.cox_terms(risk.astype(np.float32), time, event)
  assert terms.shape == (40,)
  np.testing.assert_array_equal(np.asarray(terms)[event == 0], 0.0)


def test_cox_loss_matches_lifelines_partial_likelihood_without_ties():
  lifelines = pytest.importorskip('lifelines')
  import pandas as pd  # lifelines depends on pandas.
  rng = np.random.default_rng(0)
  n, beta = 300, np.array([0.8, -0.5, 0.3])
  x = rng.normal(size=(n, 3))
  time = rng.exponential(np.exp(-x @ beta))
  censor = rng.exponential(2.0, n)
  event = (time <= censor).astype(int)
  time = np.minimum(time, censor)
  assert len(np.unique(time)) == n  # No ties: Breslow = Efron = exact.
  frame = pd.DataFrame(x, columns=['a', 'b', 'c']).assign(T=time, E=event)
  fitter = lifelines.CoxPHFitter(baseline_estimation_method='breslow')
  fitter.fit(frame, duration_col='T', event_col='E')
  fitted = fitter.params_[['a', 'b', 'c']].to_numpy()
  expected = -fitter.log_likelihood_ / event.sum()
  risk = x @ fitted
  np.testing.assert_allclose(survival.breslow_nll_numpy(risk, time, event),
                             expected, rtol=1e-8)
  np.testing.assert_allclose(float(survival.cox_loss(risk, time, event)),
                             expected, rtol=1e-4)
  # The fitted coefficients are a stationary point of our loss too.
  grad = jax.grad(lambda b: survival.cox_loss(
      jnp.asarray(x, jnp.float32) @ b, time, event))(jnp.asarray(fitted,
                                                                 jnp.float32))
  np.testing.assert_allclose(np.asarray(grad), 0.0, atol=1e-4)


def test_cox_mask_padding_changes_nothing_and_gets_zero_gradient():
  risk, time, event = _random_survival(3, 30)
  pad = 10
  rng = np.random.default_rng(4)
  padded_risk = np.concatenate([risk, rng.normal(size=pad) * 50]).astype(
      np.float32)
  padded_time = np.concatenate([time, rng.integers(0, 12, pad)]).astype(
      np.float32)
  padded_event = np.concatenate([event, np.ones(pad, int)])  # Padded "events".
  mask = np.concatenate([np.ones(30), np.zeros(pad)])
  loss = jax.jit(survival.cox_loss)(padded_risk, padded_time, padded_event,
                                    mask)
  np.testing.assert_allclose(float(loss),
                             float(survival.cox_loss(risk, time, event)),
                             rtol=1e-5)
  terms = survival.cox_terms(padded_risk, padded_time, padded_event, mask)
  np.testing.assert_array_equal(np.asarray(terms)[30:], 0.0)
  grad = jax.grad(survival.cox_loss)(jnp.asarray(padded_risk), padded_time,
                                     padded_event, mask)
  assert np.isfinite(np.asarray(grad)).all()
  np.testing.assert_array_equal(np.asarray(grad)[30:], 0.0)
  unpadded = jax.grad(survival.cox_loss)(jnp.asarray(risk, jnp.float32), time,
                                         event)
  np.testing.assert_allclose(np.asarray(grad)[:30], np.asarray(unpadded),
                             rtol=1e-5, atol=1e-7)


def test_cox_loss_without_events_and_with_extreme_risks():
  risk, time, _ = _random_survival(5, 12)
  no_event = np.zeros(12, int)
  mask = np.r_[np.ones(8), np.zeros(4)]
  for m in (None, mask, np.zeros(12)):
    loss, grad = jax.value_and_grad(survival.cox_loss)(
        jnp.asarray(risk, jnp.float32), time, no_event, m)
    assert float(loss) == 0.0
    assert np.isfinite(np.asarray(grad)).all() and not np.asarray(grad).any()
  # Large log-hazards neither overflow nor give NaN gradients.
  big = np.array([1000.0, -1000.0, 500.0, 80.0], np.float32)
  time4, event4 = np.array([1.0, 2.0, 3.0, 3.0]), np.array([1, 1, 1, 0])
  loss, grad = jax.value_and_grad(survival.cox_loss)(jnp.asarray(big), time4,
                                                     event4)
  expected = survival.breslow_nll_numpy(big, time4, event4)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert np.isfinite(np.asarray(grad)).all()


def test_cox_input_validation():
  with pytest.raises(ValueError, match='batch'):
    survival.cox_loss(np.zeros(3), np.zeros(4), np.zeros(3))
  with pytest.raises(ValueError, match='shapes'):
    survival.breslow_nll_numpy(np.zeros(3), np.zeros(4), np.zeros(3))
  with pytest.raises(ValueError, match='NaN'):
    survival.breslow_nll_numpy(np.array([0.0, np.nan]), np.ones(2), np.ones(2))


def _loop_later_wins(risk, time, event):
  """Per example: for an event, the share of the later examples it outranks (ties 0.5);
  0.5 for a censored example or one with no later example."""
  wins = []
  for i in range(len(risk)):
    later = [j for j in range(len(risk)) if time[i] < time[j]]
    if not event[i] or not later:
      wins.append(0.5)
      continue
    wins.append(np.mean([1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
                         for j in later]))
  return wins


@pytest.mark.parametrize('seed', [0, 1])
def test_survival_task_loss_and_train_concordance(seed):
  """The training objective of a survival run: `tasks.get('survival').loss` gives per-example
  terms [batch] whose mean over the batch is the Cox loss per event, padding included."""
  task = tasks.get('survival')
  risk, time, event = _random_survival(seed, 40, tied=True)
  risk = np.round(risk, 1)  # ties in risk too
  labels = np.stack([time, event], 1).astype(np.float32)
  outputs = jnp.asarray(risk, jnp.float32)[:, None]  # [batch, 1] log-risk
  losses = jax.jit(task.loss)(outputs, labels)
  assert losses.shape == (40,)
  np.testing.assert_allclose(float(losses.mean()), _loop_cox_loss(risk, time, event), rtol=1e-4)
  valid = (np.arange(40) < 30).astype(np.float32)  # the last 10 rows are padding
  padded = task.loss(outputs, labels, jnp.asarray(valid))
  np.testing.assert_array_equal(np.asarray(padded)[30:], 0.0)
  np.testing.assert_allclose(float((padded * valid).sum() / valid.sum()),
                             _loop_cox_loss(risk[:30], time[:30], event[:30]), rtol=1e-4)
  concordance = task.train_metrics(outputs, labels)['concordance']
  np.testing.assert_allclose(np.asarray(concordance), _loop_later_wins(risk, time, event),
                             rtol=1e-6)
  # A perfect score (risk falls with time) wins every comparable pair.
  perfect = task.train_metrics(jnp.asarray(-time, jnp.float32)[:, None], labels)['concordance']
  has_later = np.array([(time > t).any() for t in time])
  np.testing.assert_array_equal(np.asarray(perfect)[(event == 1) & has_later], 1.0)


# --- Concordance ------------------------------------------------------------


@pytest.mark.parametrize('seed', range(4))
def test_concordance_matches_lifelines_with_ties(seed):
  lifelines_utils = pytest.importorskip('lifelines.utils')
  rng = np.random.default_rng(seed)
  n = 200
  time = rng.integers(1, 15, n).astype(np.float64)  # Ties in time.
  event = rng.integers(0, 2, n)
  risk = rng.integers(0, 6, n).astype(np.float32)  # Ties in risk.
  expected = lifelines_utils.concordance_index(time, -risk, event)
  c = survival.concordance_index(time, risk, event)
  assert c == pytest.approx(expected, abs=1e-12)
  assert c == pytest.approx(_loop_concordance(time, risk, event), abs=1e-12)


def test_concordance_small_cases_and_large_n():
  lifelines_utils = pytest.importorskip('lifelines.utils')
  # Tied times: event vs censored counts (concordant when the event has the
  # higher risk); event vs event at the same time does not.
  time, event = np.array([1.0, 1.0, 1.0, 2.0]), np.array([1, 0, 1, 0])
  risk = np.array([3.0, 1.0, 0.0, 2.0])
  # Pairs: (0,1) ok, (0,3) ok, (2,1) wrong, (2,3) wrong.
  assert survival.concordance_index(time, risk, event) == 0.5
  assert lifelines_utils.concordance_index(time, -risk, event) == 0.5
  assert survival.concordance_index([1, 2, 3], [3, 2, 1], [1, 1, 1]) == 1.0
  assert survival.concordance_index([1, 2, 3], [1, 1, 1], [1, 1, 0]) == 0.5
  rng = np.random.default_rng(7)
  n = 10_000
  time = np.round(rng.exponential(size=n), 2)
  event = rng.integers(0, 2, n)
  risk = np.round(-time + rng.normal(size=n), 1)
  c = survival.concordance_index(time, risk, event)
  assert c == pytest.approx(lifelines_utils.concordance_index(time, -risk,
                                                              event), abs=1e-12)
  assert c > 0.7


def test_concordance_errors():
  with pytest.raises(ValueError, match='shape'):
    survival.concordance_index(np.ones(3), np.ones(4), np.ones(3))
  with pytest.raises(ValueError, match='NaN'):
    survival.concordance_index(np.ones(3), np.array([0.0, np.nan, 1.0]),
                               np.ones(3))
  with pytest.raises(ValueError, match='no comparable pairs'):
    survival.concordance_index(np.arange(3.0), np.arange(3.0), np.zeros(3))
  with pytest.raises(ValueError, match='no comparable pairs'):
    survival.concordance_index(np.ones(3), np.arange(3.0), np.ones(3))


@needs_data
def test_concordance_matches_lifelines_on_metabric(metabric):
  lifelines_utils = pytest.importorskip('lifelines.utils')
  x, y = metabric['test']
  risk = x @ np.linspace(-1.0, 1.0, x.shape[1]).astype(np.float32)
  c = survival.concordance_index(y[:, 0], risk, y[:, 1])
  assert c == pytest.approx(
      lifelines_utils.concordance_index(y[:, 0], -risk, y[:, 1]), abs=1e-12)
  metrics = survival.survival_metrics(risk, y[:, 0], y[:, 1])
  assert metrics['c_index'] == c and metrics['events'] == int(y[:, 1].sum())
  assert metrics['loss'] == survival.breslow_nll_numpy(risk, y[:, 0], y[:, 1])


@needs_data
def test_linear_cox_model_learns_metabric(metabric):
  x, y = (jnp.asarray(a) for a in metabric['train'])
  params = {'w': jnp.zeros(x.shape[1]), 'b': jnp.zeros(())}
  optimizer = optax.adam(0.01)

  def loss_fn(p):
    return survival.cox_loss(x @ p['w'] + p['b'], y[:, 0], y[:, 1])

  @jax.jit
  def train(p):
    def step(carry, _):
      p, state = carry
      loss, grads = jax.value_and_grad(loss_fn)(p)
      updates, state = optimizer.update(grads, state, p)
      return (optax.apply_updates(p, updates), state), loss
    (p, _), losses = jax.lax.scan(step, (p, optimizer.init(p)), None,
                                  length=300)
    return p, losses

  params, losses = train(params)
  assert float(losses[-1]) < float(losses[0]) - 0.05
  x_test, y_test = metabric['test']
  risk = np.asarray(x_test @ np.asarray(params['w']))
  c = survival.concordance_index(y_test[:, 0], risk, y_test[:, 1])
  assert c > 0.60, c  # DeepSurv reports 0.63 for linear CPH on METABRIC.


# --- Discrete time ----------------------------------------------------------


def test_discrete_time_nll_hand_computed():
  logits = np.tile(np.array([0.0, math.log(3.0), -1.0], np.float32), (4, 1))
  # Hazards 0.5, 0.75, sigmoid(-1).
  interval = np.array([1, 1, 0, 2])
  event = np.array([1, 0, 1, 0])
  nll = jax.jit(survival.discrete_time_nll)(logits, interval, event)
  expected = [math.log(2) - math.log(0.75),  # survive 0, event in 1
              math.log(2) + math.log(4),  # survive 0 and 1
              math.log(2),  # event in 0
              math.log(2) + math.log(4) + math.log1p(math.exp(-1))]
  np.testing.assert_allclose(np.asarray(nll), expected, rtol=1e-6)
  masked = survival.discrete_time_nll(logits, interval, event,
                                      np.array([1, 0, 1, 0]))
  np.testing.assert_allclose(np.asarray(masked), [expected[0], 0,
                                                  expected[2], 0], rtol=1e-6)


def test_survival_curve_and_discrete_risk():
  logits = jax.random.normal(jax.random.PRNGKey(0), (16, 7)) * 4
  curve = np.asarray(survival.survival_curve(logits))
  assert curve.shape == (16, 7)
  assert ((curve >= 0) & (curve <= 1)).all()
  assert (np.diff(curve, axis=1) <= 0).all()
  hazard = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
  np.testing.assert_allclose(curve, np.cumprod(1 - hazard, axis=1), rtol=1e-5,
                             atol=1e-7)
  risk = survival.discrete_risk(logits)
  np.testing.assert_allclose(np.asarray(risk), -curve.sum(1), rtol=1e-6)
  # Uniformly higher hazards mean a higher risk.
  assert float(survival.discrete_risk(jnp.ones((1, 7)))[0]) > float(
      survival.discrete_risk(-jnp.ones((1, 7)))[0])


def test_make_cuts_and_interval_index():
  time = np.arange(1.0, 101.0)
  cuts = survival.make_cuts(time, 4)
  assert cuts.dtype == np.float32 and cuts.shape == (5,)
  np.testing.assert_allclose(cuts, [0.0, 25.75, 50.5, 75.25, 100.0])
  index = survival.interval_index(
      np.array([0.0, 0.5, 25.75, 25.8, 100.0, 1e6, -1.0]), cuts)
  assert index.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(index), [0, 0, 0, 1, 3, 3, 0])
  all_index = np.asarray(survival.interval_index(time, cuts))
  assert all_index.min() == 0 and all_index.max() == 3
  assert (np.bincount(all_index) == 25).all()
  with pytest.raises(ValueError, match='fewer'):
    survival.make_cuts(np.r_[np.ones(50), np.arange(2.0, 12.0)], 10)
  with pytest.raises(ValueError, match='num_intervals'):
    survival.make_cuts(time, 0)


def test_discrete_time_head_trains_on_synthetic_data():
  rng = np.random.default_rng(0)
  n = 400
  x = rng.normal(size=(n, 2)).astype(np.float32)
  time = rng.exponential(np.exp(-1.5 * x[:, 0]))
  censor = rng.exponential(3.0, n)
  event = (time <= censor).astype(np.int32)
  time = np.minimum(time, censor)
  cuts = survival.make_cuts(time, 8)
  interval = survival.interval_index(time, cuts)
  head = models.DiscreteTimeHead(num_intervals=8)
  params = head.init(jax.random.PRNGKey(0), x)
  logits = head.apply(params, x.astype(jnp.bfloat16))
  assert logits.shape == (n, 8) and logits.dtype == jnp.float32
  optimizer = optax.adam(0.05)

  def loss_fn(p):
    return survival.discrete_time_nll(head.apply(p, x), interval, event).mean()

  @jax.jit
  def train(p):
    def step(carry, _):
      p, state = carry
      grads = jax.grad(loss_fn)(p)
      updates, state = optimizer.update(grads, state, p)
      return (optax.apply_updates(p, updates), state), None
    (p, _), _ = jax.lax.scan(step, (p, optimizer.init(p)), None, length=150)
    return p

  start = float(loss_fn(params))
  params = train(params)
  assert float(loss_fn(params)) < start
  risk = np.asarray(survival.discrete_risk(head.apply(params, x)))
  assert survival.concordance_index(time, risk, event) > 0.75


# --- Loader -----------------------------------------------------------------


@needs_data
def test_load_metabric_shapes_splits_and_standardisation(metabric):
  assert set(metabric) == {'train', 'validation', 'test'}
  sizes = {k: v[0].shape[0] for k, v in metabric.items()}
  assert sizes['train'] + sizes['validation'] == 1_523
  assert sizes['test'] == 381
  assert abs(sizes['validation'] - 0.2 * 1_523) <= 1
  for x, y in metabric.values():
    assert x.dtype == y.dtype == np.float32
    assert x.shape[1] == 9 and y.shape == (x.shape[0], 2)
    assert set(np.unique(y[:, 1])) == {0.0, 1.0}
    assert (y[:, 0] >= 0).all()
  x_train = metabric['train'][0]
  np.testing.assert_allclose(x_train.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(x_train.std(0), 1.0, atol=1e-4)
  # Stratified by event: the event rate is the same in train and validation.
  rates = [metabric[k][1][:, 1].mean() for k in ('train', 'validation')]
  assert abs(rates[0] - rates[1]) < 0.01
  # 'test' is DeepSurv's test group unchanged, standardised with the reduced
  # train split's statistics.
  path = DATA_DIR / 'survival' / deepsurv.FILES['metabric']
  with h5py.File(path, 'r') as f:
    raw = {k: f[k][()] for k in ('train/x', 'train/e', 'test/x', 'test/t',
                                 'test/e')}
  np.testing.assert_array_equal(metabric['test'][1][:, 0], raw['test/t'])
  np.testing.assert_array_equal(metabric['test'][1][:, 1], raw['test/e'])
  train_rows, _ = deepsurv._split(raw['train/e'], 0.2, 0, str(path))
  mean, std = deepsurv.standardisation(raw['train/x'][train_rows])
  np.testing.assert_allclose(metabric['test'][0], (raw['test/x'] - mean) / std,
                             rtol=1e-5, atol=1e-5)


@needs_data
def test_load_is_deterministic_and_seeded(metabric):
  again = deepsurv.load('metabric', DATA_DIR)
  for split in deepsurv.SPLITS:
    for a, b in zip(metabric[split], again[split]):
      np.testing.assert_array_equal(a, b)
  other = deepsurv.load('metabric', DATA_DIR, seed=1, validation_fraction=0.1)
  assert other['validation'][0].shape[0] == 153
  assert not np.array_equal(other['train'][1][:100], metabric['train'][1][:100])


@needs_data
def test_load_support():
  support = deepsurv.load('support', DATA_DIR)
  assert support['test'][0].shape == (1_775, 14)
  assert (support['train'][0].shape[0] + support['validation'][0].shape[0]
          == 7_098)
  np.testing.assert_allclose(support['train'][0].mean(0), 0.0, atol=1e-4)


def _write_h5(path, groups):
  with h5py.File(path, 'w') as f:
    for group, arrays in groups.items():
      for key, value in arrays.items():
        f.create_dataset(f'{group}/{key}', data=value)
  return path


def _good_group(n, d=9, seed=0):
  rng = np.random.default_rng(seed)
  return {'x': rng.normal(size=(n, d)).astype(np.float32),
          't': rng.uniform(0.1, 10, n).astype(np.float32),
          'e': rng.integers(0, 2, n).astype(np.int32)}


def test_loader_on_synthetic_file_and_errors(tmp_path):
  folder = tmp_path / 'survival'
  folder.mkdir()
  path = folder / deepsurv.FILES['metabric']
  train = _good_group(100)
  train['x'][:, 3] = 7.0  # A constant column: std 0 -> 1, stays finite.
  _write_h5(path, {'train': train, 'test': _good_group(30, seed=1)})
  data = deepsurv.load('metabric', tmp_path, validation_fraction=0.25)
  assert data['train'][0].shape == (75, 9) and data['test'][0].shape == (30, 9)
  assert np.isfinite(data['train'][0]).all()
  np.testing.assert_array_equal(data['train'][0][:, 3], 0.0)

  with pytest.raises(DataError, match='metabric.*support'):
    deepsurv.load('gbsg', tmp_path)
  with pytest.raises(MissingDataError) as error:
    deepsurv.load('support', tmp_path)
  assert str(folder / deepsurv.FILES['support']) in str(error.value)
  assert deepsurv.URL in str(error.value)
  assert isinstance(error.value, FileNotFoundError)

  def corrupt(change, group='train'):
    groups = {'train': _good_group(50), 'test': _good_group(20, seed=1)}
    change(groups[group])
    _write_h5(path, groups)
    with pytest.raises(DataError) as raised:
      deepsurv.load('metabric', tmp_path)
    assert str(path) in str(raised.value) and group in str(raised.value)
    return str(raised.value)

  assert 'negative' in corrupt(lambda g: g['t'].__setitem__(4, -1.0),
                               group='test')
  assert 'non-finite' in corrupt(lambda g: g['t'].__setitem__(0, np.nan))
  assert 'non-finite' in corrupt(lambda g: g['x'].__setitem__((2, 1), np.inf))
  assert '0 or 1' in corrupt(lambda g: g['e'].__setitem__(0, 2))
  assert 'lengths differ' in corrupt(
      lambda g: g.__setitem__('t', g['t'][:-1]))
  assert 'missing dataset' in corrupt(lambda g: g.pop('e'), group='test')
  assert 'covariates' in corrupt(lambda g: g.__setitem__('x', g['x'][:, :5]))

  _write_h5(path, {'train': _good_group(50)})
  with pytest.raises(DataError, match="missing HDF5 group 'test'"):
    deepsurv.load('metabric', tmp_path)
  path.write_bytes(b'not an hdf5 file')
  with pytest.raises(DataError, match='Corrupt'):
    deepsurv.load('metabric', tmp_path)
  with pytest.raises(DataError, match='validation_fraction'):
    deepsurv.load('metabric', tmp_path, validation_fraction=1.0)
