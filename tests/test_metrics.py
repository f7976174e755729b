"""jmed.metrics against scikit-learn and independent implementations."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from jmed import metrics as jm


def _softmax(logits):
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _classification_data(n, k, seed=0):
  """Softmax probs [n, k] loosely correlated with labels [n] in [0, k)."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, k, n)
  logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels]
  return _softmax(logits), labels


def _multilabel_data(n, k, seed=0, missing=0.2):
  """Sigmoid probs [n, k] and labels [n, k] in {1, 0, -1} (about `missing` of them -1)."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, (n, k))
  probs = 1 / (1 + np.exp(-(rng.normal(size=(n, k)) + 2.0 * (labels - 0.5))))
  labels = np.where(rng.random((n, k)) < missing, -1, labels)
  return probs, labels


def _specificity(labels, preds, positive):
  """TN / (TN + FP) for class `positive`, from sklearn's confusion matrix."""
  tn, fp, _, _ = skm.confusion_matrix(labels == positive, preds == positive,
                                      labels=[False, True]).ravel()
  return tn / (tn + fp)


def _ece_loop(confidences, correct, num_bins):
  """Straightforward ECE: bins (lo, hi], the first also holding 0."""
  edges = np.linspace(0, 1, num_bins + 1)
  total = 0.0
  for b in range(num_bins):
    lo, hi = edges[b], edges[b + 1]
    in_bin = [(c > lo or (b == 0 and c == 0)) and c <= hi for c in confidences]
    in_bin = np.array(in_bin)
    if in_bin.any():
      gap = abs(np.mean(correct[in_bin]) - np.mean(confidences[in_bin]))
      total += in_bin.sum() / len(confidences) * gap
  return total


# ---------------------------------------------------------------- binary


@pytest.mark.parametrize('threshold', [0.5, 0.3])
def test_binary_matches_sklearn(threshold):
  probs, labels = _classification_data(300, 2)
  out = jm.binary_metrics(probs, labels, threshold=threshold)
  preds = (probs[:, 1] > threshold).astype(int)
  assert out['accuracy'] == pytest.approx(skm.accuracy_score(labels, preds))
  assert out['auroc'] == pytest.approx(skm.roc_auc_score(labels, probs[:, 1]))
  assert out['auprc'] == pytest.approx(skm.average_precision_score(labels, probs[:, 1]))
  assert out['f1'] == pytest.approx(skm.f1_score(labels, preds))
  assert out['sensitivity'] == pytest.approx(skm.recall_score(labels, preds))
  assert out['specificity'] == pytest.approx(_specificity(labels, preds, 1))
  assert out['ece'] == pytest.approx(
      _ece_loop(probs.max(-1), probs.argmax(-1) == labels, 15))
  assert set(out) == {'accuracy', 'auroc', 'auprc', 'sensitivity', 'specificity', 'f1', 'ece'}


def test_binary_accuracy_at_half_is_argmax_even_on_ties():
  probs = np.array([[0.5, 0.5], [0.3, 0.7], [0.8, 0.2], [0.5, 0.5]])
  labels = np.array([0, 1, 1, 1])
  out = jm.binary_metrics(probs, labels)
  assert out['accuracy'] == pytest.approx(np.mean(probs.argmax(-1) == labels)) == 0.5


def test_binary_sensitivity_specificity_helper():
  rng = np.random.default_rng(0)
  labels, preds = rng.integers(0, 2, 100), rng.integers(0, 2, 100)
  sens, spec = jm.binary_sensitivity_specificity(labels, preds)
  assert sens == pytest.approx(skm.recall_score(labels, preds))
  assert spec == pytest.approx(_specificity(labels, preds, 1))
  assert jm.binary_sensitivity_specificity([0, 0], [0, 1]) == (None, 0.5)


# ---------------------------------------------------------------- multiclass


def test_multiclass_matches_sklearn():
  probs, labels = _classification_data(400, 5)
  out = jm.multiclass_metrics(probs, labels)
  preds = probs.argmax(-1)
  onehot = np.eye(5)[labels]
  assert out['accuracy'] == pytest.approx(skm.accuracy_score(labels, preds))
  assert out['auroc'] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class='ovr'))
  assert out['auprc'] == pytest.approx(skm.average_precision_score(onehot, probs))
  assert out['f1'] == pytest.approx(skm.f1_score(labels, preds, average='macro'))
  assert out['sensitivity'] == pytest.approx(skm.recall_score(labels, preds, average='macro'))
  assert out['specificity'] == pytest.approx(
      np.mean([_specificity(labels, preds, c) for c in range(5)]))
  assert out['ece'] == pytest.approx(_ece_loop(probs.max(-1), preds == labels, 15))


def test_multiclass_renormalises_rows_for_auroc():
  probs, labels = _classification_data(200, 4)
  scaled = probs * 0.9  # rows sum to 0.9; the AUROC sees them renormalised
  out = jm.multiclass_metrics(scaled, labels)
  assert out['auroc'] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class='ovr'))


def test_multiclass_with_an_absent_class_averages_present_classes():
  probs, labels = _classification_data(300, 4)
  labels = np.where(labels == 3, 0, labels)  # class 3 never occurs
  out = jm.multiclass_metrics(probs, labels)
  preds = probs.argmax(-1)
  present = [0, 1, 2]
  assert out['auroc'] == pytest.approx(
      np.mean([skm.roc_auc_score(labels == c, probs[:, c]) for c in present]))
  assert out['sensitivity'] == pytest.approx(
      skm.recall_score(labels, preds, labels=present, average='macro'))
  assert out['f1'] == pytest.approx(skm.f1_score(labels, preds, average='macro'))


def test_two_columns_as_multiclass_keeps_the_auroc():
  probs, labels = _classification_data(200, 2)
  binary = jm.binary_metrics(probs, labels)
  multiclass = jm.multiclass_metrics(probs, labels)
  assert multiclass['auroc'] == pytest.approx(binary['auroc'])
  assert multiclass['accuracy'] == pytest.approx(binary['accuracy'])


# ---------------------------------------------------------------- multilabel


@pytest.mark.parametrize('threshold', [0.5, 0.6])
def test_multilabel_with_missing_labels_matches_per_column_sklearn(threshold):
  probs, labels = _multilabel_data(300, 6)
  labels[:, 4] = np.where(labels[:, 4] == -1, -1, 1)  # label 4: positives only -> no AUROC
  labels[:, 5] = -1  # label 5: never observed
  out = jm.multilabel_metrics(probs, labels, threshold=threshold)

  per = {k: [] for k in ('accuracy', 'auroc', 'auprc', 'sensitivity', 'specificity', 'f1')}
  aurocs = []
  for j in range(6):
    seen = labels[:, j] != -1
    y, p = labels[seen, j], probs[seen, j]
    preds = (p > threshold).astype(int)
    if len(y) == 0:
      aurocs.append(None)
      continue
    per['accuracy'].append(skm.accuracy_score(y, preds))
    per['sensitivity'].append(skm.recall_score(y, preds))
    per['f1'].append(skm.f1_score(y, preds))  # defined: label 4 has positives
    if len(np.unique(y)) == 2:
      aurocs.append(skm.roc_auc_score(y, p))
      per['auroc'].append(aurocs[-1])
      per['auprc'].append(skm.average_precision_score(y, p))
      per['specificity'].append(_specificity(y, preds, 1))
    else:
      aurocs.append(None)
  for name, values in per.items():
    assert out[name] == pytest.approx(np.mean(values)), name
  assert out['auroc_per_label'][:4] == pytest.approx(aurocs[:4])
  assert out['auroc_per_label'][4:] == [None, None]

  seen = labels != -1
  p, y = probs[seen], labels[seen]
  assert out['ece'] == pytest.approx(_ece_loop(np.maximum(p, 1 - p), (p > 0.5) == y, 15))


def test_multilabel_without_missing_is_medmnist_mean_auc():
  probs, labels = _multilabel_data(200, 3, missing=0.0)
  out = jm.multilabel_metrics(probs, labels)
  expected = np.mean([skm.roc_auc_score(labels[:, j], probs[:, j]) for j in range(3)])
  assert out['auroc'] == pytest.approx(expected)
  assert out['accuracy'] == pytest.approx(
      np.mean([skm.accuracy_score(labels[:, j], probs[:, j] > 0.5) for j in range(3)]))
  json.dumps(out)  # the training loop logs it as JSON


def test_multilabel_all_missing_is_undefined():
  probs, labels = _multilabel_data(20, 3)
  out = jm.multilabel_metrics(probs, np.full_like(labels, -1))
  assert all(out[k] is None for k in ('accuracy', 'auroc', 'auprc', 'sensitivity', 'f1', 'ece'))
  assert out['auroc_per_label'] == [None, None, None]


# ---------------------------------------------------------------- single class


def test_single_class_present_gives_none():
  probs, _ = _classification_data(50, 2)
  out = jm.binary_metrics(probs, np.zeros(50, int))
  assert out['auroc'] is None and out['auprc'] is None and out['sensitivity'] is None
  assert out['specificity'] == pytest.approx(np.mean(probs[:, 1] <= 0.5))
  assert out['accuracy'] == pytest.approx(np.mean(probs[:, 1] <= 0.5))

  probs, _ = _classification_data(50, 4)
  out = jm.multiclass_metrics(probs, np.full(50, 2))
  assert out['auroc'] is None and out['auprc'] is None

  probs, labels = _multilabel_data(50, 2, missing=0.0)
  out = jm.multilabel_metrics(probs, np.ones_like(labels))
  assert out['auroc'] is None and out['auroc_per_label'] == [None, None]


# ---------------------------------------------------------------- calibration


def test_ece_hand_computed():
  conf = np.array([0.95, 0.85, 0.55, 0.15])
  correct = np.array([True, False, True, False])
  # bins of width 0.2: (0.8, 1] -> |0.5 - 0.9| x 2; (0.4, 0.6] -> |1 - 0.55|; [0, 0.2] -> 0.15.
  assert jm.expected_calibration_error(conf, correct, num_bins=5) == pytest.approx(0.35)
  bins = jm.reliability_bins(conf, correct, num_bins=5)
  np.testing.assert_array_equal(bins['count'], [1, 0, 1, 0, 2])
  np.testing.assert_allclose(bins['confidence'], [0.15, np.nan, 0.55, np.nan, 0.9])
  np.testing.assert_allclose(bins['accuracy'], [0.0, np.nan, 1.0, np.nan, 0.5])
  np.testing.assert_allclose(bins['edges'], np.linspace(0, 1, 6))


def test_ece_matches_loop_and_bin_edges():
  rng = np.random.default_rng(0)
  conf = np.concatenate([rng.random(500), np.linspace(0, 1, 16), [0.0, 1.0]])
  correct = rng.random(len(conf)) < conf
  for num_bins in (1, 10, 15):
    assert jm.expected_calibration_error(conf, correct, num_bins) == pytest.approx(
        _ece_loop(conf, correct, num_bins))
  assert jm.reliability_bins(conf, correct)['count'].sum() == len(conf)
  assert jm.expected_calibration_error([1.0, 1.0], [1, 1]) == 0.0


def test_calibration_inputs_per_kind():
  probs = np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
  conf, correct = jm.softmax_calibration_inputs(probs, np.array([1, 2]))
  np.testing.assert_allclose(conf, [0.7, 0.6])
  np.testing.assert_array_equal(correct, [True, False])
  conf, correct = jm.multilabel_calibration_inputs(np.array([[0.8, 0.3]]), np.array([[0, -1]]))
  np.testing.assert_allclose(conf, [0.8])
  np.testing.assert_array_equal(correct, [False])


# ---------------------------------------------------------------- inputs


def test_training_loop_call_accepts_float32_softmax():
  logits = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * 30
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs = probs / probs.sum(-1, keepdims=True)
  labels = np.arange(64, dtype=np.int32) % 3
  out = jm.multiclass_metrics(probs, labels)
  assert 0 <= out['accuracy'] <= 1 and 0 <= out['auroc'] <= 1
  json.dumps(out)


_PROBS2, _LABELS2 = _classification_data(10, 2)
_PROBS3, _LABELS3 = _classification_data(10, 3)


_BINARY, _MULTICLASS, _MULTILABEL = jm.binary_metrics, jm.multiclass_metrics, jm.multilabel_metrics


@pytest.mark.parametrize('metrics, probs, labels, kwargs, match', [
    (_MULTICLASS, _PROBS3, _LABELS3[:9], {}, 'examples'),
    (_MULTICLASS, _PROBS3[:, 0], _LABELS3, {}, r'probs must be \[n, classes\]'),
    (_MULTICLASS, _PROBS3, _LABELS3[:, None, None], {}, r'labels must be \[n\]'),
    (_MULTICLASS, np.where(np.eye(10, 3) > 0, np.nan, _PROBS3), _LABELS3, {}, 'NaN'),
    (_MULTICLASS, -_PROBS3, _LABELS3, {}, r'lie in \[0, 1\]'),
    (_MULTICLASS, _PROBS3, np.full(10, 3), {}, r'labels in \[0, 2\]'),
    (_MULTICLASS, _PROBS3, np.full(10, -1), {}, r'labels in \[0, 2\]'),
    (_MULTICLASS, _PROBS3[:, :1], _LABELS3 * 0, {}, 'at least 2 columns'),
    (_BINARY, _PROBS2, np.full(10, 2), {}, r'labels in \[0, 1\]'),
    (_MULTILABEL, _PROBS3, np.full((10, 3), 2), {}, r'labels in \[-1, 1\]'),
    (_MULTILABEL, _PROBS3, np.full((10, 3), -2), {}, r'labels in \[-1, 1\]'),
    (_MULTICLASS, _PROBS3, np.full(10, 0.5), {}, 'integers'),
    (_BINARY, _PROBS3, _LABELS3, {}, r'\[n, 2\]'),
    (_BINARY, _PROBS2, _LABELS2[:, None], {}, r'labels must be \[n\] class ids'),
    (_MULTILABEL, _PROBS3, _LABELS3, {}, 'shape'),
    (_BINARY, _PROBS2, _LABELS2, {'threshold': 1.5}, 'threshold'),
    (_MULTILABEL, _PROBS3, np.ones((10, 3), int), {'threshold': -0.1}, 'threshold'),
    (_BINARY, np.zeros((0, 2)), np.zeros(0, int), {}, 'no examples'),
    (_MULTILABEL, np.zeros((0, 2)), np.zeros((0, 2), int), {}, 'no examples'),
    (jm.softmax_calibration_inputs, _PROBS3, np.full(10, 3), {}, 'labels in'),
    (jm.multilabel_calibration_inputs, _PROBS3, _LABELS3, {}, 'shape'),
])
def test_invalid_inputs_raise(metrics, probs, labels, kwargs, match):
  with pytest.raises(ValueError, match=match):
    metrics(probs, labels, **kwargs)


@pytest.mark.parametrize('conf, correct, num_bins', [
    ([0.5, np.nan], [1, 0], 15),
    ([0.5, 1.2], [1, 0], 15),
    ([0.5], [1, 0], 15),
    ([], [], 15),
    ([0.5], [2], 15),
    ([0.5], [1], 0),
])
def test_invalid_calibration_inputs_raise(conf, correct, num_bins):
  with pytest.raises(ValueError):
    jm.expected_calibration_error(conf, correct, num_bins)
