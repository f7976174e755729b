"""What predictions.csv holds per task, and the survival curves' baseline hazard."""

import numpy as np
import pandas as pd
import pytest

from jmed import survival, tasks


def _cox_data(n=300, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 2))
  time = np.round(rng.exponential(np.exp(-x @ [0.8, -0.5])), 1)  # rounded: tied times
  event = (rng.random(n) < 0.7).astype(int)
  return x, time, event


def test_breslow_baseline_and_survival_equal_lifelines():
  from lifelines import CoxPHFitter  # pylint: disable=g-import-not-at-top
  x, time, event = _cox_data()
  frame = pd.DataFrame({'a': x[:, 0], 'b': x[:, 1], 't': time, 'e': event})
  cox = CoxPHFitter(baseline_estimation_method='breslow').fit(frame, 't', 'e')
  risk = np.asarray(cox.predict_log_partial_hazard(frame)).ravel()
  baseline = survival.breslow_baseline(risk, time, event)
  reference = cox.baseline_cumulative_hazard_.loc[baseline['times']].to_numpy().ravel()
  np.testing.assert_allclose(baseline['cumulative_hazard'], reference, atol=1e-10)
  expected = cox.predict_survival_function(frame.iloc[:7], times=baseline['report_times'])
  np.testing.assert_allclose(
      survival.survival_probability(risk[:7], baseline, baseline['report_times']),
      expected.to_numpy(), atol=1e-10)


def test_survival_before_the_first_event_is_one():
  baseline = survival.breslow_baseline([0.0, 1.0, -1.0], [2.0, 3.0, 5.0], [1, 1, 0])
  assert survival.survival_probability([0.3], baseline, [1.0])[0, 0] == 1.0
  assert survival.survival_probability([0.3], baseline, [10.0])[0, 0] < 1.0


def test_prediction_tables_name_their_columns():
  probs = np.array([[0.2, 0.8], [0.9, 0.1]])
  table = tasks.get('binary').prediction_table(probs, ['no', 'yes'])
  assert list(table) == ['prob_no', 'prob_yes', 'predicted']
  assert list(table['predicted']) == ['yes', 'no']
  table = tasks.get('multilabel').prediction_table(probs, ['NR-AR', 'SR-p53'])
  assert list(table) == ['prob_NR-AR', 'prob_SR-p53']
  table = tasks.get('regression').prediction_table(np.array([[1.5], [2.5]]), ['logS'])
  assert list(table) == ['predicted_logS']
  x, time, event = _cox_data(50)
  risk = x[:, 0]
  task = tasks.get('survival')
  baseline = task.baseline(risk, np.stack([time, event], 1))
  table = task.prediction_table(risk, [], baseline)
  assert list(table)[0] == 'risk' and len(table) == 4
  assert task.prediction_table(risk, [], None).keys() == {'risk'}


def test_predict_inputs_pads_the_last_batch():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from jmed.predict import predict_inputs  # pylint: disable=g-import-not-at-top

  class Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(2)(x)

  model = Linear()
  inputs = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
  variables = model.init(jax.random.key(0), inputs[:1])
  task = tasks.get('multiclass')
  out = predict_inputs(model, variables, task, inputs, batch_size=4)
  np.testing.assert_allclose(out, np.asarray(task.predict(model.apply(variables, inputs))),
                             atol=1e-6)
  with pytest.raises(ValueError, match='batch_size'):
    predict_inputs(model, variables, task, inputs, batch_size=0)
