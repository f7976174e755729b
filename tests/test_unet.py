"""UNet and jmed.segmentation: shapes, gradients, Dice against scikit-learn, pure steps, and a
short real-data run that must learn per-pixel digit classes on MNIST."""

import functools
import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import f1_score

from jmed import segmentation as seg
from jmed.models.unet import UNet, UpConv, lecun_normal
from jmed.train import parallel
from jmed.train.state import create_train_state

TINY = {'num_classes': 3, 'features': (4, 8)}  # one small net shared by most tests: fewer compiles


def _images(shape, seed=0):
  return jax.random.uniform(jax.random.key(seed), shape)


def _masks(shape, num_classes, seed=0):
  return jax.random.randint(jax.random.key(seed), shape, 0, num_classes)


def _apply(model, variables, x, **kwargs):
  return jax.jit(functools.partial(model.apply, **kwargs))(variables, x)


def _tiny_state(seed=0):
  model = UNet(dropout_rate=0.2, **TINY)
  return create_train_state(model, optax.adam(1e-2), np.zeros((1, 8, 8, 1), np.float32), seed)


def _tiny_batch(n=4, seed=0):
  return {'image': np.asarray(_images((n, 8, 8, 1), seed)),
          'mask': np.asarray(_masks((n, 8, 8), 3, seed), np.int32)}


# --- The model. ---


@pytest.mark.parametrize('kwargs, shape', [
    (TINY, (4, 8, 8, 1)),
    ({'num_classes': 5, 'features': (4, 8, 16), 'norm': 'group'}, (1, 8, 12, 3)),
])
def test_unet_output_shape_and_dtype(kwargs, shape):
  model = UNet(**kwargs)
  x = _images(shape)
  logits = _apply(model, model.init(jax.random.key(0), x), x)
  assert logits.shape == shape[:3] + (kwargs['num_classes'],)
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


def test_unet_rejects_bad_shapes():
  model = UNet(num_classes=2, features=(4, 8, 16))
  with pytest.raises(ValueError, match=r'divisible by 4.*\(1, 28, 30, 1\)'):
    model.init(jax.random.key(0), jnp.zeros((1, 28, 30, 1)))
  with pytest.raises(ValueError, match=r'\[batch, height, width, channels\]'):
    model.init(jax.random.key(0), jnp.zeros((28, 28, 1)))
  with pytest.raises(ValueError, match='norm'):
    UNet(norm='layer', **TINY).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))


def test_batch_stats_collection_updated_only_in_training():
  model = UNet(**TINY)
  x = _images((4, 8, 8, 1))
  variables = model.init(jax.random.key(0), x)
  assert set(variables) == {'params', 'batch_stats'}
  out, updates = _apply(model, variables, x, train=True, mutable=['batch_stats'])
  assert out.shape == (4, 8, 8, 3)
  old, new = jax.tree.leaves(variables['batch_stats']), jax.tree.leaves(updates['batch_stats'])
  assert len(old) == len(new) == 2 * 2 * 3  # mean and var of 2 BatchNorms in 3 blocks
  assert all(not np.allclose(a, b) for a, b in zip(old, new))
  # Inference reads the running averages and changes nothing.
  np.testing.assert_array_equal(_apply(model, variables, x), _apply(model, variables, x))
  group = jax.eval_shape(UNet(norm='group', **TINY).init, jax.random.key(0), x)
  assert set(group) == {'params'}


def test_bfloat16_compute_keeps_float32_params_and_logits():
  x = _images((4, 8, 8, 1))
  model = UNet(dropout_rate=0.1, dtype=jnp.bfloat16, **TINY)  # get_model's keywords
  variables = model.init(jax.random.key(0), x)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))
  out = _apply(model, variables, x)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, _apply(UNet(**TINY), variables, x), atol=0.1)


def test_upconv_is_a_stride_2_transposed_convolution():
  x = _images((2, 3, 5, 4))
  variables = UpConv(6).init(jax.random.key(1), x)
  out = UpConv(6).apply(variables, x)
  params = dict(variables['params'], kernel=variables['params']['kernel'][::-1, ::-1])
  ref = nn.ConvTranspose(6, (2, 2), strides=(2, 2)).apply({'params': params}, x)
  assert out.shape == (2, 6, 10, 6)
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_kernel_initializer_is_flax_lecun_normal():
  key, shape = jax.random.key(3), (3, 3, 2, 4)
  np.testing.assert_allclose(lecun_normal(key, shape),
                             nn.initializers.lecun_normal()(key, shape), rtol=1e-6)


@pytest.mark.parametrize('norm', ['batch', 'none'])
def test_gradients_finite_and_nonzero_for_every_parameter(norm):
  model = UNet(norm=norm, **TINY)
  x, masks = _images((4, 8, 8, 1)), _masks((4, 8, 8), 3)
  variables = model.init(jax.random.key(0), x)
  state = {k: v for k, v in variables.items() if k != 'params'}

  def loss(params):
    logits, _ = model.apply({'params': params, **state}, x, train=True, mutable=list(state))
    return seg.dice_ce_loss(logits, masks).mean()

  grads = jax.jit(jax.grad(loss))(variables['params'])
  assert len(jax.tree.leaves(grads)) == (22 if norm == 'batch' else 16)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(g)), path
    assert np.any(g != 0), path


# --- Dice. ---


def test_dice_score_equals_pixel_f1():
  pred, masks = _masks((3, 10, 12), 4, seed=1), _masks((3, 10, 12), 4, seed=2)
  dice = np.asarray(seg.dice_score(pred, masks, 5, include_background=True))
  f1 = f1_score(np.ravel(masks), np.ravel(pred), labels=range(4), average=None)
  np.testing.assert_allclose(dice[:4], f1, rtol=1e-6)
  assert np.isnan(dice[4])  # absent from both
  no_bg = np.asarray(seg.dice_score(pred, masks, 5))
  assert np.isnan(no_bg[0]) and np.allclose(no_bg[1:4], f1[1:])
  np.testing.assert_allclose(seg.mean_dice(no_bg), f1[1:].mean(), rtol=1e-6)
  assert np.isnan(seg.mean_dice(jnp.full((3,), jnp.nan)))


def test_dice_counts_add_up_over_batches():
  pred, masks = _masks((6, 8, 8), 4, seed=3), _masks((6, 8, 8), 4, seed=4)
  counts = jax.jit(seg.dice_counts, static_argnums=2)
  whole = counts(pred, masks, 4)
  halves = [counts(pred[:3], masks[:3], 4), counts(pred[3:], masks[3:], 4)]
  for k in seg.COUNTS:
    np.testing.assert_array_equal(whole[k], halves[0][k] + halves[1][k])
  total = whole['tp'] + whole['fn']
  np.testing.assert_array_equal(total, np.bincount(np.ravel(masks), minlength=4))
  keep = np.zeros((6, 8, 8), np.int32)
  keep[:3] = 1
  masked = seg.dice_counts(pred, masks, 4, pixel_mask=keep)
  for k in seg.COUNTS:
    np.testing.assert_array_equal(masked[k], halves[0][k])


def test_dice_loss_perfect_and_totally_wrong_logits():
  masks = _masks((2, 8, 8), 3)
  assert all(len(np.unique(m)) == 3 for m in np.asarray(masks))  # every class in each example
  perfect = 30.0 * jax.nn.one_hot(masks, 3)
  wrong = 30.0 * jax.nn.one_hot((masks + 1) % 3, 3)
  loss_perfect, loss_wrong = seg.dice_loss(perfect, masks), seg.dice_loss(wrong, masks)
  assert loss_perfect.shape == (2,)
  assert np.all(loss_perfect < 1e-3) and np.all(loss_wrong > 0.95)
  assert np.all(seg.dice_loss(wrong, masks, include_background=False) > 0.95)
  # Wrong only where the pixel mask ignores it: perfect again.
  keep = (np.arange(8) < 4)[None, :, None] * np.ones((2, 8, 8))
  half = jnp.where(keep[..., None] > 0, perfect, wrong)
  assert np.all(seg.dice_loss(half, masks) > 0.3)
  assert np.all(seg.dice_loss(half, masks, pixel_mask=keep) < 1e-3)
  ce = seg.pixel_cross_entropy(wrong, masks)
  np.testing.assert_allclose(seg.dice_ce_loss(wrong, masks), loss_wrong + ce, rtol=1e-6)
  assert np.all(seg.dice_ce_loss(perfect, masks) < 1e-3)


# --- Steps. ---


def test_train_step_is_pure_learns_and_runs_data_parallel():
  mesh = parallel.make_mesh()
  n = math.lcm(8, mesh.devices.size)
  state = parallel.replicate(_tiny_state(), mesh)
  batch = parallel.shard_batch(_tiny_batch(n), mesh)
  step = parallel.data_parallel(seg.train_step, mesh, donate_state=False)
  a, m_a = step(state, batch)
  _, m_b = step(state, batch)  # same input, same output (dropout included): no hidden state
  np.testing.assert_array_equal(m_a['loss_sum'], m_b['loss_sum'])
  assert int(a.step) == 1 and int(m_a['count']) == n
  assert int(m_a['tp'].sum() + m_a['fp'].sum()) == n * 8 * 8  # every pixel predicted once
  assert not np.allclose(jax.tree.leaves(a.batch_stats)[0], jax.tree.leaves(state.batch_stats)[0])
  first = float(m_a['loss_sum'])
  for _ in range(40):
    state, metrics = step(state, batch)
  assert float(metrics['loss_sum']) < 0.6 * first  # 0.49 here, on 1 or 2 devices


def test_eval_step_ignores_padding_examples():
  mesh = parallel.make_mesh()
  n = 4 * mesh.devices.size
  state, batch = parallel.replicate(_tiny_state(), mesh), _tiny_batch(n)
  evaluate = parallel.data_parallel(lambda s, b: (s, seg.eval_step(s, b)), mesh,
                                    donate_state=False)
  half = (np.arange(n) < n // 2).astype(np.float32)
  _, padded = evaluate(state, parallel.shard_batch(dict(batch, valid=half), mesh))
  doubled = jax.tree.map(lambda x: np.concatenate([x[:n // 2]] * 2), batch)
  _, twice = evaluate(state, parallel.shard_batch(dict(doubled, valid=np.ones(n, np.float32)),
                                                  mesh))
  assert float(padded['count']) == n // 2 and float(twice['count']) == n
  np.testing.assert_allclose(2 * padded['loss_sum'], twice['loss_sum'], rtol=1e-5)
  for k in seg.COUNTS:
    np.testing.assert_array_equal(2 * padded[k], twice[k])


# --- A short real-data run. ---

STEPS, BATCH, LEARNING_RATE = 800, 8, 2e-3
# Seeds 0-3 reached mean foreground Dice 0.47-0.77 in 800 steps (0.32-0.49 in 600) and binary
# foreground Dice 0.95-0.97; the untrained net scores ~0.01.
MEAN_DICE_BAR = 0.3


def _digit_masks(images, labels):
  """Semantic target: digit label + 1 on the stroke (pixel > 0.5), 0 (background) elsewhere."""
  return np.where(images[..., 0] > 0.5, labels[:, None, None] + 1, 0).astype(np.int32)


@jax.jit
def _eval_and_predict(state, batch):
  logits = state.apply_fn({'params': state.params, **state.batch_stats}, batch['image'])
  return seg.eval_step(state, batch), jnp.argmax(logits, -1)


def _evaluate(state, images, labels, batch_size=500):
  """Per-class Dice from eval_step's counts summed over batches, and every prediction."""
  totals = {k: np.zeros(11, np.int64) for k in seg.COUNTS}
  preds = []
  for i in range(0, len(labels), batch_size):
    batch = {'image': images[i:i + batch_size],
             'mask': _digit_masks(images[i:i + batch_size], labels[i:i + batch_size])}
    out, pred = jax.device_get(_eval_and_predict(state, batch))
    for k in totals:
      totals[k] += out[k]
    preds.append(pred)
  return np.asarray(seg.dice_from_counts(totals)), np.concatenate(preds)


def test_unet_learns_mnist_digit_segmentation(mnist):
  """11 classes: the net must tell which digit each stroke pixel belongs to."""
  start = time.time()
  (x_train, y_train), (x_test, y_test) = mnist.splits['train'], mnist.splits['test']
  model, tx = UNet(num_classes=11, features=(16, 32, 64)), optax.adam(LEARNING_RATE)
  # Jitted, the init compiles once instead of op by op: ~3 s faster on CPU, same parameters.
  state = jax.jit(lambda x: create_train_state(model, tx, x, seed=0))(x_train[:1])
  untrained, _ = _evaluate(state, x_test[:500], y_test[:500])
  step = jax.jit(seg.train_step)
  for i in range(STEPS):
    j = i * BATCH % len(y_train)
    images, labels = x_train[j:j + BATCH], y_train[j:j + BATCH]
    state, metrics = step(state, {'image': images, 'mask': _digit_masks(images, labels)})
  dice, pred = _evaluate(state, x_test, y_test)

  masks = _digit_masks(x_test, y_test)
  np.testing.assert_allclose(dice, seg.dice_score(pred, masks, 11), rtol=1e-5)
  foreground = float(seg.dice_score(pred > 0, masks > 0, 2)[1])
  mean = float(seg.mean_dice(dice))
  print(f'\nmean foreground Dice {mean:.3f} (untrained {seg.mean_dice(untrained):.3f}), '
        f'binary foreground Dice {foreground:.3f}, per digit {np.round(dice[1:], 2)}, '
        f'{time.time() - start:.1f} s')
  assert np.isfinite(float(metrics['loss_sum']))
  assert float(seg.mean_dice(untrained)) < 0.1
  assert mean > MEAN_DICE_BAR
  assert foreground > 0.9
