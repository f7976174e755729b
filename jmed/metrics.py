"""Evaluation metrics from gathered predictions, via scikit-learn."""

import numpy as np
from sklearn import metrics as skm


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict:
  """Accuracy, and AUROC where it is defined.

  Args:
    probs: [n, classes] class probabilities.
    labels: [n] integer class ids.

  Returns:
    {'accuracy': ..., 'auroc': ...}; AUROC is binary for two classes (score of class 1), macro
    one-vs-rest otherwise, and None when the labels hold a single class.
  """
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  out = {'accuracy': float(np.mean(probs.argmax(-1) == labels))}
  present = np.unique(labels)
  if len(present) < 2:
    out['auroc'] = None
  elif probs.shape[1] == 2:
    out['auroc'] = float(skm.roc_auc_score(labels, probs[:, 1]))
  elif len(present) == probs.shape[1]:
    out['auroc'] = float(skm.roc_auc_score(labels, probs / probs.sum(-1, keepdims=True),
                                           multi_class='ovr'))
  else:
    out['auroc'] = None
  return out
