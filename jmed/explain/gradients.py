"""Gradient attributions: saliency, SmoothGrad and integrated gradients.

Every function takes `apply_fn(variables, inputs) -> [batch, classes]` (e.g. a jmed model's
`model.apply`, whose `train` flag defaults to False) and `variables` explicitly, and explains one
scalar per example: the model's output for a target class, read as selected by `output`:

  'logit' (default): the raw logit. It does not saturate the way probabilities do, and its
    attributions do not depend on the other classes' logits.
  'softmax': the softmax probability of the target class.
  'sigmoid': the sigmoid of the target logit (multi-label models, single-output models).

Targets default to each example's predicted class (the argmax of its logits on the clean
inputs). The scalar of one example must not depend on the other examples of the batch (true for
jmed's models in evaluation mode), so one gradient of the batch sum gives every example's
gradient. Inputs must be floating point: for token ids, explain attention instead
(`jmed.explain.attention`).

All functions are pure and compiled with `jax.jit`, `apply_fn` and the keyword-only options
being static: passing the same `apply_fn` object again (e.g. `model.apply` of the same module
instance) reuses the compilation. They can also be called inside a caller's `jax.jit`.
"""

import functools
from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

OUTPUTS = ('logit', 'softmax', 'sigmoid')
IG_METHODS = ('trapezoid', 'left', 'right', 'midpoint')

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def _check_inputs(inputs):
  dtype = jnp.result_type(inputs)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f'Gradient attributions need floating-point inputs, got dtype {dtype}; for '
                     'token ids explain attention instead (jmed.explain.attention).')
  if jnp.ndim(inputs) < 2:
    raise ValueError(f'inputs must be batched [batch, ...], got shape {jnp.shape(inputs)}.')


def check_output(output: str) -> None:
  """Raises ValueError unless `output` is one of `OUTPUTS`."""
  if output not in OUTPUTS:
    raise ValueError(f'output must be one of {OUTPUTS}, got {output!r}.')


def select_scores(logits, targets, output: str = 'logit') -> jax.Array:
  """The explained scalar per example, [batch], from logits [batch, classes] and int targets
  [batch] ('logit' | 'softmax' | 'sigmoid', see the module docstring)."""
  check_output(output)
  if logits.ndim != 2:
    raise ValueError(f'apply_fn must return logits [batch, classes], got shape {logits.shape}.')
  if output == 'softmax':
    logits = jax.nn.softmax(logits, axis=-1)
  elif output == 'sigmoid':
    logits = jax.nn.sigmoid(logits)
  return jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]


def resolve_targets(apply_fn: ApplyFn, variables, inputs, targets=None) -> jax.Array:
  """`targets` as int32 [batch], or each example's predicted class if None.

  Args:
    apply_fn: `apply_fn(variables, inputs)` -> logits [batch, classes].
    variables: the model's variables.
    inputs: [batch, ...].
    targets: None, an int, or ints [batch].

  Returns:
    int32 [batch].
  """
  batch = jnp.shape(inputs)[0]
  if targets is None:
    return jnp.argmax(apply_fn(variables, inputs), axis=-1).astype(jnp.int32)
  targets = jnp.asarray(targets, jnp.int32)
  if targets.ndim == 0:
    return jnp.full((batch,), targets)
  if targets.shape != (batch,):
    raise ValueError(f'targets must be an int or shaped [batch] = [{batch}], got shape '
                     f'{targets.shape}.')
  return targets


def check_targets(apply_fn: ApplyFn, variables, inputs, targets) -> None:
  """Raises ValueError unless `targets` (None, an int or ints [batch]) are class ids of the
  model's logits (checked on shapes only: nothing is computed)."""
  if targets is None:
    return
  classes = jax.eval_shape(apply_fn, variables, jnp.asarray(inputs)).shape[-1]
  values = np.asarray(targets)
  if values.size and (values.min() < 0 or values.max() >= classes):
    raise ValueError(f'targets must be class ids in [0, {classes}), got '
                     f'[{values.min()}, {values.max()}].')


def target_scores(apply_fn: ApplyFn, variables, inputs, targets,
                  output: str = 'logit') -> jax.Array:
  """The explained scalar of each example, [batch] (see the module docstring for `output`)."""
  logits = apply_fn(variables, inputs)
  return select_scores(logits, jnp.asarray(targets, jnp.int32), output)


def _gradient(apply_fn, variables, inputs, targets, output):
  def total(x):
    return jnp.sum(target_scores(apply_fn, variables, x, targets, output))
  return jax.grad(total)(inputs)


def saliency(apply_fn: ApplyFn, variables, inputs, targets=None, *,
             output: str = 'logit') -> jax.Array:
  """Vanilla gradients (Simonyan et al. 2014): d score / d inputs.

  Args:
    apply_fn: `apply_fn(variables, inputs)` -> logits [batch, classes].
    variables: the model's variables.
    inputs: float [batch, ...], e.g. images [batch, height, width, channels].
    targets: class per example, int32 [batch] (or one int); None: the predicted class.
    output: 'logit' | 'softmax' | 'sigmoid': which score of the target class is explained.

  Returns:
    Gradients shaped like `inputs` (signed; reduce channels with e.g. `jnp.abs(...).max(-1)`).
  """
  _check_inputs(inputs)
  check_output(output)
  check_targets(apply_fn, variables, inputs, targets)
  return _saliency(apply_fn, variables, jnp.asarray(inputs), targets, output=output)


@functools.partial(jax.jit, static_argnums=0, static_argnames='output')
def _saliency(apply_fn, variables, inputs, targets, *, output):
  targets = resolve_targets(apply_fn, variables, inputs, targets)
  return _gradient(apply_fn, variables, inputs, targets, output)


def smoothgrad(apply_fn: ApplyFn, variables, inputs, targets=None, *, key: jax.Array,
               num_samples: int = 32, sigma: float = 0.15,
               value_range: Optional[Tuple[float, float]] = None,
               output: str = 'logit') -> jax.Array:
  """SmoothGrad (Smilkov et al. 2017): saliency averaged over Gaussian-noised copies of inputs.

  Args:
    apply_fn: `apply_fn(variables, inputs)` -> logits [batch, classes].
    variables: the model's variables.
    inputs: float [batch, ...].
    targets: class per example, int32 [batch] (or one int); None: the class predicted on the
      clean inputs.
    key: PRNG key of the noise (the result is deterministic given it).
    num_samples: noisy copies per example.
    sigma: noise standard deviation as a fraction of the input range: of `value_range` if
      given, else of each example's own max - min (the paper's choice). 0 gives `saliency`.
    value_range: (low, high) of valid inputs, e.g. (0, 1) for jmed's images.
    output: 'logit' | 'softmax' | 'sigmoid', see `saliency`.

  Returns:
    Mean gradients shaped like `inputs`.
  """
  _check_inputs(inputs)
  check_output(output)
  check_targets(apply_fn, variables, inputs, targets)
  if num_samples < 1:
    raise ValueError(f'num_samples must be >= 1, got {num_samples}.')
  if sigma < 0:
    raise ValueError(f'sigma must be >= 0, got {sigma}.')
  if value_range is not None:
    value_range = tuple(float(v) for v in value_range)
    if len(value_range) != 2 or not value_range[1] > value_range[0]:
      raise ValueError(f'value_range must be (low, high) with high > low, got {value_range}.')
  return _smoothgrad(apply_fn, variables, jnp.asarray(inputs), targets, key,
                     num_samples=num_samples, sigma=float(sigma), value_range=value_range,
                     output=output)


@functools.partial(jax.jit, static_argnums=0,
                   static_argnames=('num_samples', 'sigma', 'value_range', 'output'))
def _smoothgrad(apply_fn, variables, inputs, targets, key, *, num_samples, sigma, value_range,
                output):
  targets = resolve_targets(apply_fn, variables, inputs, targets)
  axes = tuple(range(1, inputs.ndim))
  if value_range is not None:
    low, high = value_range
    scale = jnp.full((inputs.shape[0],) + (1,) * (inputs.ndim - 1), high - low, inputs.dtype)
  else:
    scale = inputs.max(axis=axes, keepdims=True) - inputs.min(axis=axes, keepdims=True)
  std = sigma * scale

  def body(total, sample_key):
    noise = jax.random.normal(sample_key, inputs.shape, inputs.dtype)
    grads = _gradient(apply_fn, variables, inputs + std * noise, targets, output)
    return total + grads, None

  total, _ = jax.lax.scan(body, jnp.zeros_like(inputs), jax.random.split(key, num_samples))
  return total / num_samples


class Completeness(NamedTuple):
  """Integrated gradients' completeness check, one entry per example ([batch] each).

  Attributes:
    attribution_sum: sum of the attributions.
    output_delta: f(inputs) - f(baseline), the score difference they should add up to.
    gap: attribution_sum - output_delta (the integration error).
    relative_gap: |gap| / max(|output_delta|, 1e-12).
  """

  attribution_sum: jax.Array
  output_delta: jax.Array
  gap: jax.Array
  relative_gap: jax.Array


def _check_ig(steps: int, method: str):
  if method not in IG_METHODS:
    raise ValueError(f'method must be one of {IG_METHODS}, got {method!r}.')
  if steps < 1:
    raise ValueError(f'steps must be >= 1, got {steps}.')


def _ig_nodes(steps: int, method: str):
  """Path positions alpha [n] in [0, 1] and quadrature weights [n] summing to 1."""
  _check_ig(steps, method)
  k = jnp.arange(steps, dtype=jnp.float32)
  if method == 'trapezoid':
    alphas = jnp.linspace(0.0, 1.0, steps + 1)
    weights = jnp.ones(steps + 1).at[0].set(0.5).at[-1].set(0.5) / steps
    return alphas, weights
  offset = {'left': 0.0, 'right': 1.0, 'midpoint': 0.5}[method]
  return (k + offset) / steps, jnp.full((steps,), 1.0 / steps)


def integrated_gradients(apply_fn: ApplyFn, variables, inputs, targets=None, *,
                         baseline=None, steps: int = 64, method: str = 'trapezoid',
                         output: str = 'logit') -> Tuple[jax.Array, Completeness]:
  """Integrated gradients (Sundararajan et al. 2017) along the straight path from a baseline.

  attributions = (x - baseline) * integral_0^1 grad f(baseline + a (x - baseline)) da, with the
  integral approximated by a Riemann or trapezoid sum of `steps` intervals. By completeness the
  attributions sum to f(x) - f(baseline); the returned `Completeness` measures how far they are
  (it shrinks as `steps` grows).

  Args:
    apply_fn: `apply_fn(variables, inputs)` -> logits [batch, classes].
    variables: the model's variables.
    inputs: float [batch, ...].
    targets: class per example, int32 [batch] (or one int); None: the predicted class.
    baseline: the reference input, shaped like `inputs` or like one example (broadcast);
      default zeros (a black image).
    steps: intervals of the path integral (gradient evaluations: steps + 1 for 'trapezoid').
    method: 'trapezoid' | 'left' | 'right' | 'midpoint' (Riemann sums).
    output: 'logit' | 'softmax' | 'sigmoid', see `saliency`.

  Returns:
    (attributions shaped like `inputs`, `Completeness` of [batch] arrays).
  """
  _check_inputs(inputs)
  check_output(output)
  check_targets(apply_fn, variables, inputs, targets)
  _check_ig(steps, method)
  inputs = jnp.asarray(inputs)
  if baseline is not None:
    baseline = jnp.asarray(baseline, inputs.dtype)
    try:
      shape = np.broadcast_shapes(baseline.shape, inputs.shape)
    except ValueError:
      shape = None
    if shape != inputs.shape:
      raise ValueError(f'baseline shape {baseline.shape} does not broadcast to inputs '
                       f'{inputs.shape}.')
  return _integrated_gradients(apply_fn, variables, inputs, targets, baseline, steps=steps,
                               method=method, output=output)


@functools.partial(jax.jit, static_argnums=0, static_argnames=('steps', 'method', 'output'))
def _integrated_gradients(apply_fn, variables, inputs, targets, baseline, *, steps, method,
                          output):
  targets = resolve_targets(apply_fn, variables, inputs, targets)
  baseline = (jnp.zeros_like(inputs) if baseline is None
              else jnp.broadcast_to(baseline, inputs.shape))
  alphas, weights = _ig_nodes(steps, method)
  delta = inputs - baseline

  def body(total, node):
    alpha, weight = node
    grads = _gradient(apply_fn, variables, baseline + alpha * delta, targets, output)
    return total + weight * grads, None

  mean_grads, _ = jax.lax.scan(body, jnp.zeros_like(inputs), (alphas, weights))
  attributions = delta * mean_grads
  output_delta = (target_scores(apply_fn, variables, inputs, targets, output)
                  - target_scores(apply_fn, variables, baseline, targets, output))
  total = attributions.reshape(inputs.shape[0], -1).sum(-1)
  gap = total - output_delta
  report = Completeness(total, output_delta, gap,
                        jnp.abs(gap) / jnp.maximum(jnp.abs(output_delta), 1e-12))
  return attributions, report
