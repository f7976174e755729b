"""SeedCNN and its layers: shapes, parameter layout, equivalence of conv implementations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmed.models import SeedCNN, ValidConv, get_model, max_pool


def _images(shape, seed=0):
  return jax.random.uniform(jax.random.key(seed), shape)


def test_seed_cnn_shapes_and_keras_parameter_count():
  model = SeedCNN(num_classes=10)
  variables = model.init(jax.random.key(0), _images((4, 28, 28, 1)))
  logits = model.apply(variables, _images((4, 28, 28, 1), 1))
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  # Keras' summary of the same model: 320 + 18,496 + 102,464 + 650 parameters.
  assert sum(x.size for x in jax.tree.leaves(variables)) == 121_930


def test_seed_cnn_configurable_widths_classes_channels():
  model = SeedCNN(num_classes=3, features=(8, 16), hidden=12)
  x = _images((2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  assert model.apply(variables, x).shape == (2, 3)
  assert variables['params']['Dense_0']['kernel'].shape == (6 * 6 * 16, 12)


@pytest.mark.parametrize('size', [28, 31])
def test_seed_cnn_equals_flax_conv_and_pool(size):
  """The same logits as flax's own layers (`nn.Conv` 'VALID', `nn.max_pool`) with the same
  parameters, for inputs whose convolutions have odd sizes (the rows that pooling drops are not
  computed) and even ones; and the same gradient."""
  class Reference(nn.Module):
    @nn.compact
    def __call__(self, x):
      for i, width in enumerate((32, 64)):
        x = nn.Conv(width, (3, 3), padding='VALID', name=f'ValidConv_{i}')(x)
        x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
      x = nn.relu(nn.Dense(64, name='Dense_0')(x.reshape((x.shape[0], -1))))
      return nn.Dense(10, name='Dense_1')(x)

  x = _images((3, size, size, 1))
  variables = SeedCNN().init(jax.random.key(0), x)
  for impl in ('im2col', 'xla'):
    np.testing.assert_allclose(SeedCNN(conv_impl=impl).apply(variables, x),
                               Reference().apply(variables, x), rtol=1e-5, atol=1e-5)
  grads = [jax.grad(lambda v, m=m: m.apply(v, x).sum())(variables) for m in (SeedCNN(),
                                                                            Reference())]
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_seed_cnn_rejects_wrong_rank():
  model = SeedCNN()
  with pytest.raises(ValueError, match=r'\[batch, height, width, channels\]'):
    model.init(jax.random.key(0), jnp.zeros((28, 28, 1)))


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = SeedCNN(dtype=jnp.bfloat16)
  x = _images((2, 28, 28, 1))
  variables = model.init(jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  ref = SeedCNN().apply(variables, x)
  out = model.apply(variables, x)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref, atol=0.05)


def test_dropout_only_in_training():
  model = SeedCNN(dropout_rate=0.5)
  x = _images((8, 28, 28, 1))
  variables = model.init(jax.random.key(0), x)
  eval_a, eval_b = model.apply(variables, x), model.apply(variables, x)
  np.testing.assert_array_equal(eval_a, eval_b)
  train_a = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(1)})
  train_b = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(2)})
  assert not np.allclose(train_a, train_b)


@pytest.mark.parametrize('in_features', [1, 5])
def test_im2col_conv_equals_xla_conv_values_and_gradients(in_features):
  x = _images((3, 9, 11, in_features))
  im2col, xla = ValidConv(7, impl='im2col'), ValidConv(7, impl='xla')
  variables = im2col.init(jax.random.key(0), x)
  variables = jax.tree.map(lambda p: p + 0.1, variables)  # non-zero bias too
  np.testing.assert_allclose(im2col.apply(variables, x), xla.apply(variables, x), rtol=1e-5,
                             atol=1e-5)
  # Same parameter names and shapes as flax's own nn.Conv.
  conv_vars = nn.Conv(7, (3, 3), padding='VALID').init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, conv_vars) == jax.tree.map(jnp.shape, variables)
  np.testing.assert_allclose(nn.Conv(7, (3, 3), padding='VALID').apply(variables, x),
                             xla.apply(variables, x), rtol=1e-5, atol=1e-5)

  def loss(module):
    return lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))

  g_im2col = jax.grad(loss(im2col), argnums=(0, 1))(variables, x)
  g_xla = jax.grad(loss(xla), argnums=(0, 1))(variables, x)
  for a, b in zip(jax.tree.leaves(g_im2col), jax.tree.leaves(g_xla)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_conv_rejects_unknown_impl_and_too_small_input():
  with pytest.raises(ValueError, match='impl'):
    ValidConv(4, impl='winograd').init(jax.random.key(0), jnp.zeros((1, 5, 5, 2)))
  with pytest.raises(ValueError, match='smaller than the kernel'):
    ValidConv(4, impl='im2col').init(jax.random.key(0), jnp.zeros((1, 2, 5, 2)))


@pytest.mark.parametrize('size', [(26, 26), (11, 11), (7, 10)])
def test_max_pool_equals_flax_max_pool_and_its_gradient(size):
  x = _images((2, *size, 3))
  ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(max_pool(x, 2), ref(x))
  g = jax.grad(lambda x: jnp.sum(jnp.cos(max_pool(x, 2))))(x)
  g_ref = jax.grad(lambda x: jnp.sum(jnp.cos(ref(x))))(x)
  np.testing.assert_allclose(g, g_ref, rtol=1e-6)


def test_every_parameter_receives_gradient():
  model = SeedCNN(num_classes=4, features=(4, 8), hidden=8)
  x, y = _images((6, 28, 28, 1)), jnp.arange(6) % 4
  params = model.init(jax.random.key(0), x)['params']

  def loss(p):
    logits = model.apply({'params': p}, x)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(6), y])

  grads = jax.grad(loss)(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, path


def test_get_model_unknown_name_lists_valid():
  with pytest.raises(ValueError, match='seed_cnn'):
    get_model('resnet1000')
  assert isinstance(get_model('seed_cnn', num_classes=2), SeedCNN)
