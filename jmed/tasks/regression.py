"""Regression of one or more real-valued targets (e.g. ESOL's log solubility).

Labels are float32 [n, targets] in the targets' own units; outputs are [batch, targets]. The
model is trained on standardised targets: `fit_to` takes the training split's mean and standard
deviation, the loss is the mean squared error of (labels - mean) / std, and predictions are
mapped back to the targets' units, so metrics (RMSE, MAE, R^2) are in those units.
"""

import dataclasses
import math
from typing import Dict, Tuple

import jax.numpy as jnp
import numpy as np

from jmed import metrics as jmetrics
from jmed.errors import DataError
from jmed.tasks.base import Task


@dataclasses.dataclass(frozen=True)
class Regression(Task):
  """Mean squared error on standardised targets.

  Attributes:
    target_mean: per-target mean of the training labels (empty: no standardisation).
    target_std: per-target standard deviation (1 where a target is constant).
  """

  name = 'regression'
  metric_names = ('rmse', 'mae', 'r2', 'loss')
  default_metric = 'rmse'
  minimized = frozenset({'loss', 'rmse', 'mae'})
  label_dtype = np.float32

  target_mean: Tuple[float, ...] = ()
  target_std: Tuple[float, ...] = ()

  def label_shape(self, num_outputs, input_shape) -> Tuple[int, ...]:
    return (num_outputs,)

  def _check_values(self, labels, num_outputs, where) -> None:
    if not np.isfinite(labels).all():
      raise DataError(f'{where}: regression labels hold NaN or infinite values.')

  def parse_label(self, cell: str) -> float:
    try:
      value = float(cell)
    except ValueError:
      value = math.nan
    if not math.isfinite(value):
      raise ValueError(f'label {cell!r} is not a finite number.')
    return value

  def fit_to(self, train_labels) -> 'Regression':
    """This task standardising with the mean and std of `train_labels` [n, targets]."""
    labels = np.asarray(train_labels, np.float64)
    std = labels.std(0)
    return Regression(target_mean=tuple(np.float32(labels.mean(0)).tolist()),
                      target_std=tuple(np.float32(np.where(std > 0, std, 1)).tolist()))

  def summary(self) -> Dict:
    if not self.target_mean:
      return {}
    return {'target_scale': {'mean': list(self.target_mean), 'std': list(self.target_std)}}

  def _scale(self):
    if not self.target_mean:
      return 0.0, 1.0
    return jnp.asarray(self.target_mean, jnp.float32), jnp.asarray(self.target_std, jnp.float32)

  def loss(self, outputs, labels, valid=None):
    """Squared error of standardised targets, averaged over targets: [batch]."""
    del valid
    mean, std = self._scale()
    return jnp.square(outputs.astype(jnp.float32) - (labels - mean) / std).mean(-1)

  def predict(self, outputs):
    """Predictions [batch, targets] in the targets' units."""
    mean, std = self._scale()
    return outputs.astype(jnp.float32) * std + mean

  def evaluate(self, predictions, labels) -> Dict:
    return jmetrics.regression_metrics(predictions, labels)
