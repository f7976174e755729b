"""Pure training and evaluation steps: `state, metrics = train_step(state, batch)`.

A batch is a dict: 'image' [batch, ...] float model inputs (images are [batch, height, width,
channels]), 'label' int32, and for evaluation 'mask' [batch] (1 for a real example, 0 for
padding). Labels are [batch] class ids for task 'binary' / 'multiclass' (softmax cross-entropy),
or [batch, labels] with 1 / 0 and -1 for a missing label for 'multilabel' (sigmoid
cross-entropy over the observed labels).

`task` and `augment` are static: bind them with `functools.partial` before `jax.jit`.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from jmed.data import augment as jaugment

TASKS = ('binary', 'multiclass', 'multilabel')


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


def loss_and_correct(logits, labels, task: str):
  """Per-example loss [batch] and correctness [batch] (multi-label: fraction of observed labels
  right at threshold 0.5; examples with no observed label count as right)."""
  if task not in TASKS:
    raise ValueError(f'task must be one of {TASKS}, got {task!r}.')
  if task == 'multilabel':
    observed = labels >= 0
    right = ((logits > 0) == (labels == 1)) & observed
    correct = right.sum(-1) / jnp.maximum(observed.sum(-1), 1)
    correct = jnp.where(observed.any(-1), correct, 1.0)
    return masked_sigmoid_cross_entropy(logits, labels), correct
  return cross_entropy(logits, labels), (jnp.argmax(logits, -1) == labels).astype(jnp.float32)


def probabilities(logits, task: str):
  """Softmax class probabilities, or independent sigmoid probabilities for 'multilabel'."""
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


def train_step(state, batch, *, task: str = 'multiclass', augment=None):
  """One optimizer step on a global batch; returns (new_state, metrics).

  Args:
    state: a `TrainState`.
    batch: {'image': [batch, ...], 'label': [batch] or [batch, labels]}.
    task: 'binary' | 'multiclass' | 'multilabel' (static).
    augment: None, a preset name or a `jmed.data.augment.AugmentConfig` (static); applied on
      device to the images with a key derived from the state's rng and step.

  Metrics are sums over the batch ('loss_sum', 'correct', 'count') so they add up across steps
  and devices without bias; divide by 'count' for means.
  """
  rng = jax.random.fold_in(state.rng, state.step)  # dropout key
  images = batch['image']
  if augment is not None:
    images = jaugment.augment_batch(jax.random.fold_in(rng, 1), images, augment)

  def loss_fn(params):
    logits, new_stats = apply_model(state, params, images, train=True, rng=rng)
    losses, correct = loss_and_correct(logits, batch['label'], task)
    return losses.mean(), (losses, correct, new_stats)

  (_, (losses, correct, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  state = state.apply_gradients(grads=grads, batch_stats=new_stats)
  metrics = {
      'loss_sum': losses.sum(),
      'correct': correct.sum(),
      'count': jnp.asarray(losses.shape[0], jnp.int32),
  }
  return state, metrics


def train_steps(state, batches, *, task: str = 'multiclass', augment=None):
  """`train_step` over a leading axis of batches ([steps, batch, ...]), unrolled in one program.

  Unrolled rather than `lax.scan`: XLA:CPU runs convolutions inside loops far slower. Returns the
  final state and per-step metrics [steps].
  """
  num_steps = jax.tree.leaves(batches)[0].shape[0]
  per_step = []
  for i in range(num_steps):
    state, metrics = train_step(state, jax.tree.map(lambda x: x[i], batches), task=task,
                                augment=augment)
    per_step.append(metrics)
  return state, jax.tree.map(lambda *xs: jnp.stack(xs), *per_step)


def eval_step(state, batch, *, task: str = 'multiclass'):
  """Masked evaluation sums plus probabilities [batch, classes] for AUROC and friends."""
  logits, _ = apply_model(state, state.params, batch['image'], train=False)
  mask = batch['mask']
  losses, correct = loss_and_correct(logits, batch['label'], task)
  return {
      'loss_sum': (losses * mask).sum(),
      'correct': (correct * mask).sum(),
      'count': mask.sum(),
      'probs': probabilities(logits, task),
  }


def bind(step_fn, task: str, augment=None):
  """`step_fn` with its static `task` (and `augment`, for training steps) bound."""
  if augment is None:
    return functools.partial(step_fn, task=task)
  return functools.partial(step_fn, task=task, augment=augment)
