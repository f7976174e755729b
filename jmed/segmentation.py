"""Semantic segmentation math: soft Dice and Dice + cross-entropy losses, hard Dice counts,
sliding-window inference over images larger than the model's window.

Logits are [batch, ...spatial, classes] (2D images or 3D volumes), masks [batch, ...spatial]
integer class ids with 0 the background. Every function is jit-able; the task that trains with
them is `jmed.tasks.Segmentation`, and whole-split metrics are `jmed.metrics.segmentation_metrics`.
"""

import jax
import jax.numpy as jnp
import optax

COUNTS = ('tp', 'fp', 'fn')
WEIGHTINGS = ('gaussian', 'flat')


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


def window_starts(size: int, window: int, stride: int):
  """Start offsets of windows covering [0, size): every `stride`, plus a last one flush with
  the end (so the border is covered without padding); [0] when size <= window."""
  if size <= window:
    return [0]
  starts = list(range(0, size - window + 1, stride))
  if starts[-1] != size - window:
    starts.append(size - window)
  return starts


def window_weights(window: int, weighting: str = 'gaussian'):
  """[window, window] blending weights: 'flat' (ones) or 'gaussian' (nnU-Net's: std window / 8
  about the centre, floored at 1e-3 of the peak so that every pixel keeps a finite weight)."""
  if weighting not in WEIGHTINGS:
    raise ValueError(f'weighting must be one of {WEIGHTINGS}, got {weighting!r}')
  if weighting == 'flat':
    return jnp.ones((window, window), jnp.float32)
  x = jnp.arange(window, dtype=jnp.float32) - (window - 1) / 2
  g = jnp.exp(-0.5 * (x / (window / 8)) ** 2)
  return jnp.maximum(g[:, None] * g[None, :], 1e-3)


def sliding_window(apply_fn, images, window: int, stride: int = 0,
                   weighting: str = 'gaussian'):
  """Logits of whole images from a model applied to overlapping square windows.

  The windows (`stride` apart, plus a last one flush with each border) are cut out, run through
  `apply_fn` as ONE batch, and their logits averaged where they overlap with `window_weights`.
  Images smaller than the window are edge-padded to it and the logits cropped back. jit-able
  with `window`, `stride` and `weighting` static. All windows of the batch go through the model
  at once: memory grows with batch x windows (keep the evaluation batch small).

  Args:
    apply_fn: images [n, window, window, channels] -> logits [n, window, window, classes].
    images: [batch, height, width, channels].
    window: the window's height and width (e.g. divisible by the U-Net's 2 ** poolings).
    stride: offset between windows (0: window // 2); <= window.
    weighting: 'gaussian' (centre pixels count more) or 'flat' (plain mean).

  Returns:
    [batch, height, width, classes] float32 logits.
  """
  stride = stride or max(window // 2, 1)
  if not 0 < stride <= window:
    raise ValueError(f'stride must be in (0, window={window}], got {stride}')
  b, h, w, _ = images.shape
  pad_h, pad_w = max(window - h, 0), max(window - w, 0)
  if pad_h or pad_w:
    images = jnp.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode='edge')
  height, width = h + pad_h, w + pad_w
  corners = [(r, c) for r in window_starts(height, window, stride)
             for c in window_starts(width, window, stride)]
  tiles = jnp.concatenate([images[:, r:r + window, c:c + window] for r, c in corners])
  logits = apply_fn(tiles).astype(jnp.float32)  # [windows * batch, window, window, classes]
  weight = window_weights(window, weighting)
  total = jnp.zeros((b, height, width, logits.shape[-1]), jnp.float32)
  norm = jnp.zeros((height, width), jnp.float32)
  for i, (r, c) in enumerate(corners):
    tile = logits[i * b:(i + 1) * b] * weight[:, :, None]
    total = total.at[:, r:r + window, c:c + window].add(tile)
    norm = norm.at[r:r + window, c:c + window].add(weight)
  return (total / norm[None, :, :, None])[:, :h, :w]


def num_windows(height: int, width: int, window: int, stride: int = 0) -> int:
  """How many windows `sliding_window` runs per image."""
  stride = stride or max(window // 2, 1)
  return (len(window_starts(max(height, window), window, stride))
          * len(window_starts(max(width, window), window, stride)))
