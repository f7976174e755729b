"""Semantic segmentation: a class for every pixel (or voxel).

Inputs are images [n, height, width, channels] (or volumes [n, depth, height, width, channels]);
labels are int32 masks [n, height, width] (or [n, depth, height, width]) of class ids with 0 the
background; outputs are logits [batch, ...spatial, classes]. The loss is nnU-Net's soft Dice plus
pixel cross-entropy (`jmed.segmentation.dice_ce_loss`); predictions are per-pixel softmax
probabilities; a split is scored by foreground Dice, IoU and pixel accuracy over all its pixels
(`jmed.metrics.segmentation_metrics`), and validation Dice picks the checkpoint.
"""

import dataclasses
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jmed import metrics as jmetrics
from jmed import segmentation
from jmed.errors import DataError
from jmed.tasks.base import Task, check_range


@dataclasses.dataclass(frozen=True)
class Segmentation(Task):
  """Per-pixel classification with a Dice + cross-entropy loss."""

  name = 'segmentation'
  metric_names = ('dice', 'iou', 'pixel_accuracy', 'loss')
  default_metric = 'dice'
  spatial_labels = True
  label_dtype = np.int32

  def label_shape(self, num_outputs, input_shape) -> Tuple[int, ...]:
    """The inputs' spatial shape (all but the channels)."""
    return tuple(input_shape[:-1])

  def check_outputs(self, num_outputs, where) -> None:
    if num_outputs < 2:
      raise DataError(f'{where}: segmentation needs at least 2 classes (background and one '
                      f'structure), got {num_outputs}.')

  def _check_values(self, labels, num_outputs, where) -> None:
    check_range(labels, 0, num_outputs - 1, where, 'mask class ids')

  def loss(self, outputs, labels, valid=None):
    del valid
    return segmentation.dice_ce_loss(outputs, labels)

  def train_metrics(self, outputs, labels) -> Dict[str, jax.Array]:
    """'pixel_accuracy' of each example's argmax map."""
    right = (jnp.argmax(outputs, -1) == labels).astype(jnp.float32)
    return {'pixel_accuracy': right.reshape(right.shape[0], -1).mean(-1)}

  def predict(self, outputs):
    """Per-pixel class probabilities [batch, ...spatial, classes]."""
    return jax.nn.softmax(outputs.astype(jnp.float32), -1)

  def evaluate(self, predictions, labels) -> Dict:
    return jmetrics.segmentation_metrics(np.argmax(predictions, -1), labels,
                                         predictions.shape[-1])
