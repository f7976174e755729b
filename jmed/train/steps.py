"""Pure training and evaluation steps: `state, metrics = train_step(state, batch)`.

A batch is a dict of arrays with a leading [batch] axis:

  'inputs': what the model takes: images [batch, height, width, channels], volumes, token ids
            [batch, length], feature vectors [batch, features], packed series, ...
  'labels': in the layout of the task (`jmed.tasks`): class ids [batch], multi-label
            [batch, labels], targets [batch, targets], (time, event) [batch, 2], masks
            [batch, height, width], ...
  'valid':  evaluation only: [batch] 1 for a real example, 0 for padding.

`task` (a `jmed.tasks.Task` or its name), `augment`, `class_weights`, `privacy`, `patch_size`,
`micro_batches` (training) and `window`, `stride` (evaluation) are static: bind them with `bind`
(or `functools.partial`) before `jax.jit`.
"""

import functools

import jax
import jax.numpy as jnp

from jmed import privacy as jprivacy
from jmed import segmentation
from jmed import tasks
from jmed.data import augment as jaugment


def apply_model(state, params, inputs, *, train: bool, rng=None):
  """Runs the model on inputs [batch, ...]; returns (outputs, updated model state).

  In training mode the model state (BatchNorm statistics) is updated when the model has any,
  and dropout draws from `rng`.
  """
  variables = {'params': params, **state.model_state}
  if not train:
    return state.apply_fn(variables, inputs, train=False), state.model_state
  if not state.model_state:
    return state.apply_fn(variables, inputs, train=True, rngs={'dropout': rng}), {}
  outputs, model_state = state.apply_fn(variables, inputs, train=True, rngs={'dropout': rng},
                                        mutable=list(state.model_state))
  return outputs, dict(model_state)


def train_step(state, batch, *, task='multiclass', augment=None, class_weights=None,
               privacy=None, patch_size=0, micro_batches=1):
  """One optimizer step on a global batch; returns (new_state, metrics).

  Args:
    state: a `TrainState`.
    batch: {'inputs': [batch, ...], 'labels': [batch, ...]}.
    task: a `jmed.tasks.Task` or its name (static): the loss and the logged train metrics.
    augment: None, a preset name or a `jmed.data.augment.AugmentConfig` (static); applied on
      device to the inputs with a key derived from the state's rng and step; for a task with
      spatial labels (segmentation) the masks move with the same geometry.
    class_weights: None, or one loss weight per class (static tuple; single-label tasks): the
      gradient follows the weighted mean loss, the logged loss stays unweighted.
    privacy: None, or (l2_clip, noise_multiplier) (static) for a DP-SGD step: per-example
      gradients clipped and noised by `jmed.privacy.clipped_noisy_mean`.
    patch_size: > 0 (static; spatial-label tasks, 2D): train on one random patch_size x
      patch_size window of each (augmented) image and its mask, cropped on device.
    micro_batches: > 1 (static): the gradient of the whole batch is summed over this many
      micro-batches, one after the other in a `lax.scan`, so each one's activations stay in
      cache: the same update (to float rounding) at the speed of a small batch on a CPU. Micro-
      batch i holds rows i, i + micro_batches, ... of the batch (the same rows on any number of
      devices) and draws its own dropout key. Needs a model without batch statistics and no
      `privacy`; must divide the batch.

  Returns:
    The new state and metrics that add up across steps and devices: 'loss_sum', 'count', one
    '<name>_sum' per `task.train_metrics` (e.g. 'accuracy_sum'), and for DP-SGD 'clipped', the
    number of examples whose gradient was clipped.
  """
  task = tasks.get(task)
  rng = jax.random.fold_in(state.rng, state.step)  # dropout key
  inputs, labels = batch['inputs'], batch['labels']
  if augment is not None or patch_size:
    inputs, labels = _augment(jax.random.fold_in(rng, 1), inputs, labels, task, augment,
                              patch_size)

  def loss_fn(params, inputs, labels, rng, batch_size=None):
    """The (weighted) mean loss; over `batch_size` rows when `inputs` are part of a batch."""
    outputs, model_state = apply_model(state, params, inputs, train=True, rng=rng)
    losses = task.loss(outputs, labels)
    weights = 1.0 if class_weights is None else task.example_weights(labels, class_weights)
    objective = (losses * weights).mean() if batch_size is None else (
        (losses * weights).sum() / batch_size)
    return objective, (losses, task.train_metrics(outputs, labels), model_state)

  if micro_batches > 1:
    check_micro_batches(micro_batches, inputs.shape[0], state, privacy)
    grads, losses, per_example = _micro_batch_grads(loss_fn, state.params, inputs, labels, rng,
                                                    micro_batches)
    model_state, extra = state.model_state, {}
  elif privacy is None:
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (losses, per_example, model_state)), grads = grad_fn(state.params, inputs, labels, rng)
    extra = {}
  else:
    jprivacy.check_applies(task, state.model_state)
    grads, losses, per_example, num_clipped = _private_grads(
        loss_fn, state.params, inputs, labels, rng, privacy)
    model_state, extra = state.model_state, {'clipped': num_clipped}
  state = state.apply_gradients(grads=grads, model_state=model_state)
  metrics = {
      'loss_sum': losses.sum(),
      'count': jnp.asarray(losses.shape[0], jnp.int32),
      **{f'{name}_sum': values.sum() for name, values in per_example.items()},
      **extra,
  }
  return state, metrics


# Automatic micro-batches on a CPU: CPU_MICRO_BATCH rows or more each, at most
# CPU_MAX_MICRO_BATCHES of them unless that makes them larger than CPU_MAX_MICRO_BATCH rows.
# Measured on the seed CNN (2 cores, `fit`): batch 128 is fastest in 4 micro-batches of 32 (5%
# over 2 of 64), batch 512 in 8 of 64 (5-7% over 16 of 32, and over 4 of 128): each iteration
# of the scan costs time, and a micro-batch too large overflows the cache (README, "Speed").
CPU_MICRO_BATCH = 32
CPU_MAX_MICRO_BATCH = 128
CPU_MAX_MICRO_BATCHES = 8


def auto_micro_batches(batch_size: int, state, privacy=None) -> int:
  """The `micro_batches` a CPU run of `state`'s model takes by default; 1 (the whole batch) for
  a model with batch statistics, for DP-SGD, and on GPU and TPU, whose throughput grows with
  the batch.

  Wanted: `min(CPU_MAX_MICRO_BATCHES, batch_size // CPU_MICRO_BATCH)` micro-batches, or more
  when they would exceed `CPU_MAX_MICRO_BATCH` rows; taken: the count nearest to that which
  divides the batch into micro-batches of at least half `CPU_MICRO_BATCH` rows (e.g. 64: 2,
  100: 2, 128: 4, 512: 8, 4096: 32; 48 or a prime: 1).
  """
  if jax.default_backend() != 'cpu' or state.model_state or privacy is not None:
    return 1
  wanted = max(min(CPU_MAX_MICRO_BATCHES, batch_size // CPU_MICRO_BATCH),
               -(-batch_size // CPU_MAX_MICRO_BATCH))
  counts = [c for c in range(1, batch_size + 1)
            if c == 1 or (batch_size % c == 0 and batch_size // c >= CPU_MICRO_BATCH // 2)]
  return min(counts, key=lambda c: (abs(c - wanted), c))


def check_micro_batches(micro_batches: int, batch_size: int, state, privacy=None) -> None:
  """Raises ValueError unless `micro_batches` (> 1) can split this step's batch."""
  if batch_size % micro_batches:
    raise ValueError(f'micro_batches={micro_batches} does not divide the batch of {batch_size}.')
  if state.model_state or privacy is not None:
    raise ValueError('Micro-batches need a model without batch statistics (BatchNorm would '
                     'see smaller batches) and no DP-SGD (it clips per example already).')


def _micro_batch_grads(loss_fn, params, inputs, labels, rng, micro_batches: int):
  """The whole batch's gradient of `loss_fn`, summed over strided micro-batches in a scan.

  Returns (grads, losses [batch], per-example metrics {name: [batch]}) in the batch's row order.
  """
  batch_size = inputs.shape[0]

  def split(x):  # [batch, ...] -> [micro_batches, batch // micro_batches, ...], strided rows
    return x.reshape(batch_size // micro_batches, micro_batches, *x.shape[1:]).swapaxes(0, 1)

  def merge(x):  # the inverse of `split`
    return x.swapaxes(0, 1).reshape(batch_size, *x.shape[2:])

  grad_fn = jax.grad(loss_fn, has_aux=True)

  def accumulate(grads, chunk):
    chunk_inputs, chunk_labels, index = chunk
    chunk_grads, (losses, per_example, _) = grad_fn(
        params, chunk_inputs, chunk_labels, jax.random.fold_in(rng, index), batch_size)
    return jax.tree.map(jnp.add, grads, chunk_grads), (losses, per_example)

  zeros = jax.tree.map(jnp.zeros_like, params)
  chunks = (jax.tree.map(split, inputs), jax.tree.map(split, labels), jnp.arange(micro_batches))
  grads, (losses, per_example) = jax.lax.scan(accumulate, zeros, chunks)
  return grads, merge(losses), jax.tree.map(merge, per_example)


def _augment(rng, inputs, labels, task, augment, patch_size):
  """(inputs, labels) augmented (labels too when they are maps aligned with the inputs) and
  cropped to patches."""
  if not task.spatial_labels:
    return jaugment.augment_batch(rng, inputs, augment or 'none', patch_size=patch_size), labels
  return jaugment.augment_batch(rng, inputs, augment or 'none', labels, patch_size=patch_size)


def _private_grads(loss_fn, params, inputs, labels, rng, privacy):
  """DP-SGD gradient of `loss_fn`, one example at a time, each with its own dropout key."""
  l2_clip, noise_multiplier = privacy

  def example_loss(params, one_input, one_label, key):
    objective, (losses, per_example, _) = loss_fn(params, one_input[None], one_label[None], key)
    return objective, (losses[0], jax.tree.map(lambda x: x[0], per_example))

  keys = jax.random.split(rng, inputs.shape[0])
  grads, (losses, per_example) = jprivacy.per_example_grads(
      example_loss, params, inputs, labels, keys)
  grads, num_clipped = jprivacy.clipped_noisy_mean(
      grads, jax.random.fold_in(rng, 2), l2_clip, noise_multiplier)
  return grads, losses, per_example, num_clipped


def train_steps(state, batches, *, task='multiclass', augment=None, class_weights=None,
                privacy=None, patch_size=0, micro_batches=1):
  """`train_step` over a leading axis of batches ([steps, batch, ...]), unrolled in one program.

  Unrolled rather than `lax.scan`: a scan of the seed CNN's steps compiled in half the time but
  ran 4-9% slower on XLA:CPU (README, "Speed on CPU"). Returns the
  final state and per-step metrics [steps].
  """
  num_steps = jax.tree.leaves(batches)[0].shape[0]
  per_step = []
  for i in range(num_steps):
    state, metrics = train_step(state, jax.tree.map(lambda x: x[i], batches), task=task,
                                augment=augment, class_weights=class_weights, privacy=privacy,
                                patch_size=patch_size, micro_batches=micro_batches)
    per_step.append(metrics)
  return state, jax.tree.map(lambda *xs: jnp.stack(xs), *per_step)


def eval_step(state, batch, *, task='multiclass', window=0, stride=0):
  """Masked evaluation sums and per-example predictions of a padded batch.

  With `window` > 0 (static; 2D images), the model sees overlapping window x window tiles
  (`stride` apart, 0: window // 2) and their logits are averaged
  (`jmed.segmentation.sliding_window`), for images too large to take whole.

  Returns:
    {'loss_sum', 'count'}: sums over the real examples; 'predictions': `task.predict` of every
    row, padding included (class probabilities [batch, classes], risk scores [batch], targets
    [batch, targets], per-pixel probabilities, ...), for the host metrics of a whole split.
  """
  task = tasks.get(task)
  if window:
    outputs = segmentation.sliding_window(
        lambda x: apply_model(state, state.params, x, train=False)[0], batch['inputs'], window,
        stride)
  else:
    outputs, _ = apply_model(state, state.params, batch['inputs'], train=False)
  valid = batch['valid']
  losses = task.loss(outputs, batch['labels'], valid)
  return {
      'loss_sum': (losses * valid).sum(),
      'count': valid.sum(),
      'predictions': task.predict(outputs),
  }


def bind(step_fn, task, augment=None, class_weights=None, privacy=None, **static):
  """`step_fn` with its static `task` (and `augment`, `class_weights`, `privacy` and
  `patch_size` and `micro_batches`, for training steps; `window` and `stride` for `eval_step`)
  bound; None or 0 leaves a keyword at its default."""
  kwargs = {'augment': augment, 'class_weights': class_weights, 'privacy': privacy,
            **{k: v for k, v in static.items() if v}}
  return functools.partial(step_fn, task=tasks.get(task),
                           **{k: v for k, v in kwargs.items() if v is not None})
