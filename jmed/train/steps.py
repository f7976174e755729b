"""Pure training and evaluation steps: `state, metrics = train_step(state, batch)`.

A batch is a dict: 'image' [batch, height, width, channels] float, 'label' [batch] int32 class
ids, and for evaluation 'mask' [batch] (1 for a real example, 0 for padding).
"""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, labels):
  """Sparse categorical cross-entropy per example: logits [batch, classes], labels [batch]."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _apply(state, params, images, *, train: bool, rng=None):
  """Runs the model; returns (logits, updated batch_stats)."""
  variables = {'params': params, **state.batch_stats}
  if not train:
    return state.apply_fn(variables, images, train=False), state.batch_stats
  if not state.batch_stats:
    return state.apply_fn(variables, images, train=True, rngs={'dropout': rng}), {}
  logits, new_stats = state.apply_fn(variables, images, train=True, rngs={'dropout': rng},
                                     mutable=list(state.batch_stats))
  return logits, dict(new_stats)


def train_step(state, batch):
  """One SGD step on a global batch; returns (new_state, metrics).

  Metrics are sums over the batch ('loss_sum', 'correct', 'count') so they add up across steps
  and devices without bias; divide by 'count' for means.
  """
  rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    logits, new_stats = _apply(state, params, batch['image'], train=True, rng=rng)
    losses = cross_entropy(logits, batch['label'])
    return losses.mean(), (losses, logits, new_stats)

  (_, (losses, logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=new_stats)
  metrics = {
      'loss_sum': losses.sum(),
      'correct': (jnp.argmax(logits, -1) == batch['label']).sum(),
      'count': jnp.asarray(losses.shape[0], jnp.int32),
  }
  return state, metrics


def train_steps(state, batches):
  """`train_step` over a leading axis of batches ([steps, batch, ...]), unrolled in one program.

  Unrolled rather than `lax.scan`: XLA:CPU runs convolutions inside loops far slower. Returns the
  final state and per-step metrics [steps].
  """
  num_steps = jax.tree.leaves(batches)[0].shape[0]
  per_step = []
  for i in range(num_steps):
    state, metrics = train_step(state, jax.tree.map(lambda x: x[i], batches))
    per_step.append(metrics)
  return state, jax.tree.map(lambda *xs: jnp.stack(xs), *per_step)


def eval_step(state, batch):
  """Logits-free evaluation sums plus class probabilities [batch, classes] for AUROC."""
  logits, _ = _apply(state, state.params, batch['image'], train=False)
  mask = batch['mask']
  losses = cross_entropy(logits, batch['label'])
  return {
      'loss_sum': (losses * mask).sum(),
      'correct': ((jnp.argmax(logits, -1) == batch['label']) * mask).sum(),
      'count': mask.sum(),
      'probs': jax.nn.softmax(logits, -1),
  }
