"""Grad-CAM (Selvaraju et al. 2017) for any flax CNN, without changing the model.

The feature map is the output of one submodule, named by its path ('ValidConv_1', or
'BasicBlock_7' in a ResNet; nested paths joined with '/'). `flax.linen.intercept_methods` adds a
zero perturbation to that output during `apply`, so the gradient with respect to the
perturbation is the gradient with respect to the feature map, and the same interception returns
the feature map itself. `gradcam` is compiled with `jax.jit` (`apply_fn`, `layer` and the
options static).

With `layer=None` the last submodule to return a 4-D output [batch, height, width, channels]
is used: SeedCNN's last convolution ('ValidConv_1'), a ResNet's last block. `feature_layers`
lists the candidates. The layer's output is taken as it is: SeedCNN applies its ReLUs outside
the convolution modules, so there the map is the pre-activation one, and a negative response
counts as evidence for a class whose score falls as that feature grows.
"""

import functools
from typing import Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmed.explain.gradients import (ApplyFn, check_output, check_targets, resolve_targets,
                                    select_scores)


def _path(module) -> str:
  return '/'.join(module.path)


def feature_layers(apply_fn: ApplyFn, variables, inputs) -> Dict[str, Tuple[int, ...]]:
  """Submodule paths whose output is 4-D [batch, height, width, channels], with the shapes.

  Args:
    apply_fn: `apply_fn(variables, inputs)` -> logits, e.g. `model.apply`.
    variables: the model's variables.
    inputs: [batch, height, width, channels] (only shapes are used; nothing is computed).

  Returns:
    path -> output shape, in the order the submodules returned (the last is the deepest).
  """
  layers = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    path = _path(context.module)
    if context.method_name == '__call__' and path and getattr(out, 'ndim', 0) == 4:
      layers[path] = tuple(out.shape)
    return out

  def run(v, x):
    with nn.intercept_methods(record):
      return apply_fn(v, x)

  jax.eval_shape(run, variables, inputs)
  return layers


def _perturbed_apply(apply_fn, variables, inputs, layer: str, delta):
  """Runs apply_fn with `delta` added to `layer`'s output; returns (logits, that output)."""
  captured = []

  def intercept(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and _path(context.module) == layer:
      if captured:
        raise ValueError(f'layer {layer!r} is called more than once; pick a layer called once.')
      captured.append(out)
      if delta is not None:
        out = out + delta.astype(out.dtype)
    return out

  with nn.intercept_methods(intercept):
    logits = apply_fn(variables, inputs)
  if not captured:
    raise ValueError(f'layer {layer!r} was not called; layers with 4-D outputs: '
                     f'{", ".join(feature_layers(apply_fn, variables, inputs)) or "none"}.')
  return logits, captured[0]


def layer_gradients(apply_fn: ApplyFn, variables, inputs, targets, layer: str, *,
                    output: str = 'logit') -> Tuple[jax.Array, jax.Array]:
  """The output of submodule `layer` and the gradient of the target score with respect to it.

  Args:
    apply_fn: `apply_fn(variables, inputs)` -> logits [batch, classes].
    variables: the model's variables.
    inputs: [batch, ...].
    targets: int32 [batch] target classes.
    layer: the submodule's path, e.g. 'ValidConv_1'.
    output: 'logit' | 'softmax' | 'sigmoid', see `jmed.explain.gradients`.

  Returns:
    (features, gradients), both shaped like the layer's output.
  """
  shape = jax.eval_shape(lambda x: _perturbed_apply(apply_fn, variables, x, layer, None)[1],
                         inputs)

  def total(delta):
    logits, features = _perturbed_apply(apply_fn, variables, inputs, layer, delta)
    return jnp.sum(select_scores(logits, targets, output)), features

  grads, features = jax.grad(total, has_aux=True)(jnp.zeros(shape.shape, shape.dtype))
  return features, grads


def gradcam(apply_fn: ApplyFn, variables, inputs, targets=None, *, layer: Optional[str] = None,
            output: str = 'logit', resize: bool = True) -> jax.Array:
  """Grad-CAM maps: ReLU(sum_c alpha_c A_c) with alpha_c the spatial mean of d score / d A_c.

  Args:
    apply_fn: `apply_fn(variables, images)` -> logits [batch, classes], e.g. `model.apply`.
    variables: the model's variables.
    inputs: images [batch, height, width, channels].
    targets: class per example, int32 [batch] (or one int); None: the predicted class.
    layer: path of the submodule whose output [batch, h, w, channels] is the feature map;
      None: the last submodule with a 4-D output (see `feature_layers`).
    output: 'logit' (default, as in the paper) | 'softmax' | 'sigmoid'.
    resize: bilinearly resize the maps from the feature map's h x w to the input's
      height x width (stretched over the whole image, as is customary).

  Returns:
    float32 [batch, height, width] (or [batch, h, w] without `resize`), >= 0, each map divided
    by its maximum (all zeros where the class has no positive evidence).
  """
  inputs = jnp.asarray(inputs)
  if inputs.ndim != 4:
    raise ValueError(f'gradcam expects images [batch, height, width, channels], got shape '
                     f'{inputs.shape}.')
  if layer is None:
    layers = feature_layers(apply_fn, variables, inputs)
    if not layers:
      raise ValueError('the model has no submodule with a 4-D output to take Grad-CAM from.')
    layer = list(layers)[-1]
  check_output(output)
  check_targets(apply_fn, variables, inputs, targets)
  return _gradcam(apply_fn, variables, inputs, targets, layer=layer, output=output,
                  resize=resize)


@functools.partial(jax.jit, static_argnums=0, static_argnames=('layer', 'output', 'resize'))
def _gradcam(apply_fn, variables, inputs, targets, *, layer, output, resize):
  targets = resolve_targets(apply_fn, variables, inputs, targets)
  features, grads = layer_gradients(apply_fn, variables, inputs, targets, layer, output=output)
  if features.ndim != 4:
    raise ValueError(f'layer {layer!r} outputs shape {features.shape}, not a feature map '
                     '[batch, h, w, channels].')
  features, grads = features.astype(jnp.float32), grads.astype(jnp.float32)
  weights = grads.mean(axis=(1, 2))
  cam = nn.relu(jnp.einsum('bhwc,bc->bhw', features, weights))
  if resize:
    cam = jnp.maximum(jax.image.resize(cam, (cam.shape[0], *inputs.shape[1:3]), 'bilinear'), 0)
  peak = cam.max(axis=(1, 2), keepdims=True)
  return jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1), 0)
