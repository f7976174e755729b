"""Semantic segmentation math: soft Dice and Dice + cross-entropy losses, hard Dice counts.

Logits are [batch, ...spatial, classes] (2D images or 3D volumes), masks [batch, ...spatial]
integer class ids with 0 the background. Every function is jit-able; the task that trains with
them is `jmed.tasks.Segmentation`, and whole-split metrics are `jmed.metrics.segmentation_metrics`.
"""

import jax
import jax.numpy as jnp
import optax

COUNTS = ('tp', 'fp', 'fn')


def _masked_one_hots(logits, masks, pixel_mask):
  """Softmax probabilities and one-hot targets [batch, h, w, classes], zero where masked out."""
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  targets = jax.nn.one_hot(masks, logits.shape[-1], dtype=jnp.float32)
  if pixel_mask is not None:
    weight = jnp.asarray(pixel_mask, jnp.float32)[..., None]
    probs, targets = probs * weight, targets * weight
  return probs, targets


def dice_loss(logits, masks, *, smooth: float = 1.0, include_background: bool = True,
              pixel_mask=None):
  """Soft Dice loss per example: 1 - the mean over classes of soft Dice.

  Dice of class k is (2 * sum(p_k * t_k) + smooth) / (sum(p_k) + sum(t_k) + smooth) over the
  pixels of one example, with p the softmax probabilities and t the one-hot targets. A class
  absent from the target and predicted nowhere scores ~1. On its own, with most classes absent
  from each example, it can settle on predicting background everywhere (it does for the 11-class
  MNIST digits of tests/test_unet.py); `dice_ce_loss` adds cross-entropy, as nnU-Net does.

  Args:
    logits: [batch, height, width, classes] (any number of spatial axes works).
    masks: [batch, height, width] integer class ids.
    smooth: added to numerator and denominator; keeps empty classes finite.
    include_background: average over class 0 too; otherwise over classes 1.. only.
    pixel_mask: optional [batch, height, width], 1 for pixels that count, 0 to ignore.

  Returns:
    [batch] float32 losses in [0, 1].
  """
  probs, targets = _masked_one_hots(logits, masks, pixel_mask)
  spatial = tuple(range(1, probs.ndim - 1))
  intersection = jnp.sum(probs * targets, axis=spatial)
  total = jnp.sum(probs, axis=spatial) + jnp.sum(targets, axis=spatial)
  dice = (2.0 * intersection + smooth) / (total + smooth)
  if not include_background:
    dice = dice[:, 1:]
  return 1.0 - dice.mean(axis=-1)


def pixel_cross_entropy(logits, masks, *, pixel_mask=None):
  """Mean pixel cross-entropy per example: logits [batch, h, w, classes] -> [batch]."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), masks)
  weight = jnp.ones_like(losses) if pixel_mask is None else jnp.asarray(pixel_mask, jnp.float32)
  spatial = tuple(range(1, losses.ndim))
  return jnp.sum(losses * weight, axis=spatial) / jnp.maximum(jnp.sum(weight, axis=spatial), 1.0)


def dice_ce_loss(logits, masks, *, smooth: float = 1.0, include_background: bool = True,
                 pixel_mask=None, ce_weight: float = 1.0):
  """nnU-Net's loss: soft Dice plus `ce_weight` times pixel cross-entropy, per example [batch]."""
  dice = dice_loss(logits, masks, smooth=smooth, include_background=include_background,
                   pixel_mask=pixel_mask)
  return dice + ce_weight * pixel_cross_entropy(logits, masks, pixel_mask=pixel_mask)


def dice_counts(pred, masks, num_classes: int, *, pixel_mask=None):
  """Per-class true positive, false positive and false negative pixel counts (jittable).

  Counts add up over batches and devices, so a whole set's Dice is `dice_from_counts` of the
  summed counts.

  Args:
    pred: [batch, height, width] predicted class ids (e.g. `argmax(logits, -1)`); int or bool.
    masks: [batch, height, width] target class ids; int or bool.
    num_classes: number of classes.
    pixel_mask: optional [batch, height, width], 1 for pixels that count, 0 to ignore.

  Returns:
    {'tp': [classes], 'fp': [classes], 'fn': [classes]} int32.
  """
  p = jax.nn.one_hot(jnp.asarray(pred, jnp.int32), num_classes, dtype=jnp.int32)
  t = jax.nn.one_hot(jnp.asarray(masks, jnp.int32), num_classes, dtype=jnp.int32)
  if pixel_mask is not None:
    weight = jnp.asarray(pixel_mask, jnp.int32)[..., None]
    p, t = p * weight, t * weight
  axes = tuple(range(p.ndim - 1))
  tp = jnp.sum(p * t, axis=axes)
  return {'tp': tp, 'fp': jnp.sum(p, axis=axes) - tp, 'fn': jnp.sum(t, axis=axes) - tp}


def dice_from_counts(counts, *, include_background: bool = False):
  """Hard Dice per class, 2 TP / (2 TP + FP + FN), from (summed) `dice_counts`.

  Returns:
    [classes] float32; NaN for a class absent from both predictions and targets, and for class
    0 unless `include_background`.
  """
  tp, fp, fn = (jnp.asarray(counts[k], jnp.float32) for k in COUNTS)
  denom = 2.0 * tp + fp + fn
  dice = jnp.where(denom > 0, 2.0 * tp / jnp.where(denom > 0, denom, 1.0), jnp.nan)
  if not include_background:
    dice = dice.at[0].set(jnp.nan)
  return dice


def dice_score(pred, masks, num_classes: int, *, include_background: bool = False):
  """Hard Dice per class over the whole set of `pred` / `masks` ([batch, h, w] class ids).

  Equals the per-class F1 score of the flattened pixels. Returns [classes], NaN as in
  `dice_from_counts`.
  """
  return dice_from_counts(dice_counts(pred, masks, num_classes),
                          include_background=include_background)


def mean_dice(scores):
  """Mean of per-class Dice [classes] over the classes that are not NaN (NaN if none are)."""
  scores = jnp.asarray(scores, jnp.float32)
  present = ~jnp.isnan(scores)
  total = jnp.sum(jnp.where(present, scores, 0.0))
  n = jnp.sum(present)
  return jnp.where(n > 0, total / jnp.maximum(n, 1), jnp.nan)
