"""Survival analysis with a Cox proportional-hazards model (DeepSurv, Katzman et al. 2018).

Labels are float32 [n, 2]: (time >= 0, event 1 / censored 0). The model's single output is a
log-risk score (higher = earlier event). The loss is Cox's negative log partial likelihood over
the global batch (Breslow ties; `jmed.survival`), whose risk sets couple the examples: DP-SGD
does not apply, and a validation or test split is scored on the host over the whole split
(Harrell's C-index and the split's own Cox loss).
"""

import dataclasses
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jmed import survival
from jmed.errors import DataError
from jmed.tasks.base import Task


@dataclasses.dataclass(frozen=True)
class Survival(Task):
  """Cox partial likelihood on a log-risk score."""

  name = 'survival'
  metric_names = ('c_index', 'loss')
  default_metric = 'c_index'
  per_example_loss = False
  label_dtype = np.float32
  column_roles = ('time', 'event')
  role_outputs = 1  # one risk score

  def label_shape(self, num_outputs, input_shape) -> Tuple[int, ...]:
    return (2,)

  def check_outputs(self, num_outputs, where) -> None:
    if num_outputs != 1:
      raise DataError(f'{where}: survival needs 1 output (the log-risk score), got '
                      f'{num_outputs}.')

  def _check_values(self, labels, num_outputs, where) -> None:
    time, event = labels[:, 0], labels[:, 1]
    if not np.isfinite(time).all() or time.min() < 0:
      raise DataError(f'{where}: survival times must be finite and >= 0.')
    if not np.isin(event, (0, 1)).all():
      raise DataError(f'{where}: events must be 1 (event) or 0 (censored).')

  def loss(self, outputs, labels, valid=None):
    """Per-example Cox terms [batch] scaled so that their mean over the batch is
    `jmed.survival.cox_loss` (the partial likelihood per event)."""
    time, event = labels[:, 0], labels[:, 1]
    valid = jnp.ones_like(time) if valid is None else valid
    terms = survival.cox_terms(outputs[:, 0], time, event, valid)
    events = jnp.maximum((event * valid).sum(), 1)
    return terms * valid.sum() / events

  def train_metrics(self, outputs, labels) -> Dict[str, jax.Array]:
    """'concordance': for an event, the fraction of the batch's later examples it outranks
    (0.5 where it has none), so the mean is a rough in-batch C-index."""
    risk, time, event = outputs[:, 0], labels[:, 0], labels[:, 1]
    comparable = (time[:, None] < time[None, :]) & (event[:, None] > 0)
    wins = jnp.where(risk[:, None] > risk[None, :], 1.0,
                     jnp.where(risk[:, None] == risk[None, :], 0.5, 0.0))
    pairs = comparable.sum(-1)
    return {'concordance': jnp.where(
        pairs > 0, (wins * comparable).sum(-1) / jnp.maximum(pairs, 1), 0.5)}

  def predict(self, outputs):
    """The log-risk score [batch]."""
    return outputs[:, 0].astype(jnp.float32)

  def baseline(self, train_predictions, train_labels) -> Dict:
    """Breslow's baseline cumulative hazard of the training split, and the times at which
    predictions.csv reports survival (the training event times' quartiles)."""
    return survival.breslow_baseline(train_predictions, train_labels[:, 0], train_labels[:, 1])

  def prediction_table(self, predictions, names, baseline=None) -> Dict[str, np.ndarray]:
    """'risk' (the log-risk score) and, given the `baseline`, 'survival_at_<t>': each row's
    survival probability S(t | x) = exp(-H0(t) exp(risk)) at the baseline's report times."""
    del names
    risk = np.asarray(predictions, np.float64).reshape(-1)
    table = {'risk': risk}
    if baseline:
      for t, curve in zip(baseline['report_times'],
                          survival.survival_probability(risk, baseline, baseline['report_times'])):
        table[f'survival_at_{t:g}'] = curve
    return table

  def evaluate(self, predictions, labels) -> Dict:
    """C-index, the whole split's Cox loss and its number of events."""
    return survival.survival_metrics(predictions, labels[:, 0], labels[:, 1])
