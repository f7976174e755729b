"""Optax optimizers by name, with schedules, gradient clipping and L1/L2 penalties."""

import functools

import jax
import jax.numpy as jnp
import optax

from jmed.configs import OptimizerConfig
from jmed.errors import ConfigError

SCHEDULES = ('constant', 'cosine', 'warmup_cosine', 'warmup_constant')


def _sgd(cfg, lr):
  return optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov)


def _adam(cfg, lr):
  return optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)


def _rmsprop(cfg, lr):
  return optax.rmsprop(lr, decay=cfg.rms_decay, eps=cfg.eps, momentum=cfg.momentum or None,
                       nesterov=cfg.nesterov)


def _adamw(cfg, lr):
  return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                     mask=_kernel_mask)


def _amsgrad(cfg, lr):
  return optax.amsgrad(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)


OPTIMIZERS = {
    'sgd': _sgd,
    'adam': _adam,
    'rmsprop': _rmsprop,
    'adamw': _adamw,
    'amsgrad': _amsgrad,
}


def _kernel_mask(params):
  """True for kernels (rank >= 2), False for biases and norm scales."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_schedule(cfg: OptimizerConfig, total_steps: int = 0) -> optax.Schedule:
  """The learning rate as a function of the step."""
  decay_steps = cfg.decay_steps or total_steps
  if cfg.schedule == 'constant':
    return optax.constant_schedule(cfg.learning_rate)
  if cfg.schedule == 'warmup_constant':
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps),
         optax.constant_schedule(cfg.learning_rate)], [cfg.warmup_steps])
  if cfg.schedule in ('cosine', 'warmup_cosine'):
    if decay_steps <= 0:
      raise ConfigError(f'{cfg.schedule} schedule needs decay_steps > 0 (or the run length).')
    warmup = cfg.warmup_steps if cfg.schedule == 'warmup_cosine' else 0
    return optax.warmup_cosine_decay_schedule(
        0.0 if warmup else cfg.learning_rate, cfg.learning_rate, warmup, max(decay_steps, warmup + 1))
  raise ConfigError(f'Unknown schedule {cfg.schedule!r}; valid schedules: {", ".join(SCHEDULES)}.')


def _l1_penalty(l1: float) -> optax.GradientTransformation:
  """Adds l1 * sign(w) to the gradient of every kernel."""

  def update_fn(updates, state, params):
    if params is None:
      raise ValueError('The L1 penalty needs params passed to update().')
    mask = _kernel_mask(params)
    updates = jax.tree.map(lambda g, p, m: g + l1 * jnp.sign(p) if m else g, updates, params, mask)
    return updates, state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def make_optimizer(cfg: OptimizerConfig, total_steps: int = 0) -> optax.GradientTransformation:
  """Builds the optax chain: clip -> L1 -> L2 -> optimizer(schedule).

  Args:
    cfg: the optimizer config; `cfg.name` must be one of `OPTIMIZERS`.
    total_steps: the run length, used by cosine schedules when `cfg.decay_steps` is 0.

  Raises:
    ConfigError: unknown optimizer or schedule name (the message lists the valid ones), or a
      negative hyperparameter.
  """
  if cfg.name not in OPTIMIZERS:
    raise ConfigError(f'Unknown optimizer {cfg.name!r}; valid optimizers: {", ".join(OPTIMIZERS)}.')
  for field in ('learning_rate', 'momentum', 'clip_norm', 'l1', 'l2', 'weight_decay'):
    if getattr(cfg, field) < 0:
      raise ConfigError(f'{field} must be >= 0, got {getattr(cfg, field)}.')
  parts = []
  if cfg.clip_norm:
    parts.append(optax.clip_by_global_norm(cfg.clip_norm))
  if cfg.l1:
    parts.append(_l1_penalty(cfg.l1))
  if cfg.l2:
    parts.append(optax.add_decayed_weights(cfg.l2, mask=_kernel_mask))
  parts.append(OPTIMIZERS[cfg.name](cfg, make_schedule(cfg, total_steps)))
  tx = optax.chain(*parts) if len(parts) > 1 else parts[0]
  prefixes = [p.strip().strip('/') for p in cfg.freeze.split(',') if p.strip()]
  if not prefixes:
    return tx
  return optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()},
                               functools.partial(_freeze_labels, prefixes=prefixes))


def _freeze_labels(params, prefixes):
  """'frozen' for each parameter whose '/'-joined path starts with one of `prefixes`, else
  'train'; raises `ConfigError` when a prefix matches no parameter."""
  paths = {}
  def label(path, _):
    name = '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)
    paths[name] = any(name == p or name.startswith(p + '/') for p in prefixes)
    return 'frozen' if paths[name] else 'train'
  labels = jax.tree_util.tree_map_with_path(label, params)
  for prefix in prefixes:
    if not any(name == prefix or name.startswith(prefix + '/') for name in paths):
      raise ConfigError(f'freeze: no parameter path starts with {prefix!r}; the model has '
                        f'{", ".join(sorted({n.split("/")[0] for n in paths}))}.')
  return labels
