"""Task kinds (jmed.tasks): each kind's loss, predictions, metrics, label checks and selection
rules against independent references, and the rule that nothing outside jmed/tasks dispatches
on a task's name."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn import metrics as skm

from conftest import REPO
from jmed import privacy, segmentation, survival, tasks
from jmed.errors import DataError

KEY = jax.random.key(0)


def _logits(shape, seed=0):
  return jax.random.normal(jax.random.key(seed), shape)


# ---------------------------------------------------------------- the registry


def test_registry_names_and_lookup():
  assert set(tasks.TASKS) == {'binary', 'multiclass', 'multilabel', 'regression', 'survival',
                              'segmentation', 'treatment_effect', 'tagging', 'masked_lm',
                              'skipgram'}
  for name, task in tasks.TASKS.items():
    assert task.name == name and tasks.get(name) is task and tasks.get(task) is task
    assert task.default_metric in task.metric_names and 'loss' in task.metric_names
    assert task.select_metric('auto') == task.default_metric
    hash(task)  # static arguments of jit must hash
  with pytest.raises(ValueError, match='valid tasks: binary, multiclass'):
    tasks.get('ranking')


@pytest.mark.parametrize('name, auto, lower', [
    ('binary', 'auroc', False), ('multiclass', 'auroc', False), ('multilabel', 'auroc', False),
    ('regression', 'rmse', True), ('survival', 'c_index', False),
    ('segmentation', 'dice', False)])
def test_selection_metric_and_direction(name, auto, lower):
  task = tasks.get(name)
  assert task.select_metric('auto') == auto
  assert task.lower_is_better(auto) is lower
  assert task.lower_is_better('loss')
  with pytest.raises(ValueError, match=f"does not apply to task '{name}'"):
    task.select_metric('kappa')


def test_no_task_name_dispatch_outside_the_task_definitions():
  """`grep "task =="`: code outside jmed/tasks asks the task object instead."""
  pattern = re.compile(r"""task\s*(==|!=|\bin\b|\bnot in\b)\s*['"(]""")
  offenders = []
  for path in sorted((REPO / 'jmed').rglob('*.py')):
    if path.parent.name == 'tasks':
      continue
    for number, line in enumerate(path.read_text().splitlines(), start=1):
      if pattern.search(line):
        offenders.append(f'{path.relative_to(REPO)}:{number}: {line.strip()}')
  assert not offenders, '\n'.join(offenders)


# ---------------------------------------------------------------- classification


def test_multiclass_loss_predictions_and_metrics():
  task = tasks.get('multiclass')
  logits, labels = _logits((6, 4)), jnp.array([0, 1, 2, 3, 0, 1])
  np.testing.assert_allclose(task.loss(logits, labels),
                             optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  probs = np.asarray(task.predict(logits))
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
  accuracy = task.train_metrics(logits, labels)['accuracy']
  np.testing.assert_array_equal(accuracy, np.argmax(logits, -1) == labels)
  metrics = task.evaluate(probs, np.asarray(labels))
  assert metrics['accuracy'] == pytest.approx(float(np.mean(accuracy)))
  assert task.nll(probs, labels) == pytest.approx(
      float(np.mean(task.loss(logits, labels))), rel=1e-5)


def test_binary_metrics_read_the_positive_column():
  task = tasks.get('binary')
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 200)
  scores = np.clip(0.3 * labels + rng.uniform(0, 0.7, 200), 0, 1)
  metrics = task.evaluate(np.stack([1 - scores, scores], 1), labels)
  assert metrics['auroc'] == pytest.approx(skm.roc_auc_score(labels, scores))
  assert metrics['f1'] == pytest.approx(skm.f1_score(labels, scores > 0.5))


def test_class_weights_are_balanced_and_weight_the_objective():
  task = tasks.get('multiclass')
  labels = np.array([0, 0, 0, 1, 2, 2])
  weights = task.class_weights(labels, 4)
  assert weights == pytest.approx((6 / 12, 6 / 4, 6 / 8, 0.0))  # n / (classes * count)
  np.testing.assert_allclose(task.example_weights(jnp.asarray(labels), weights),
                             [0.5, 0.5, 0.5, 1.5, 0.75, 0.75])
  for name in ('multilabel', 'regression', 'survival', 'segmentation'):
    with pytest.raises(ValueError, match='single-label classification'):
      tasks.get(name).class_weights(labels, 4)


@pytest.mark.parametrize('name, labels, outputs, match', [
    ('multiclass', np.array([0, 4], np.int32), 4, r'labels outside \[0, 3\]'),
    ('multiclass', np.array([0.0, 1.0], np.float32), 4, 'expected int32'),
    ('binary', np.array([[0], [1]], np.int32), 2, r'expected int32 \[2\]'),
    ('multilabel', np.array([[0, -2]], np.int32), 2, r'outside \[-1, 1\]'),
    ('regression', np.array([[np.nan]], np.float32), 1, 'NaN'),
    ('survival', np.array([[1.0, 2.0]], np.float32), 1, 'events must be 1'),
    ('survival', np.array([[-1.0, 1.0]], np.float32), 1, 'times must be finite and >= 0'),
    ('segmentation', np.zeros((1, 4, 5), np.int32), 3, r'expected int32 \[1, 4, 4\]'),
    ('segmentation', np.full((1, 4, 4), 3, np.int32), 3, r'mask class ids outside \[0, 2\]'),
])
def test_bad_labels_name_the_split(name, labels, outputs, match):
  with pytest.raises(DataError, match=f'demo/train: .*{match}'):
    tasks.get(name).check_labels(labels, outputs, (4, 4, 1), 'demo/train')


@pytest.mark.parametrize('name, outputs, match', [
    ('binary', 3, 'binary needs 2 outputs'), ('multiclass', 1, 'at least 2 classes'),
    ('survival', 2, 'survival needs 1 output'), ('segmentation', 1, 'at least 2 classes')])
def test_output_counts_are_checked(name, outputs, match):
  with pytest.raises(DataError, match=match):
    tasks.get(name).check_outputs(outputs, 'demo')


@pytest.mark.parametrize('name, cell, value', [
    ('binary', '1', 1), ('binary', '0.0', 0), ('multiclass', '3', 3),
    ('multilabel', '', -1), ('multilabel', '1.0', 1), ('regression', ' -2.5 ', -2.5)])
def test_label_cells_parse(name, cell, value):
  assert tasks.get(name).parse_label(cell) == value


@pytest.mark.parametrize('name, cell, match', [
    ('binary', '2', 'not 0 or 1'), ('binary', '', 'not 0 or 1'),
    ('multiclass', '1.5', 'class id'), ('multilabel', 'yes', 'empty'),
    ('regression', 'inf', 'finite'), ('survival', '1', 'single column')])
def test_bad_label_cells_say_what_is_allowed(name, cell, match):
  with pytest.raises(ValueError, match=match):
    tasks.get(name).parse_label(cell)


# ---------------------------------------------------------------- multi-label


def test_multilabel_missing_labels_give_no_loss_and_no_gradient():
  task = tasks.get('multilabel')
  logits = _logits((3, 4))
  labels = jnp.array([[1, 0, -1, 1], [-1, -1, -1, -1], [0, 1, 1, -1]])
  grads = jax.grad(lambda x: task.loss(x, labels).sum())(logits)
  np.testing.assert_array_equal(np.asarray(grads)[np.asarray(labels) < 0], 0.0)
  assert float(task.loss(logits, labels)[1]) == 0.0
  bce = optax.sigmoid_binary_cross_entropy(logits[0], jnp.array([1.0, 0.0, 0.0, 1.0]))
  np.testing.assert_allclose(task.loss(logits, labels)[0], (bce.sum() - bce[2]) / 4, rtol=1e-6)
  accuracy = task.train_metrics(logits, labels)['accuracy']
  assert float(accuracy[1]) == 1.0  # nothing observed counts as right


def test_multilabel_entropy_is_the_sum_of_bernoulli_entropies():
  task = tasks.get('multilabel')
  h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
  np.testing.assert_allclose(task.entropy(np.array([[0.5, 0.9]])), [h(0.5) + h(0.9)],
                             rtol=1e-6)


# ---------------------------------------------------------------- regression


def test_regression_standardises_on_training_targets():
  train = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]], np.float32)
  task = tasks.get('regression').fit_to(train)
  assert task.target_mean == pytest.approx((3.0, 10.0))
  assert task.target_std == pytest.approx((math.sqrt(8 / 3), 1.0))  # a constant target: 1
  assert task.summary()['target_scale']['mean'] == pytest.approx([3.0, 10.0])
  outputs = jnp.array([[0.5, -1.0]])
  labels = jnp.array([[4.0, 9.0]])
  z = (np.array([4.0, 9.0]) - [3.0, 10.0]) / [math.sqrt(8 / 3), 1.0]
  np.testing.assert_allclose(task.loss(outputs, labels), [np.mean((np.array([0.5, -1]) - z) ** 2)],
                             rtol=1e-5)
  np.testing.assert_allclose(task.predict(outputs),
                             [[3.0 + 0.5 * math.sqrt(8 / 3), 9.0]], rtol=1e-5)
  assert task.train_metrics(outputs, labels) == {}
  hash(task)
  assert tasks.get('regression').summary() == {}  # unfitted: no scale, identity


# ---------------------------------------------------------------- survival


def test_survival_loss_is_the_cox_loss_and_metrics_the_c_index():
  task = tasks.get('survival')
  rng = np.random.default_rng(0)
  risk = rng.normal(size=12).astype(np.float32)
  labels = np.stack([rng.exponential(size=12), rng.integers(0, 2, 12)], 1).astype(np.float32)
  valid = jnp.asarray((np.arange(12) < 10).astype(np.float32))
  losses = task.loss(jnp.asarray(risk)[:, None], jnp.asarray(labels), valid)
  cox = survival.cox_loss(risk, labels[:, 0], labels[:, 1], valid)
  # The mean over the real rows (as eval_step takes it) is the Cox loss per event.
  np.testing.assert_allclose(float((losses * valid).sum() / valid.sum()), float(cox), rtol=1e-5)
  np.testing.assert_allclose(task.predict(jnp.asarray(risk)[:, None]), risk)
  metrics = task.evaluate(risk[:10], labels[:10])
  assert metrics['c_index'] == pytest.approx(
      survival.concordance_index(labels[:10, 0], risk[:10], labels[:10, 1]))
  assert 'loss' in metrics  # the split's own Cox loss, not a mean of batch losses
  assert not task.per_example_loss


def test_dp_sgd_applies_per_task_and_model():
  privacy.check_applies(tasks.get('binary'), {})
  with pytest.raises(ValueError, match="task 'survival' couples"):
    privacy.check_applies(tasks.get('survival'), {})
  with pytest.raises(ValueError, match='BatchNorm'):
    privacy.check_applies(tasks.get('binary'), {'batch_stats': {}})


# ---------------------------------------------------------------- segmentation


def test_segmentation_loss_predictions_and_dice_against_sklearn():
  task = tasks.get('segmentation')
  assert task.label_shape(3, (16, 12, 1)) == (16, 12) and task.spatial_labels
  assert task.label_shape(3, (8, 16, 12, 1)) == (8, 16, 12)  # volumes
  logits = _logits((2, 8, 8, 3))
  masks = jax.random.randint(KEY, (2, 8, 8), 0, 3)
  np.testing.assert_allclose(task.loss(logits, masks), segmentation.dice_ce_loss(logits, masks))
  probs = np.asarray(task.predict(logits))
  assert probs.shape == (2, 8, 8, 3)
  metrics = task.evaluate(probs, np.asarray(masks))
  pred = probs.argmax(-1).ravel()
  f1 = skm.f1_score(np.ravel(masks), pred, labels=[0, 1, 2], average=None)
  np.testing.assert_allclose(metrics['dice_per_class'], f1, rtol=1e-6)
  assert metrics['dice'] == pytest.approx(f1[1:].mean())  # foreground classes
  iou = skm.jaccard_score(np.ravel(masks), pred, labels=[1, 2], average=None)
  assert metrics['iou'] == pytest.approx(iou.mean())
  assert metrics['pixel_accuracy'] == pytest.approx(np.mean(pred == np.ravel(masks)))
