"""Skip-gram with negative sampling: word-embedding pretraining on unlabelled text.

The model (`jmed.models.SkipGram`) draws (word, context) and (word, noise) pairs itself and
returns 'scores' float32 [batch, length, 1 + negatives] (the context first) and 'weights'
[batch, length]. A position's loss is word2vec's -log sigmoid(context score) - sum log
sigmoid(-noise score); it counts as correct when the context outscores every noise token. Rows,
splits and metrics are as for masked-LM pretraining (`jmed.tasks.masked_lm`): a row's loss is
the mean over its positions, a split's 'loss' and 'accuracy' are position means.
"""

import dataclasses
from typing import Dict

import jax
import jax.numpy as jnp

from jmed.errors import ConfigError
from jmed.tasks.masked_lm import MaskedLM


@dataclasses.dataclass(frozen=True)
class SkipGram(MaskedLM):
  """word2vec's objective; the validation loss picks the checkpoint."""

  name = 'skipgram'
  metric_names = ('accuracy', 'loss')
  minimized = frozenset({'loss'})

  def _per_target(self, outputs):
    """(loss, correct, weight), each float32 [batch, length]."""
    if not (isinstance(outputs, dict) and 'scores' in outputs and 'weights' in outputs):
      raise ConfigError("task 'skipgram' needs a model returning {'scores', 'weights'} "
                        '(model skipgram, jmed.models.SkipGram).')
    scores = outputs['scores'].astype(jnp.float32)
    weight = outputs['weights'].astype(jnp.float32)
    loss = jax.nn.softplus(-scores[..., 0]) + jax.nn.softplus(scores[..., 1:]).sum(-1)
    correct = (scores[..., 0] > scores[..., 1:].max(-1)).astype(jnp.float32)
    return loss * weight, correct * weight, weight

  def evaluate(self, predictions, labels) -> Dict:
    """Position means over the split: 'accuracy' and 'loss'."""
    metrics = super().evaluate(predictions, labels)
    return {'accuracy': metrics['accuracy'], 'loss': metrics['loss']}

  def prediction_table(self, predictions, names, baseline=None):
    """'accuracy' and 'pairs' per row."""
    table = super().prediction_table(predictions, names, baseline)
    return {'accuracy': table['accuracy'], 'pairs': table['masked_tokens']}
