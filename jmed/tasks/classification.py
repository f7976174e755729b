"""Single-label classification: softmax over classes ('multiclass') and its two-class case
('binary', whose metrics read column 1 as the positive class).

Labels are int32 class ids [n] in [0, classes); outputs are logits [batch, classes]; the loss
is sparse categorical cross-entropy; predictions are softmax probabilities [batch, classes].
"""

import dataclasses
import math
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jmed import metrics as jmetrics
from jmed.errors import DataError
from jmed.tasks.base import Classifier, check_range

_EPS = 1e-12  # probabilities are clipped to [eps, 1] before a log


@dataclasses.dataclass(frozen=True)
class Multiclass(Classifier):
  """Softmax classification over two or more exclusive classes."""

  name = 'multiclass'
  class_names = True

  def label_shape(self, num_outputs, input_shape) -> Tuple[int, ...]:
    return ()

  def check_outputs(self, num_outputs, where) -> None:
    if num_outputs < 2:
      raise DataError(f'{where}: {self.name} needs at least 2 classes, got {num_outputs}.')

  def _check_values(self, labels, num_outputs, where) -> None:
    check_range(labels, 0, num_outputs - 1, where)

  def parse_label(self, cell: str) -> int:
    text = cell.strip()
    try:
      value = float(text)
    except ValueError:
      value = float('nan')
    if not (math.isfinite(value) and value >= 0 and value == int(value)):
      raise ValueError(f'label {cell!r} is not a class id (an integer >= 0).')
    return int(value)

  def class_weights(self, labels, num_outputs) -> Tuple[float, ...]:
    """scikit-learn's 'balanced' weights, n / (classes * count[c]) (0 for absent classes)."""
    counts = np.bincount(np.asarray(labels), minlength=num_outputs)
    return tuple(float(len(labels) / (num_outputs * c)) if c else 0.0 for c in counts)

  def loss(self, outputs, labels, valid=None):
    del valid
    return optax.softmax_cross_entropy_with_integer_labels(outputs.astype(jnp.float32), labels)

  def example_weights(self, labels, class_weights):
    return jnp.asarray(class_weights, jnp.float32)[labels]

  def train_metrics(self, outputs, labels) -> Dict[str, jax.Array]:
    return {'accuracy': (jnp.argmax(outputs, -1) == labels).astype(jnp.float32)}

  def predict(self, outputs):
    return jax.nn.softmax(outputs.astype(jnp.float32), -1)

  def evaluate(self, predictions, labels) -> Dict:
    return jmetrics.multiclass_metrics(predictions, labels)

  # ---------------------------------------------------------------- uncertainty

  def calibration_inputs(self, probs, labels):
    """(confidences, correct) of the top-label prediction (see `jmed.metrics`)."""
    return jmetrics.softmax_calibration_inputs(probs, labels)

  def nll(self, probs, labels) -> float:
    """Mean negative log-likelihood of the labels (nats; probabilities clipped at 1e-12)."""
    self.calibration_inputs(probs, labels)  # validates shapes, ranges and labels
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels).astype(np.int64)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], _EPS, 1.0))))

  def entropy(self, probs):
    """Entropy (nats) of each categorical prediction: [..., classes] -> [...]."""
    probs = jnp.asarray(probs)
    return -jnp.sum(jax.scipy.special.xlogy(probs, probs), axis=-1)


@dataclasses.dataclass(frozen=True)
class Binary(Multiclass):
  """Two-class softmax classification; class 1 is the positive class of the metrics."""

  name = 'binary'

  def check_outputs(self, num_outputs, where) -> None:
    if num_outputs != 2:
      raise DataError(f'{where}: binary needs 2 outputs (a softmax over negative and '
                      f'positive), got {num_outputs}.')

  def parse_label(self, cell: str) -> int:
    try:
      label = super().parse_label(cell)
    except ValueError:
      label = None
    if label not in (0, 1):
      raise ValueError(f'label {cell!r} is not 0 or 1.')
    return label

  def evaluate(self, predictions, labels) -> Dict:
    return jmetrics.binary_metrics(predictions, labels)
