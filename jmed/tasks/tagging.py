"""Token tagging (named-entity recognition): one tag per token, scored by entities.

Inputs are token features [n, length, ...] (`jmed.data.conll`); labels are int32 tag ids
[n, length], -1 after each sentence's last token (padding). The model's outputs are a dict
(`jmed.models.tagger.SequenceTagger`): 'logits' [batch, length, tags], 'mask' [batch, length]
and, for a CRF, 'transitions', 'start', 'end'. With a CRF the loss is the sentence's negative
log-likelihood (forward algorithm) and predictions are Viterbi paths; without, the loss is the
token cross-entropy summed over the sentence and predictions are per-token argmaxes. Either way
a prediction is int32 tag ids [batch, length], -1 on padding.

A split is scored as conlleval does: entity-level precision, recall and F1 with exact span and
type matching (`jmed.text.spans`), over the tag names `tags` (IOB2 or IOBES) that the dataset
sets (`Dataset.task_kwargs`); entity F1 picks the checkpoint.
"""

import dataclasses
from typing import Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jmed.errors import ConfigError, DataError
from jmed.models import crf
from jmed.tasks.base import Task, check_range
from jmed.text import spans


@dataclasses.dataclass(frozen=True)
class Tagging(Task):
  """Per-token tags with a CRF or softmax loss, scored by entity F1.

  Attributes:
    tags: tag names in id order ('O', 'B-Disease', 'I-Disease', ...).
    constrained: CRF decoding keeps to the tag scheme (`crf.constraints`: no I-X after O or
      after another type, ...); the loss is never constrained, so a corpus with such
      transitions still trains.
  """

  name = 'tagging'
  metric_names = ('f1', 'precision', 'recall', 'token_accuracy', 'loss')
  default_metric = 'f1'
  label_dtype = np.int32

  tags: Tuple[str, ...] = ()
  constrained: bool = True

  def label_shape(self, num_outputs, input_shape) -> Tuple[int, ...]:
    """One tag per token position: [length]."""
    return (input_shape[0],)

  def check_outputs(self, num_outputs, where) -> None:
    if num_outputs < 2:
      raise DataError(f'{where}: tagging needs at least 2 tags, got {num_outputs}.')
    if self.tags and len(self.tags) != num_outputs:
      raise DataError(f'{where}: {num_outputs} model outputs for {len(self.tags)} tags '
                      f'{list(self.tags)}.')

  def _check_values(self, labels, num_outputs, where) -> None:
    check_range(labels, -1, num_outputs - 1, where, 'tag ids (-1 = padding)')

  # ---------------------------------------------------------------- on device

  def loss(self, outputs, labels, valid=None):
    """Per-sentence loss [batch]: CRF negative log-likelihood, or summed token cross-entropy."""
    del valid
    logits, mask = outputs['logits'].astype(jnp.float32), labels >= 0
    if 'transitions' in outputs:
      return -crf.log_likelihood(logits, labels, mask, outputs['transitions'],
                                 outputs['start'], outputs['end'])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
    return (losses * mask).sum(-1)

  def train_metrics(self, outputs, labels) -> Dict[str, jax.Array]:
    """'token_accuracy' of the per-token argmax over each sentence's tokens."""
    mask = labels >= 0
    right = (jnp.argmax(outputs['logits'], -1) == labels) & mask
    return {'token_accuracy': right.sum(-1) / jnp.maximum(mask.sum(-1), 1)}

  def predict(self, outputs):
    """Tag ids int32 [batch, length] (Viterbi with a CRF, else argmax), -1 on padding."""
    logits, mask = outputs['logits'].astype(jnp.float32), outputs['mask']
    if 'transitions' in outputs:
      scores = {k: outputs[k] for k in ('transitions', 'start', 'end')}
      if self.constrained and self.tags:
        scores = {k: v + crf.constraints(self.tags)[k] for k, v in scores.items()}
      return crf.viterbi(logits, mask, **scores)[0]
    return jnp.where(mask, jnp.argmax(logits, -1), -1).astype(jnp.int32)

  # ---------------------------------------------------------------- on the host

  def sentences(self, ids: np.ndarray, lengths: Sequence[int]):
    """Tag-name lists of rows of tag ids [n, length], each cut to its length."""
    names = self._names()
    return [[names[t] if 0 <= t < len(names) else 'O' for t in row[:n]]
            for row, n in zip(np.asarray(ids), lengths)]

  def evaluate(self, predictions, labels) -> Dict:
    """Entity precision, recall and F1 (exact spans, conlleval), per entity type
    ('f1_<type>'), and token accuracy, over the real tokens of `labels` [n, length]."""
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    lengths = (labels >= 0).sum(-1)
    scores = spans.entity_scores(self.sentences(labels, lengths),
                                 self.sentences(predictions, lengths))
    mask = labels >= 0
    metrics = {'precision': scores['precision'], 'recall': scores['recall'],
               'f1': scores['f1'],
               'token_accuracy': float((predictions == labels)[mask].mean()) if mask.any()
                                 else float('nan')}
    for kind, per_type in sorted(scores['per_type'].items()):
      metrics[f'f1_{kind}'] = per_type['f1']
    return metrics

  def prediction_table(self, predictions, names, baseline=None) -> Dict[str, np.ndarray]:
    """'predicted_tags': each row's tags, space-separated, one per real token."""
    del names, baseline
    predictions = np.asarray(predictions)
    rows = self.sentences(predictions, (predictions >= 0).sum(-1))
    return {'predicted_tags': np.asarray([' '.join(row) for row in rows], dtype=object)}

  def label_table(self, labels, classes=None) -> Dict[str, np.ndarray]:
    """'tags': each row's own tags, space-separated, beside 'predicted_tags'."""
    del classes
    labels = np.asarray(labels)
    rows = self.sentences(labels, (labels >= 0).sum(-1))
    return {'tags': np.asarray([' '.join(row) for row in rows], dtype=object)}

  def combine(self, member_predictions) -> np.ndarray:
    """An ensemble's tags: each token's most frequent tag among the members (ties: lowest)."""
    members = np.asarray(member_predictions)  # [members, n, length]
    num_tags = max(len(self.tags), int(members.max()) + 1, 1)
    votes = (members[..., None] == np.arange(num_tags)).sum(0)  # [n, length, tags]
    return np.where(members[0] >= 0, votes.argmax(-1), -1).astype(np.int32)

  def _names(self) -> Tuple[str, ...]:
    if not self.tags:
      raise ConfigError('task tagging has no tag names: set them with task_kwargs '
                        '{"tags": [...]} (datasets from jmed.data.conll set them).')
    return self.tags
