"""Metrics a clinician asks for, computed on the host from gathered predictions.

One function per kind of prediction; `jmed.tasks` picks the one its task needs:

  `binary_metrics`:     probs [n, 2] softmax probabilities, labels [n] in {0, 1}.
  `multiclass_metrics`: probs [n, k] softmax probabilities, labels [n] in [0, k).
  `multilabel_metrics`: probs [n, k] independent sigmoid probabilities, labels [n, k] in
                        {1, 0, MISSING}; MISSING (-1) entries are ignored everywhere, label by
                        label.
  `regression_metrics`: predictions and targets [n, targets] in the targets' units.

Conventions:
  * Thresholded predictions are `p > threshold` (MedMNIST's rule). At 0.5 on a two-column
    softmax this is the argmax, ties (p = 0.5) going to class 0 as `argmax` does.
  * Multiclass and multilabel metrics are macro averages over classes (one vs rest) or labels,
    taken over the classes/labels where the metric is defined; a metric defined for none of
    them is None.
  * AUROC and AUPRC are defined only where both classes are present (for multiclass: the class
    and at least one other); single-class columns are skipped, as MedMNIST's evaluator does for
    multilabel AUROC.
  * Sensitivity needs a positive, specificity a negative, F1 a positive label or prediction.
  * Calibration error (ECE) uses `num_bins` equal-width, right-closed confidence bins (a
    confidence of 0 falls in the first bin).

scikit-learn is imported when a metric first needs it, so importing this module is cheap.
"""

from typing import Optional, Tuple

import numpy as np

MISSING = -1  # multilabel label value for "not annotated"
NUM_BINS = 15
_PROB_TOLERANCE = 1e-5  # float32 softmax may overshoot 1 by an ulp or so


def _sklearn_metrics():
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  return metrics


# ---------------------------------------------------------------- per kind of prediction


def binary_metrics(probs, labels, threshold: float = 0.5) -> dict:
  """Accuracy, AUROC, AUPRC, sensitivity, specificity, F1 and ECE of a two-class softmax.

  Args:
    probs: [n, 2] softmax probabilities; the positive class is column 1.
    labels: [n] integer class ids in {0, 1}.
    threshold: positive iff `probs[:, 1] > threshold`.

  Returns:
    Dict of Python floats, None where undefined.

  Raises:
    ValueError: malformed inputs (shapes, NaN probabilities, labels out of range, threshold
      outside [0, 1]), with a message saying which.
  """
  probs, labels = _check_softmax(probs, labels, threshold, binary=True)
  scores = probs[:, 1]
  preds = scores > threshold
  rates = _threshold_rates(labels[:, None] == 1, preds[:, None])
  return {
      'accuracy': float(np.mean(preds == labels)),
      'auroc': binary_auroc(labels, scores),
      'auprc': binary_auprc(labels, scores),
      **{k: _mean_defined(v) for k, v in rates.items()},
      'ece': expected_calibration_error(probs.max(-1), probs.argmax(-1) == labels),
  }


def multiclass_metrics(probs, labels) -> dict:
  """The metrics of `binary_metrics`, macro-averaged one class against the rest.

  Args:
    probs: [n, k] softmax probabilities, k >= 2; predictions are the argmax.
    labels: [n] integer class ids in [0, k).
  """
  probs, labels = _check_softmax(probs, labels, 0.5, binary=False)
  k = probs.shape[1]
  scores = probs / probs.sum(-1, keepdims=True)  # as roc_auc_score(multi_class='ovr') wants
  onehot = labels[:, None] == np.arange(k)  # [n, k]
  preds = probs.argmax(-1)
  rates = _threshold_rates(onehot, preds[:, None] == np.arange(k))
  return {
      'accuracy': float(np.mean(preds == labels)),
      'auroc': _mean_defined([binary_auroc(onehot[:, c], scores[:, c]) for c in range(k)]),
      'auprc': _mean_defined([binary_auprc(onehot[:, c], scores[:, c]) for c in range(k)]),
      **{name: _mean_defined(v) for name, v in rates.items()},
      'ece': expected_calibration_error(probs.max(-1), preds == labels),
  }


def multilabel_metrics(probs, labels, threshold: float = 0.5) -> dict:
  """The metrics of `binary_metrics` per label over its observed entries, averaged over labels.

  Args:
    probs: [n, k] independent sigmoid probabilities.
    labels: [n, k] of 1, 0 or MISSING (-1, ignored).
    threshold: positive iff `p > threshold`.

  Returns:
    As `binary_metrics` (accuracy is the mean per-label accuracy, as MedMNIST's), plus
    'auroc_per_label', a list of k floats or None.
  """
  probs, labels = _check_multilabel(probs, labels, threshold)
  observed = labels != MISSING  # [n, k]
  columns = [(labels[m, j], probs[m, j]) for j, m in enumerate(observed.T)]
  aurocs = [binary_auroc(y, s) for y, s in columns]
  accuracies = [float(np.mean((s > threshold) == y)) if len(y) else None for y, s in columns]
  rates = _threshold_rates(labels == 1, probs > threshold, observed)
  confidences, correct = multilabel_calibration_inputs(probs, labels)
  return {
      'accuracy': _mean_defined(accuracies),
      'auroc': _mean_defined(aurocs),
      'auprc': _mean_defined([binary_auprc(y, s) for y, s in columns]),
      **{name: _mean_defined(v) for name, v in rates.items()},
      'ece': expected_calibration_error(confidences, correct) if len(correct) else None,
      'auroc_per_label': aurocs,
  }


def regression_metrics(predictions, targets) -> dict:
  """RMSE, MAE and R^2 of predictions against targets, both [n, targets] (or [n]).

  With several targets each metric is the mean over targets (MoleculeNet's convention).

  Raises:
    ValueError: shapes differ, fewer than 2 examples, or non-finite values.
  """
  predictions = np.asarray(predictions, np.float64)
  targets = np.asarray(targets, np.float64)
  if predictions.shape != targets.shape or len(targets) < 2:
    raise ValueError(f'predictions {predictions.shape} and targets {targets.shape} must have '
                     'the same shape with at least 2 examples.')
  if not (np.isfinite(predictions).all() and np.isfinite(targets).all()):
    raise ValueError('predictions and targets must be finite.')
  predictions = predictions.reshape(len(targets), -1)
  targets = targets.reshape(len(targets), -1)
  errors = predictions - targets
  return {
      'rmse': float(np.sqrt(np.square(errors).mean(0)).mean()),
      'mae': float(np.abs(errors).mean(0).mean()),
      'r2': float(_sklearn_metrics().r2_score(targets, predictions)),
  }


# ---------------------------------------------------------------- building blocks


def binary_auroc(labels, scores) -> Optional[float]:
  """ROC AUC of scores [n] against 0/1 labels [n]; None unless both classes occur."""
  labels = np.asarray(labels)
  if len(np.unique(labels)) < 2:
    return None
  return float(_sklearn_metrics().roc_auc_score(labels, scores))


def binary_auprc(labels, scores) -> Optional[float]:
  """Average precision of scores [n] against 0/1 labels [n]; None unless both classes occur."""
  labels = np.asarray(labels)
  if len(np.unique(labels)) < 2:
    return None
  return float(_sklearn_metrics().average_precision_score(labels, scores))


def binary_sensitivity_specificity(labels, preds) -> Tuple[Optional[float], Optional[float]]:
  """(TP / (TP + FN), TN / (TN + FP)) of 0/1 preds [n] against 0/1 labels [n].

  Each is None when its denominator is 0 (no positives / no negatives).
  """
  labels, preds = np.asarray(labels), np.asarray(preds)
  if labels.shape != preds.shape or labels.ndim != 1:
    raise ValueError(f'labels and preds must both be [n]; got {labels.shape} and {preds.shape}.')
  rates = _threshold_rates(labels[:, None] == 1, preds[:, None] == 1)
  return _mean_defined(rates['sensitivity']), _mean_defined(rates['specificity'])


def _threshold_rates(truth, preds, observed=None) -> dict:
  """Per-column sensitivity, specificity and F1 (NaN where undefined).

  Args:
    truth, preds: [n, m] bool, one binary problem per column.
    observed: optional [n, m] bool; False entries are ignored.

  Returns:
    {'sensitivity', 'specificity', 'f1'} -> [m] float arrays.
  """
  if observed is None:
    observed = np.ones_like(truth, bool)
  tp = np.sum(truth & preds & observed, 0)
  fp = np.sum(~truth & preds & observed, 0)
  fn = np.sum(truth & ~preds & observed, 0)
  tn = np.sum(~truth & ~preds & observed, 0)
  return {'sensitivity': _ratio(tp, tp + fn), 'specificity': _ratio(tn, tn + fp),
          'f1': _ratio(2 * tp, 2 * tp + fp + fn)}


def _ratio(num, den) -> np.ndarray:
  return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def _mean_defined(values) -> Optional[float]:
  """Mean of the entries that are neither None nor NaN; None if there are none."""
  kept = [float(v) for v in values if v is not None and not np.isnan(v)]
  return float(np.mean(kept)) if kept else None


# ---------------------------------------------------------------- calibration


def softmax_calibration_inputs(probs, labels) -> Tuple[np.ndarray, np.ndarray]:
  """(confidences [n], correct [n] bool) of softmax predictions: the top-label confidence
  max(probs) and whether the argmax is the label. probs [n, k], labels [n]."""
  probs, labels = _check_softmax(probs, labels, 0.5, binary=False)
  return probs.max(-1), probs.argmax(-1) == labels


def multilabel_calibration_inputs(probs, labels) -> Tuple[np.ndarray, np.ndarray]:
  """(confidences [m], correct [m] bool) of multilabel predictions: every observed (example,
  label) entry as a binary prediction, confidence max(p, 1 - p), correct iff
  (p > 0.5) == label. probs, labels [n, k]."""
  probs, labels = _check_multilabel(probs, labels, 0.5)
  observed = labels != MISSING
  p, y = probs[observed], labels[observed]
  return np.maximum(p, 1 - p), (p > 0.5) == (y == 1)


def reliability_bins(confidences, correct, num_bins: int = NUM_BINS) -> dict:
  """Per-bin statistics of a reliability diagram.

  Args:
    confidences: [m] confidences in [0, 1].
    correct: [m] bool (or 0/1), whether each prediction was right.
    num_bins: number of equal-width bins over [0, 1]; bin b covers
      (edges[b], edges[b + 1]], and bin 0 also holds confidence 0.

  Returns:
    {'edges': [num_bins + 1], 'count': [num_bins] int, 'confidence':
    [num_bins] mean confidence, 'accuracy': [num_bins] fraction correct};
    means are NaN for empty bins.
  """
  confidences, correct = _validate_calibration(confidences, correct, num_bins)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  which = np.searchsorted(edges[1:-1], confidences, side='left')  # right-closed bins
  count = np.bincount(which, minlength=num_bins)
  with np.errstate(invalid='ignore', divide='ignore'):
    mean_conf = np.bincount(which, confidences, num_bins) / count
    accuracy = np.bincount(which, correct.astype(np.float64), num_bins) / count
  return {'edges': edges, 'count': count, 'confidence': mean_conf, 'accuracy': accuracy}


def expected_calibration_error(confidences, correct, num_bins: int = NUM_BINS) -> float:
  """sum over bins of (bin count / m) * |accuracy - mean confidence|.

  Args:
    confidences: [m] confidences in [0, 1], m > 0.
    correct: [m] bool (or 0/1).
    num_bins: equal-width bins, as in `reliability_bins`.

  Returns:
    The ECE, a float in [0, 1].
  """
  bins = reliability_bins(confidences, correct, num_bins)
  full = bins['count'] > 0
  gaps = np.abs(bins['accuracy'][full] - bins['confidence'][full])
  return float(np.sum(bins['count'][full] * gaps) / np.sum(bins['count']))


# ---------------------------------------------------------------- validation


def _check_softmax(probs, labels, threshold, binary: bool):
  """Checks softmax probs [n, k] and class ids [n]; returns (float64 probs, int64 labels)."""
  probs, labels = _check_common(probs, labels, threshold)
  k = probs.shape[1]
  if binary and k != 2:
    raise ValueError(f'binary metrics need probs [n, 2]; got {k} columns.')
  if k < 2:
    raise ValueError(f'softmax probs need at least 2 columns; got {k}.')
  if np.any(probs.sum(-1) <= 0):
    raise ValueError('softmax probs have rows summing to 0.')
  if labels.shape != probs.shape[:1]:
    raise ValueError(f'labels must be [n] class ids for probs {probs.shape}; got shape '
                     f'{labels.shape}.')
  return probs, _integer_labels(labels, 0, k - 1)


def _check_multilabel(probs, labels, threshold):
  """Checks sigmoid probs [n, k] and labels [n, k] in {1, 0, -1}; returns float64 / int64."""
  probs, labels = _check_common(probs, labels, threshold)
  if labels.shape != probs.shape:
    raise ValueError(f'multilabel metrics need labels of shape {probs.shape}; got '
                     f'{labels.shape}.')
  return probs, _integer_labels(labels, MISSING, 1)


def _check_common(probs, labels, threshold):
  probs, labels = np.asarray(probs), np.asarray(labels)
  if probs.ndim != 2:
    raise ValueError(f'probs must be [n, classes]; got shape {probs.shape}.')
  if labels.ndim not in (1, 2):
    raise ValueError(f'labels must be [n] or [n, labels]; got shape {labels.shape}.')
  if len(labels) != len(probs):
    raise ValueError(f'probs has {len(probs)} examples but labels has {len(labels)}.')
  if len(probs) == 0:
    raise ValueError('no examples: probs and labels are empty.')
  if not 0.0 <= threshold <= 1.0:
    raise ValueError(f'threshold must lie in [0, 1]; got {threshold}.')
  probs = probs.astype(np.float64)
  if not np.all(np.isfinite(probs)):
    raise ValueError(f'probs contain {np.sum(~np.isfinite(probs))} NaN or infinite values.')
  if probs.min() < 0 or probs.max() > 1 + _PROB_TOLERANCE:
    raise ValueError(f'probs must lie in [0, 1]; got [{probs.min()}, {probs.max()}].')
  return np.minimum(probs, 1.0), labels


def _integer_labels(labels, low: int, high: int) -> np.ndarray:
  if labels.dtype.kind not in 'biu':
    if labels.dtype.kind != 'f' or not np.all(labels == np.round(labels)):
      raise ValueError(f'labels must be integers; got dtype {labels.dtype}.')
  labels = labels.astype(np.int64)
  if labels.min() < low or labels.max() > high:
    raise ValueError(f'these probabilities need labels in [{low}, {high}]; got values in '
                     f'[{labels.min()}, {labels.max()}].')
  return labels


def _validate_calibration(confidences, correct, num_bins):
  """Checks calibration inputs; returns (float64 confidences [m], bool correct [m])."""
  confidences, correct = np.asarray(confidences, np.float64), np.asarray(correct)
  if confidences.ndim != 1 or correct.shape != confidences.shape:
    raise ValueError(f'confidences and correct must both be [m]; '
                     f'got {confidences.shape} and {correct.shape}.')
  if len(confidences) == 0:
    raise ValueError('no predictions: confidences is empty.')
  if not np.all(np.isfinite(confidences)) or confidences.min() < 0 or confidences.max() > 1:
    raise ValueError('confidences must be finite and lie in [0, 1].')
  if not np.all((correct == 0) | (correct == 1)):
    raise ValueError('correct must be bool or 0/1.')
  if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
    raise ValueError(f'num_bins must be a positive integer; got {num_bins!r}.')
  return confidences, correct.astype(bool)


# ---------------------------------------------------------------- segmentation


def segmentation_metrics(pred, masks, num_classes: int) -> dict:
  """Dice, IoU and pixel accuracy of predicted class maps over a whole split.

  Per class, true and false positives and false negatives are counted over every pixel of the
  split (the way nnU-Net and the MSD challenges aggregate), then Dice = 2 TP / (2 TP + FP + FN)
  and IoU = TP / (TP + FP + FN). 'dice' and 'iou' are means over the foreground classes
  (1 .. k-1) that occur in the targets or predictions; class 0 is background.

  Args:
    pred: [n, ...spatial] predicted class ids.
    masks: [n, ...spatial] target class ids in [0, num_classes).
    num_classes: k, background included (k >= 2).

  Returns:
    {'dice', 'iou', 'pixel_accuracy', 'dice_per_class' (k values, background first, None where
    a class occurs nowhere)}.
  """
  pred, masks = np.asarray(pred), np.asarray(masks)
  if pred.shape != masks.shape or pred.ndim < 2 or len(pred) == 0:
    raise ValueError(f'pred and masks must both be [n, ...spatial], n > 0; got {pred.shape} '
                     f'and {masks.shape}.')
  for name, values in (('pred', pred), ('masks', masks)):
    if values.min() < 0 or values.max() >= num_classes:
      raise ValueError(f'{name} class ids must lie in [0, {num_classes}); got '
                       f'[{values.min()}, {values.max()}].')
  confusion = np.bincount(masks.astype(np.int64).ravel() * num_classes + pred.ravel(),
                          minlength=num_classes ** 2).reshape(num_classes, num_classes)
  tp = np.diag(confusion).astype(np.float64)
  fp, fn = confusion.sum(0) - tp, confusion.sum(1) - tp
  dice = _ratio(2 * tp, 2 * tp + fp + fn)
  iou = _ratio(tp, tp + fp + fn)
  return {
      'dice': _mean_defined(dice[1:]),
      'iou': _mean_defined(iou[1:]),
      'pixel_accuracy': float(tp.sum() / confusion.sum()),
      'dice_per_class': [None if np.isnan(d) else float(d) for d in dice],
  }
