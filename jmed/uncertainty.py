"""Predictive uncertainty: MC dropout samples, ensemble summaries (BALD) and the NLL.

Every function here takes stacks of predictions, one per stochastic forward pass or ensemble
member, on a leading axis: `[members, batch, classes]` (or `[samples, batch, classes]`), and a
task (`jmed.tasks`) whose predictions are class probabilities (`task.probabilistic`): softmax
classes ('binary', 'multiclass') or independent labels ('multilabel'). Entropies are in nats,
with 0 log 0 = 0; for independent labels an entropy is the sum of the labels' Bernoulli
entropies.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jmed import tasks as jtasks


def _probabilistic(task) -> jtasks.Task:
  """The `Task` of `task`, which must predict class probabilities."""
  task = jtasks.get(task)
  if not task.probabilistic:
    raise ValueError(f'task {task.name!r} does not predict class probabilities; uncertainty '
                     'applies to binary, multiclass and multilabel tasks.')
  return task


def _force_dropout(next_fun, args, kwargs, context):
  """A flax method interceptor that applies every `nn.Dropout` as in training.

  The rest of the model runs as it was called (with `train=False`: BatchNorm uses its running
  statistics). Reproduces `nn.Dropout.__call__` with `deterministic=False`, drawing from the
  layer's own rng stream, so a model whose only train-mode difference is dropout gives exactly
  its `train=True` outputs for the same 'dropout' key.
  """
  module = context.module
  if not isinstance(module, nn.Dropout) or context.method_name != '__call__':
    return next_fun(*args, **kwargs)
  inputs = args[0] if args else kwargs['inputs']
  if module.rate == 0.0:
    return inputs
  if module.rate == 1.0:
    return jnp.zeros_like(inputs)
  rng = kwargs.get('rng')
  rng = module.make_rng(module.rng_collection) if rng is None else rng
  shape = [1 if d in module.broadcast_dims else n for d, n in enumerate(inputs.shape)]
  keep_prob = 1.0 - module.rate
  mask = jnp.broadcast_to(jax.random.bernoulli(rng, keep_prob, shape), inputs.shape)
  return jax.lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))


def mc_dropout_probs(apply_fn, variables, inputs, key, num_samples: int,
                     task: str = 'multiclass'):
  """Monte Carlo dropout (Gal & Ghahramani 2016): `num_samples` stochastic forward passes.

  Dropout is on in every `nn.Dropout` layer while BatchNorm (and anything else keyed on `train`)
  stays in inference mode: the model is called with `train=False` and its dropout layers are
  forced on (see `_force_dropout`; dropout that is not an `nn.Dropout` layer, such as the
  attention-weight dropout inside flax's attention modules, stays off). Deterministic for a
  fixed `key`; jit-able (bind `apply_fn`, `num_samples` and `task`). Samples are vmapped, so
  memory grows with `num_samples` times the activations after the first dropout layer.

  Args:
    apply_fn: the model's `apply`, called as `apply_fn(variables, inputs, train=False,
      rngs={'dropout': key})`.
    variables: {'params': ..., and model state such as 'batch_stats'}.
    inputs: [batch, ...] model inputs.
    key: a PRNG key; sample s uses `jax.random.split(key, num_samples)[s]`.
    num_samples: number of forward passes, >= 1.
    task: a probabilistic `jmed.tasks.Task` or its name: 'binary' | 'multiclass' (softmax) or
      'multilabel' (sigmoid).

  Returns:
    [samples, batch, classes] probabilities.
  """
  task = _probabilistic(task)
  if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or (
      num_samples < 1):
    raise ValueError(f'num_samples must be a positive int, got {num_samples!r}.')

  def one_pass(sample_key):
    with nn.intercept_methods(_force_dropout):
      logits = apply_fn(variables, inputs, train=False, rngs={'dropout': sample_key})
    return task.predict(logits)

  return jax.vmap(one_pass)(jax.random.split(key, num_samples))


def mc_dropout_predict(apply_fn, variables, inputs, key, num_samples: int,
                       task: str = 'multiclass', batch_size: int = 256) -> np.ndarray:
  """`mc_dropout_probs` over a whole split in padded batches, compiled once.

  Args:
    apply_fn, variables, num_samples, task: as in `mc_dropout_probs`.
    inputs: [n, ...] host arrays (e.g. a test split's images).
    key: a PRNG key; batch b draws from `jax.random.fold_in(key, b)` (so the samples depend on
      `batch_size`).
    batch_size: examples per forward pass (the last batch is zero-padded).

  Returns:
    [samples, n, classes] probabilities (NumPy).
  """
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
      batch_size < 1):
    raise ValueError(f'batch_size must be a positive int, got {batch_size!r}.')
  task = _probabilistic(task)  # checked here: the jit below would hide the message in a trace
  sample = jax.jit(lambda v, x, k: mc_dropout_probs(apply_fn, v, x, k, num_samples, task))
  probs = []
  for b, start in enumerate(range(0, len(inputs), batch_size)):
    chunk = np.asarray(inputs[start:start + batch_size])
    padded = np.pad(chunk, [(0, batch_size - len(chunk))] + [(0, 0)] * (chunk.ndim - 1))
    out = sample(variables, padded, jax.random.fold_in(key, b))
    probs.append(np.asarray(out)[:, :len(chunk)])
  return np.concatenate(probs, axis=1)


def ensemble_summary(member_probs, task='multiclass') -> dict:
  """The ensemble's predictive distribution and its uncertainty decomposition.

  With p_m the members' (or MC samples') predictive distributions and p their mean: predictive
  entropy H[p] (total uncertainty) = expected entropy E_m H[p_m] (aleatoric) + mutual
  information I (epistemic; BALD, Houlsby et al. 2011), I >= 0.

  Args:
    member_probs: [members, batch, classes]: softmax rows, or independent label probabilities
      for 'multilabel'.
    task: a probabilistic `jmed.tasks.Task` or its name (its `entropy`).

  Returns:
    {'mean': [batch, classes], 'predictive_entropy': [batch], 'expected_entropy': [batch],
     'mutual_information': [batch]}.
  """
  task = _probabilistic(task)
  member_probs = jnp.asarray(member_probs)
  if member_probs.ndim != 3:
    raise ValueError('member_probs must be [members, batch, classes], got shape '
                     f'{member_probs.shape}.')
  mean = member_probs.mean(0)
  predictive = task.entropy(mean)
  expected = task.entropy(member_probs).mean(0)
  return {'mean': mean, 'predictive_entropy': predictive, 'expected_entropy': expected,
          'mutual_information': jnp.maximum(predictive - expected, 0.0)}


def prediction_metrics(probs, labels, task='multiclass') -> dict:
  """The task's metrics (accuracy, AUROC, ..., ECE) plus 'nll', its negative log-likelihood.

  Args:
    probs: [n, classes] probabilities (e.g. an ensemble's mean).
    labels: [n] class ids or [n, labels] of 1 / 0 / -1 (missing), as the task's.
    task: a probabilistic `jmed.tasks.Task` or its name.
  """
  task = _probabilistic(task)
  return {**task.evaluate(probs, labels), 'nll': task.nll(probs, labels)}


def ensemble_metrics(task, member_predictions, labels, member_losses=None) -> dict:
  """An ensemble's metrics on a split: those of its combined prediction, then its members'.

  Args:
    task: a `jmed.tasks.Task` or its name.
    member_predictions: [members, n, ...] `task.predict` outputs.
    labels: [n, ...].
    member_losses: [members] each member's mean loss on the split, or None (no 'loss' but
      the one a task computes itself).

  Returns:
    `task.evaluate` of `task.combine(member_predictions)` with 'loss' (the mean member loss,
    unless the task computes its own), 'members' (each member's metrics and loss) and
    'mean_member' (their means); for probabilistic tasks also 'nll' (ensemble and members),
    'mean_predictive_entropy' and 'mean_mutual_information'.
  """
  task = jtasks.get(task)
  member_predictions = np.asarray(member_predictions)
  members = [task.evaluate(p, labels) for p in member_predictions]
  result = task.evaluate(task.combine(member_predictions), labels)
  if member_losses is not None:
    for metrics, loss in zip(members, np.ravel(member_losses)):
      metrics.setdefault('loss', float(loss))
    result.setdefault('loss', float(np.mean(member_losses)))
  if task.probabilistic:
    for metrics, probs in zip(members, member_predictions):
      metrics['nll'] = task.nll(probs, labels)
    result['nll'] = task.nll(task.combine(member_predictions), labels)
    summary = ensemble_summary(member_predictions, task)
    result['mean_predictive_entropy'] = float(summary['predictive_entropy'].mean())
    result['mean_mutual_information'] = float(summary['mutual_information'].mean())
  result['members'] = members
  result['mean_member'] = {k: float(np.mean([m[k] for m in members])) for k, v in
                           members[0].items()
                           if isinstance(v, (int, float)) and all(m[k] is not None
                                                                  for m in members)}
  return result
