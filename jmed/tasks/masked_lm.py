"""Masked language modelling: pretraining a text encoder on unlabelled in-domain text.

The model (`jmed.models.MaskedLM`) chooses and corrupts the tokens itself and returns a dict:
'logits' float32 [batch, k, vocab] and 'targets' int32 [batch, k] (the original ids; -1 where a
row has fewer than k real tokens). The labels are the token ids [n, length] themselves, checked
but unused by the loss.

An example's loss is its mean cross-entropy over its targets (0 for a row without any). A
prediction is per row (cross-entropy sum, correct count, target count), so a split's metrics
are token means: 'loss' (mean cross-entropy, nats), 'perplexity' (its exp) and 'accuracy'.
"""

import dataclasses
import math
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jmed.errors import ConfigError, DataError
from jmed.tasks.base import Task, check_range


@dataclasses.dataclass(frozen=True)
class MaskedLM(Task):
  """Predict the masked tokens of each row; the validation loss picks the checkpoint."""

  name = 'masked_lm'
  metric_names = ('accuracy', 'perplexity', 'loss')
  default_metric = 'loss'
  minimized = frozenset({'loss', 'perplexity'})
  label_dtype = np.int32

  def label_shape(self, num_outputs, input_shape) -> Tuple[int, ...]:
    return (input_shape[0],)

  def check_outputs(self, num_outputs, where) -> None:
    if num_outputs < 2:
      raise DataError(f'{where}: {self.name} needs a vocabulary of at least 2 tokens, got '
                      f'{num_outputs}.')

  def _check_values(self, labels, num_outputs, where) -> None:
    check_range(labels, -1, num_outputs - 1, where, 'token ids')

  # ---------------------------------------------------------------- on device

  def _per_target(self, outputs):
    """(cross-entropy, correct, weight), each float32 [batch, k]; weight 1 on real targets."""
    _check_model_outputs(outputs)
    logits = outputs['logits'].astype(jnp.float32)
    targets = outputs['targets']
    weight = (targets >= 0).astype(jnp.float32)
    safe = jnp.maximum(targets, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe) * weight
    correct = (jnp.argmax(logits, -1) == safe).astype(jnp.float32) * weight
    return ce, correct, weight

  def loss(self, outputs, labels, valid=None):
    """Mean cross-entropy over each row's targets [batch] (0 where a row has none)."""
    del labels, valid
    ce, _, weight = self._per_target(outputs)
    return ce.sum(-1) / jnp.maximum(weight.sum(-1), 1.0)

  def train_metrics(self, outputs, labels) -> Dict[str, jax.Array]:
    del labels
    _, correct, weight = self._per_target(outputs)
    return {'accuracy': correct.sum(-1) / jnp.maximum(weight.sum(-1), 1.0)}

  def predict(self, outputs):
    """float32 [batch, 3]: per row (cross-entropy sum, correct count, target count)."""
    ce, correct, weight = self._per_target(outputs)
    return jnp.stack([ce.sum(-1), correct.sum(-1), weight.sum(-1)], -1)

  # ---------------------------------------------------------------- on the host

  def evaluate(self, predictions, labels) -> Dict:
    """Token means over the split: 'accuracy', 'loss' (cross-entropy) and 'perplexity'."""
    del labels
    ce, correct, count = np.asarray(predictions, np.float64).reshape(-1, 3).sum(0)
    if count == 0:
      return {'accuracy': float('nan'), 'perplexity': float('nan'), 'loss': float('nan')}
    loss = ce / count
    return {'accuracy': float(correct / count), 'perplexity': float(math.exp(min(loss, 700.0))),
            'loss': float(loss)}

  def prediction_table(self, predictions, names, baseline=None) -> Dict[str, np.ndarray]:
    """'accuracy' (of the row's masked tokens; NaN without any) and 'masked_tokens' per row."""
    del names, baseline
    predictions = np.asarray(predictions, np.float64)
    count = predictions[:, 2]
    with np.errstate(invalid='ignore', divide='ignore'):
      accuracy = np.where(count > 0, predictions[:, 1] / count, np.nan)
    return {'accuracy': accuracy, 'masked_tokens': count.astype(np.int64)}


def _check_model_outputs(outputs) -> None:
  """Raises `ConfigError` unless `outputs` is a masked language model's dict."""
  if not (isinstance(outputs, dict) and 'logits' in outputs and 'targets' in outputs):
    got = sorted(outputs) if isinstance(outputs, dict) else f'an array {jnp.shape(outputs)}'
    raise ConfigError("task 'masked_lm' needs a model returning {'logits', 'targets'} "
                      f'(model masked_lm, jmed.models.MaskedLM); got {got}.')
