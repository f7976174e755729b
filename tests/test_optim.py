"""Optimizers by name, schedules, clipping and penalties."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jmed.configs import OptimizerConfig
from jmed.errors import ConfigError
from jmed.optim import OPTIMIZERS, make_optimizer, make_schedule

PARAMS = {'kernel': jnp.array([[1.0, -2.0], [3.0, -4.0]]), 'bias': jnp.array([0.5, -0.5])}


def _loss(p):
  return jnp.sum((p['kernel'] - 1.0) ** 2) + jnp.sum((p['bias'] + 1.0) ** 2)


@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
def test_each_optimizer_minimises_a_quadratic(name):
  tx = make_optimizer(OptimizerConfig(name=name, learning_rate=0.05, momentum=0.5))
  params, state = PARAMS, tx.init(PARAMS)
  start = _loss(params)
  for _ in range(100):
    updates, state = tx.update(jax.grad(_loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  assert _loss(params) < 0.2 * start


def test_unknown_optimizer_lists_valid_names():
  with pytest.raises(ValueError, match='sgd, adam, rmsprop, adamw, amsgrad'):
    make_optimizer(OptimizerConfig(name='adagrad'))


def test_unknown_schedule_and_negative_values_fail():
  with pytest.raises(ValueError, match='warmup_cosine'):
    make_optimizer(OptimizerConfig(schedule='step'))
  with pytest.raises(ValueError, match='learning_rate'):
    make_optimizer(OptimizerConfig(learning_rate=-1.0))


def test_schedules():
  cos = make_schedule(OptimizerConfig(learning_rate=0.1, schedule='cosine'), total_steps=100)
  assert np.isclose(cos(0), 0.1) and np.isclose(cos(50), 0.05) and cos(100) < 1e-6
  warm = make_schedule(OptimizerConfig(learning_rate=0.1, schedule='warmup_cosine',
                                       warmup_steps=10), total_steps=100)
  assert np.isclose(warm(0), 0.0) and np.isclose(warm(5), 0.05) and np.isclose(warm(10), 0.1)
  assert warm(100) < 1e-6
  const = make_schedule(OptimizerConfig(learning_rate=0.1, schedule='warmup_constant',
                                        warmup_steps=4), total_steps=100)
  assert np.isclose(const(2), 0.05) and np.isclose(const(90), 0.1)
  with pytest.raises(ValueError, match='decay_steps'):
    make_schedule(OptimizerConfig(schedule='cosine'), total_steps=0)


def test_nesterov_momentum_differs_from_plain_momentum():
  grads = jax.grad(_loss)(PARAMS)
  outs = []
  for nesterov in (False, True):
    tx = make_optimizer(OptimizerConfig(momentum=0.9, nesterov=nesterov))
    state = tx.init(PARAMS)
    _, state = tx.update(grads, state, PARAMS)
    updates, _ = tx.update(grads, state, PARAMS)
    outs.append(updates['kernel'])
  assert not np.allclose(*outs)


def test_gradient_clipping_bounds_the_global_norm():
  tx = make_optimizer(OptimizerConfig(learning_rate=1.0, clip_norm=0.5))
  huge = jax.tree.map(lambda p: 1e6 * jnp.ones_like(p), PARAMS)
  updates, _ = tx.update(huge, tx.init(PARAMS), PARAMS)
  assert np.isclose(optax.tree.norm(updates), 0.5, rtol=1e-5)


def test_l1_and_l2_penalties_act_on_kernels_only():
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  tx = make_optimizer(OptimizerConfig(learning_rate=1.0, l2=0.1))
  updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
  np.testing.assert_allclose(updates['kernel'], -0.1 * PARAMS['kernel'], rtol=1e-6)
  np.testing.assert_array_equal(updates['bias'], 0.0)
  tx = make_optimizer(OptimizerConfig(learning_rate=1.0, l1=0.1))
  updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
  np.testing.assert_allclose(updates['kernel'], -0.1 * np.sign(PARAMS['kernel']), rtol=1e-6)
  np.testing.assert_array_equal(updates['bias'], 0.0)


def test_adamw_decays_kernels_not_biases():
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  tx = make_optimizer(OptimizerConfig(name='adamw', learning_rate=1.0, weight_decay=0.1))
  updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
  np.testing.assert_allclose(updates['kernel'], -0.1 * PARAMS['kernel'], rtol=1e-6)
  np.testing.assert_array_equal(updates['bias'], 0.0)


def test_freeze_leaves_the_named_parameters_unchanged():
  params = {'Embed_0': {'embedding': jnp.ones((3, 2))}, 'Dense_0': {'kernel': jnp.ones((2, 2)),
                                                                    'bias': jnp.ones(2)}}
  tx = make_optimizer(OptimizerConfig('adamw', 0.1, weight_decay=0.5, freeze='Embed_0'))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert not jnp.any(updates['Embed_0']['embedding'])  # no step, no weight decay
  assert jnp.all(updates['Dense_0']['kernel'] != 0)
  with pytest.raises(ConfigError, match=r"freeze: no parameter path starts with 'Embed'; the "
                     'model has Dense_0, Embed_0'):
    make_optimizer(OptimizerConfig('adam', 0.1, freeze='Embed')).init(params)
