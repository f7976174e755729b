"""Pure training and evaluation steps: `state, metrics = train_step(state, batch)`.

A batch is a dict: 'image' [batch, ...] model inputs (images [batch, height, width, channels],
token ids [batch, length], feature vectors [batch, features], ...), 'label', and for evaluation
'mask' [batch] (1 for a real example, 0 for padding). Labels are [batch] int32 class ids for task
'binary' / 'multiclass' (softmax cross-entropy); [batch, labels] int32 with 1 / 0 and -1 for a
missing label for 'multilabel' (sigmoid cross-entropy over the observed labels); or [batch, 2]
float32 (time, event) for 'survival', where the model's first output is a log-risk score and the
loss is Cox's negative log partial likelihood over the global batch (Breslow ties); or
[batch, targets] float32 for 'regression' (mean squared error; `fit` standardises the targets).

`task` and `augment` are static: bind them with `functools.partial` before `jax.jit`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jmed import privacy as jprivacy
from jmed import survival
from jmed.data import augment as jaugment

TASKS = ('binary', 'multiclass', 'multilabel', 'survival', 'regression')


def cross_entropy(logits, labels):
  """Sparse categorical cross-entropy per example: logits [batch, classes], labels [batch]."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def masked_sigmoid_cross_entropy(logits, labels):
  """Per-example sigmoid cross-entropy over observed labels.

  Args:
    logits: [batch, labels].
    labels: [batch, labels] int, 1 / 0, -1 = missing (contributes no loss and no gradient).

  Returns:
    [batch]: the sum over observed labels divided by the number of labels, so every example
    weighs the same whatever its missing labels (DeepChem's weighting).
  """
  observed = (labels >= 0).astype(logits.dtype)
  losses = optax.sigmoid_binary_cross_entropy(logits, jnp.clip(labels, 0, 1).astype(logits.dtype))
  return (losses * observed).sum(-1) / labels.shape[-1]


def cox_loss_and_concordance(risk, labels, mask=None):
  """Cox loss and concordance within a batch, per example.

  Args:
    risk: [batch] log-risk scores (higher = earlier event).
    labels: [batch, 2] (time, event).
    mask: optional [batch], 0 on padding.

  Returns:
    (losses [batch] whose mean over the batch is `jmed.survival.cox_loss`,
     concordant [batch]: for an event, the fraction of later (comparable) examples it outranks;
     0.5 where it has none, so the mean is a rough in-batch C-index).
  """
  time, event = labels[:, 0], labels[:, 1]
  mask = jnp.ones_like(time) if mask is None else mask
  terms = survival.cox_terms(risk, time, event, mask)
  events = jnp.maximum((event * mask).sum(), 1)
  comparable = (time[:, None] < time[None, :]) & (event[:, None] * mask[:, None] > 0) & (
      mask[None, :] > 0)
  wins = jnp.where(risk[:, None] > risk[None, :], 1.0,
                   jnp.where(risk[:, None] == risk[None, :], 0.5, 0.0))
  pairs = comparable.sum(-1)
  concordant = jnp.where(pairs > 0, (wins * comparable).sum(-1) / jnp.maximum(pairs, 1), 0.5)
  return terms * mask.sum() / events, concordant


def squared_error(predictions, targets):
  """Per-example squared error averaged over targets: predictions, targets [batch, targets]."""
  return jnp.square(predictions.astype(jnp.float32) - targets).mean(-1)


def loss_and_correct(logits, labels, task: str, mask=None):
  """Per-example loss [batch] and correctness [batch] (multi-label: fraction of observed labels
  right at threshold 0.5; examples with no observed label count as right; survival: in-batch
  concordance, see `cox_loss_and_concordance`; regression: 0, it has no notion of right). `mask` [batch] matters only to 'survival', whose
  loss couples examples through risk sets."""
  if task not in TASKS:
    raise ValueError(f'task must be one of {TASKS}, got {task!r}.')
  if task == 'survival':
    return cox_loss_and_concordance(logits[:, 0], labels, mask)
  if task == 'regression':
    return squared_error(logits, labels), jnp.zeros(labels.shape[:1], jnp.float32)
  if task == 'multilabel':
    observed = labels >= 0
    right = ((logits > 0) == (labels == 1)) & observed
    correct = right.sum(-1) / jnp.maximum(observed.sum(-1), 1)
    correct = jnp.where(observed.any(-1), correct, 1.0)
    return masked_sigmoid_cross_entropy(logits, labels), correct
  return cross_entropy(logits, labels), (jnp.argmax(logits, -1) == labels).astype(jnp.float32)


def probabilities(logits, task: str):
  """Softmax class probabilities, independent sigmoid probabilities for 'multilabel', the
  log-risk score [batch] for 'survival', or the predictions [batch, targets] for 'regression'."""
  if task == 'survival':
    return logits[:, 0]
  if task == 'regression':
    return logits.astype(jnp.float32)
  return jax.nn.sigmoid(logits) if task == 'multilabel' else jax.nn.softmax(logits, -1)


def apply_model(state, params, images, *, train: bool, rng=None):
  """Runs the model on images [batch, ...]; returns (logits, updated batch_stats).

  In training mode mutable collections (BatchNorm statistics) are updated when the model has
  any, and dropout draws from `rng`. Shared by the classification and segmentation steps.
  """
  variables = {'params': params, **state.batch_stats}
  if not train:
    return state.apply_fn(variables, images, train=False), state.batch_stats
  if not state.batch_stats:
    return state.apply_fn(variables, images, train=True, rngs={'dropout': rng}), {}
  logits, new_stats = state.apply_fn(variables, images, train=True, rngs={'dropout': rng},
                                     mutable=list(state.batch_stats))
  return logits, dict(new_stats)


def train_step(state, batch, *, task: str = 'multiclass', augment=None, class_weights=None,
               privacy=None):
  """One optimizer step on a global batch; returns (new_state, metrics).

  Args:
    state: a `TrainState`.
    batch: {'image': [batch, ...], 'label': [batch], [batch, labels], [batch, 2] or
      [batch, targets]}.
    task: 'binary' | 'multiclass' | 'multilabel' | 'survival' | 'regression' (static).
    augment: None, a preset name or a `jmed.data.augment.AugmentConfig` (static); applied on
      device to the images with a key derived from the state's rng and step.
    class_weights: None, or a tuple of one loss weight per class (static; 'binary' and
      'multiclass'): the gradient follows the weighted mean loss, the metrics stay unweighted.
    privacy: None, or (l2_clip, noise_multiplier) (static) for a DP-SGD step: per-example
      gradients clipped and noised by `jmed.privacy.clipped_noisy_mean`. Needs a model without
      BatchNorm and a task whose loss is a sum over examples (not 'survival').

  Metrics are sums over the batch ('loss_sum', 'correct', 'count') so they add up across steps
  and devices without bias; divide by 'count' for means. A DP-SGD step adds 'clipped', the
  number of examples whose gradient was clipped.
  """
  rng = jax.random.fold_in(state.rng, state.step)  # dropout key
  images = batch['image']
  if augment is not None:
    images = jaugment.augment_batch(jax.random.fold_in(rng, 1), images, augment)

  def loss_fn(params, images, labels, rng):
    logits, new_stats = apply_model(state, params, images, train=True, rng=rng)
    losses, correct = loss_and_correct(logits, labels, task)
    objective = losses.mean()
    if class_weights is not None:
      weights = jnp.asarray(class_weights, losses.dtype)[labels]
      objective = (losses * weights).mean()
    return objective, (losses, correct, new_stats)

  extra = {}
  if privacy is None:
    (_, (losses, correct, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, images, batch['label'], rng)
  else:
    grads, losses, correct, num_clipped = _private_grads(
        loss_fn, state, images, batch['label'], rng, task, privacy)
    new_stats, extra = state.batch_stats, {'clipped': num_clipped}
  state = state.apply_gradients(grads=grads, batch_stats=new_stats)
  metrics = {
      'loss_sum': losses.sum(),
      'correct': correct.sum(),
      'count': jnp.asarray(losses.shape[0], jnp.int32),
      **extra,
  }
  return state, metrics


def _private_grads(loss_fn, state, images, labels, rng, task, privacy):
  """DP-SGD gradient of `loss_fn` (one example at a time, each with its own dropout key)."""
  if task == 'survival' or state.batch_stats:
    raise ValueError('DP-SGD needs per-example gradients: it does not apply to the Cox loss '
                     "('survival'), whose terms couple examples, nor to models with BatchNorm "
                     'statistics (use a model without BatchNorm).')
  l2_clip, noise_multiplier = privacy

  def example_loss(params, image, label, key):
    objective, (losses, correct, _) = loss_fn(params, image[None], label[None], key)
    return objective, (losses[0], correct[0])

  keys = jax.random.split(rng, images.shape[0])
  per_example, (losses, correct) = jprivacy.per_example_grads(
      example_loss, state.params, images, labels, keys)
  grads, num_clipped = jprivacy.clipped_noisy_mean(
      per_example, jax.random.fold_in(rng, 2), l2_clip, noise_multiplier)
  return grads, losses, correct, num_clipped


def train_steps(state, batches, *, task: str = 'multiclass', augment=None,
                class_weights=None, privacy=None):
  """`train_step` over a leading axis of batches ([steps, batch, ...]), unrolled in one program.

  Unrolled rather than `lax.scan`: XLA:CPU runs convolutions inside loops far slower. Returns the
  final state and per-step metrics [steps].
  """
  num_steps = jax.tree.leaves(batches)[0].shape[0]
  per_step = []
  for i in range(num_steps):
    state, metrics = train_step(state, jax.tree.map(lambda x: x[i], batches), task=task,
                                augment=augment, class_weights=class_weights, privacy=privacy)
    per_step.append(metrics)
  return state, jax.tree.map(lambda *xs: jnp.stack(xs), *per_step)


def eval_step(state, batch, *, task: str = 'multiclass'):
  """Masked evaluation sums plus probabilities [batch, classes] for AUROC and friends (the risk
  score [batch] for 'survival', whose loss here is per batch: `evaluate` recomputes it over the
  whole split)."""
  logits, _ = apply_model(state, state.params, batch['image'], train=False)
  mask = batch['mask']
  losses, correct = loss_and_correct(logits, batch['label'], task, mask)
  return {
      'loss_sum': (losses * mask).sum(),
      'correct': (correct * mask).sum(),
      'count': mask.sum(),
      'probs': probabilities(logits, task),
  }


def bind(step_fn, task: str, augment=None, class_weights=None, privacy=None):
  """`step_fn` with its static `task` (and `augment`, `class_weights` and `privacy`, for
  training steps) bound."""
  kwargs = {'augment': augment, 'class_weights': class_weights, 'privacy': privacy}
  return functools.partial(step_fn, task=task, **{k: v for k, v in kwargs.items() if v is not None})


def balanced_class_weights(labels, num_classes: int):
  """scikit-learn's 'balanced' weights, n / (num_classes * count[c]), as a tuple of floats
  (classes absent from `labels` [n] get weight 0)."""
  counts = np.bincount(np.asarray(labels), minlength=num_classes)
  return tuple(float(len(labels) / (num_classes * c)) if c else 0.0 for c in counts)
