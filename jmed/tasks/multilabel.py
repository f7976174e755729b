"""Multi-label classification with missing labels: one independent sigmoid per label.

Labels are int32 [n, labels] with 1, 0, or -1 for a label that was not measured (Tox21's assays,
ChestMNIST's findings); outputs are logits [batch, labels]. A missing label contributes no loss
and no gradient, and is ignored by every metric.
"""

import dataclasses
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jmed import metrics as jmetrics
from jmed.tasks.base import Classifier, check_range

MISSING = jmetrics.MISSING  # label value of "not measured"
_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class Multilabel(Classifier):
  """Independent binary labels, some of them missing."""

  name = 'multilabel'

  def label_shape(self, num_outputs, input_shape) -> Tuple[int, ...]:
    return (num_outputs,)

  def _check_values(self, labels, num_outputs, where) -> None:
    check_range(labels, MISSING, 1, where, 'labels (1, 0 or -1 = missing)')

  def parse_label(self, cell: str) -> int:
    text = cell.strip()
    if text == '':
      return MISSING
    if text in ('0', '1', '0.0', '1.0'):
      return int(float(text))
    raise ValueError(f'label {cell!r} is not empty (missing), 0 or 1.')

  def loss(self, outputs, labels, valid=None):
    """Sigmoid cross-entropy summed over the observed labels, divided by the number of labels,
    so every example weighs the same whatever its missing labels (DeepChem's weighting)."""
    del valid
    outputs = outputs.astype(jnp.float32)
    observed = (labels >= 0).astype(jnp.float32)
    losses = optax.sigmoid_binary_cross_entropy(outputs, jnp.clip(labels, 0, 1).astype(
        jnp.float32))
    return (losses * observed).sum(-1) / labels.shape[-1]

  def train_metrics(self, outputs, labels) -> Dict[str, jax.Array]:
    """'accuracy': the fraction of an example's observed labels right at threshold 0.5 (1 for
    an example with none observed)."""
    observed = labels >= 0
    right = ((outputs > 0) == (labels == 1)) & observed
    accuracy = right.sum(-1) / jnp.maximum(observed.sum(-1), 1)
    return {'accuracy': jnp.where(observed.any(-1), accuracy, 1.0).astype(jnp.float32)}

  def predict(self, outputs):
    return jax.nn.sigmoid(outputs.astype(jnp.float32))

  def evaluate(self, predictions, labels) -> Dict:
    return jmetrics.multilabel_metrics(predictions, labels)

  # ---------------------------------------------------------------- uncertainty

  def calibration_inputs(self, probs, labels):
    """(confidences, correct) of every observed (example, label) entry (see `jmed.metrics`)."""
    return jmetrics.multilabel_calibration_inputs(probs, labels)

  def nll(self, probs, labels) -> float:
    """Mean binary cross-entropy over the observed (example, label) entries (nats)."""
    self.calibration_inputs(probs, labels)  # validates shapes, ranges and labels
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    observed = labels != MISSING
    p, y = np.clip(probs[observed], _EPS, 1.0), labels[observed] == 1
    return float(-np.mean(np.where(y, np.log(p), np.log(np.clip(1 - p, _EPS, 1.0)))))

  def entropy(self, probs):
    """Entropy (nats) of each prediction, the sum of its labels' Bernoulli entropies:
    [..., labels] -> [...]."""
    p = jnp.asarray(probs)
    xlogy = jax.scipy.special.xlogy
    return -jnp.sum(xlogy(p, p) + xlogy(1 - p, 1 - p), axis=-1)
