"""The 'regression' task: squared-error loss, RMSE/MAE/R^2, target standardisation, selection."""

import jax
import numpy as np
import optax
import pytest
from sklearn import metrics as skm

from jmed import metrics
from jmed import models
from jmed import tasks
from jmed.train import steps
from jmed.train.loop import _improves
from jmed.train.report import format_summary
from jmed.train.state import create_train_state


def test_regression_metrics_match_scikit_learn():
  rng = np.random.default_rng(0)
  y = rng.normal(size=(50, 2))
  p = y + rng.normal(scale=0.3, size=y.shape)
  got = metrics.regression_metrics(p, y)
  rmse = np.mean([skm.mean_squared_error(y[:, j], p[:, j]) ** 0.5 for j in range(2)])
  assert got['rmse'] == pytest.approx(rmse)
  assert got['mae'] == pytest.approx(skm.mean_absolute_error(y, p))
  assert got['r2'] == pytest.approx(skm.r2_score(y, p))
  with pytest.raises(ValueError, match='same shape'):
    metrics.regression_metrics(p[:, :1], y)
  with pytest.raises(ValueError, match='finite'):
    metrics.regression_metrics(np.full_like(y, np.nan), y)


def test_a_regression_step_descends_the_mean_squared_error():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 4)).astype(np.float32)
  y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], np.float32)) + 3.0
  task = tasks.get('regression').fit_to(y)  # the loss is on standardised targets
  model = models.MLP(num_classes=1, hidden=(16,))
  state = create_train_state(model, optax.adam(1e-2), x[:1], 0)
  step = jax.jit(steps.bind(steps.train_step, task))
  first = None
  for _ in range(100):
    state, out = step(state, {'inputs': x, 'labels': y})
    first = first if first is not None else float(out['loss_sum']) / 64
  pred = task.predict(model.apply({'params': state.params}, x))  # back in the targets' units
  mse = float(np.mean((np.asarray(pred) - y) ** 2))
  assert float(out['loss_sum']) / 64 < first / 10
  assert mse < np.var(y) / 10  # np.var(y): the error of always predicting the mean
  assert set(out) == {'loss_sum', 'count'}  # regression has no notion of right


def test_target_scale_standardises_and_survives_a_constant_target():
  y = np.stack([np.arange(10.0), np.full(10, 3.0)], 1).astype(np.float32)
  task = tasks.get('regression').fit_to(y)
  np.testing.assert_allclose(task.target_mean, [4.5, 3.0])
  np.testing.assert_allclose(task.target_std, [np.std(np.arange(10.0)), 1.0], rtol=1e-6)
  assert task.summary() == {'target_scale': {'mean': list(task.target_mean),
                                             'std': list(task.target_std)}}
  assert tasks.get('regression').summary() == {}  # not fitted: nothing learned
  standardised = (y - np.array([4.5, 3.0])) / np.array([np.std(np.arange(10.0)), 1.0])
  # The loss compares the outputs to standardised targets; predictions map back to the units.
  zeros = np.zeros_like(y)
  np.testing.assert_allclose(task.loss(zeros, y), np.mean(standardised ** 2, -1), rtol=1e-5)
  np.testing.assert_allclose(task.loss(standardised.astype(np.float32), y), 0, atol=1e-6)
  np.testing.assert_allclose(task.predict(standardised.astype(np.float32)), y, atol=1e-5)
  np.testing.assert_allclose(task.predict(zeros), np.broadcast_to([4.5, 3.0], y.shape))


def test_select_metric_for_regression_minimises_rmse():
  regression = tasks.get('regression')
  assert regression.select_metric('auto') == 'rmse'
  assert regression.select_metric('r2') == 'r2'
  with pytest.raises(ValueError, match='does not apply'):
    regression.select_metric('auroc')
  with pytest.raises(ValueError, match='does not apply'):
    tasks.get('binary').select_metric('rmse')
  assert regression.lower_is_better('rmse') and not regression.lower_is_better('r2')
  assert _improves(0.5, {'value': 0.6}, regression.lower_is_better('rmse'))
  assert not _improves(0.5, {'value': 0.6}, regression.lower_is_better('r2'))


def test_the_report_shows_regression_metrics():
  summary = {'model': 'gru', 'dataset': 'esol', 'task': 'regression', 'steps': 10,
             'test_rmse': 0.9, 'test_r2': 0.8}
  text = format_summary(summary)
  assert 'rmse' in text and '0.9000' in text and 'auroc' not in text
