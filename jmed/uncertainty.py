"""Predictive uncertainty: MC dropout samples, ensemble summaries (BALD) and the NLL.

Every function here takes stacks of predictions, one per stochastic forward pass or ensemble
member, on a leading axis: `[members, batch, classes]` (or `[samples, batch, classes]`).
Entropies are in nats, with 0 log 0 = 0.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jmed import metrics as jmetrics
from jmed.train import steps

TASKS = ('binary', 'multiclass', 'multilabel')
_EPS = 1e-12  # probabilities are clipped to [eps, 1] before a log


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
    task: 'binary' | 'multiclass' (softmax) or 'multilabel' (sigmoid).

  Returns:
    [samples, batch, classes] probabilities.
  """
  if task not in TASKS:
    raise ValueError(f'task must be one of {TASKS}, got {task!r}.')
  if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or (
      num_samples < 1):
    raise ValueError(f'num_samples must be a positive int, got {num_samples!r}.')

  def one_pass(sample_key):
    with nn.intercept_methods(_force_dropout):
      logits = apply_fn(variables, inputs, train=False, rngs={'dropout': sample_key})
    return steps.probabilities(logits, task)

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
  if task not in TASKS:  # checked here too: the jit below would hide the message in a trace
    raise ValueError(f'task must be one of {TASKS}, got {task!r}.')
  sample = jax.jit(lambda v, x, k: mc_dropout_probs(apply_fn, v, x, k, num_samples, task))
  probs = []
  for b, start in enumerate(range(0, len(inputs), batch_size)):
    chunk = np.asarray(inputs[start:start + batch_size])
    padded = np.pad(chunk, [(0, batch_size - len(chunk))] + [(0, 0)] * (chunk.ndim - 1))
    out = sample(variables, padded, jax.random.fold_in(key, b))
    probs.append(np.asarray(out)[:, :len(chunk)])
  return np.concatenate(probs, axis=1)


def entropy(probs, axis: int = -1):
  """Shannon entropy (nats) of categorical distributions along `axis`: [..., classes] -> [...]."""
  probs = jnp.asarray(probs)
  return -jnp.sum(jax.scipy.special.xlogy(probs, probs), axis=axis)


def ensemble_summary(member_probs) -> dict:
  """The ensemble's predictive distribution and its uncertainty decomposition.

  With p_m the members' (or MC samples') categorical distributions and p their mean:
  predictive entropy H[p] (total uncertainty) = expected entropy E_m H[p_m] (aleatoric) +
  mutual information I (epistemic; BALD, Houlsby et al. 2011), I >= 0.

  Args:
    member_probs: [members, batch, classes], rows summing to 1 (softmax outputs).

  Returns:
    {'mean': [batch, classes], 'predictive_entropy': [batch], 'expected_entropy': [batch],
     'mutual_information': [batch]}.
  """
  member_probs = jnp.asarray(member_probs)
  if member_probs.ndim != 3:
    raise ValueError('member_probs must be [members, batch, classes], got shape '
                     f'{member_probs.shape}.')
  mean = member_probs.mean(0)
  predictive = entropy(mean)
  expected = entropy(member_probs).mean(0)
  return {'mean': mean, 'predictive_entropy': predictive, 'expected_entropy': expected,
          'mutual_information': jnp.maximum(predictive - expected, 0.0)}


def negative_log_likelihood(probs, labels, task: Optional[str] = None) -> float:
  """Mean negative log-likelihood of the labels (nats; probabilities clipped at 1e-12).

  Args:
    probs: [n, classes] softmax probabilities, or independent sigmoids for 'multilabel'.
    labels: [n] class ids, or [n, labels] 1 / 0 / -1 (missing, ignored) for 'multilabel'.
    task: as in `jmed.metrics.classification_metrics` (None: inferred).

  Returns:
    Binary / multiclass: mean of -log probs[i, labels[i]]. Multilabel: mean binary
    cross-entropy over the observed (example, label) entries.
  """
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  task = jmetrics.infer_task(probs, labels) if task is None else task
  jmetrics.calibration_inputs(probs, labels, task)  # validates shapes, ranges and the task
  probs = np.clip(probs, _EPS, 1.0)
  if task == 'multilabel':
    observed = labels != jmetrics.MISSING
    p, y = probs[observed], labels[observed] == 1
    return float(-np.mean(np.where(y, np.log(p), np.log(np.clip(1 - p, _EPS, 1.0)))))
  return float(-np.mean(np.log(probs[np.arange(len(labels)), labels.astype(np.int64)])))


def prediction_metrics(probs, labels, task: Optional[str] = None) -> dict:
  """`jmed.metrics.classification_metrics` (accuracy, AUROC, ..., ECE) plus 'nll'.

  Args:
    probs: [n, classes] probabilities (e.g. an ensemble's mean).
    labels: [n] or [n, labels] as in `classification_metrics`.
    task: 'binary' | 'multiclass' | 'multilabel' | None (inferred).
  """
  result = jmetrics.classification_metrics(probs, labels, task=task)
  result['nll'] = negative_log_likelihood(probs, labels, task)
  return result
