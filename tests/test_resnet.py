"""ResNet-18/50: shapes, parameter counts, BatchNorm state, gradients, device-parallel equality."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import one_and_four_devices
from jmed import models
from jmed import tasks
from jmed.models.resnet import BottleneckBlock, ResNet, ResNet18, ResNet50
from jmed.train import steps
from jmed.train.state import create_train_state


def _param_count(model, shape):
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))
  return sum(np.prod(x.shape) for x in jax.tree.leaves(variables['params']))


def test_imagenet_parameter_counts_match_the_reference_architectures():
  # torchvision's resnet18 / resnet50 with 1000 classes: 11,689,512 and 25,557,032 parameters.
  assert _param_count(ResNet18(num_classes=1000, stem='imagenet'), (1, 224, 224, 3)) == 11_689_512
  assert _param_count(ResNet50(num_classes=1000, stem='imagenet'), (1, 224, 224, 3)) == 25_557_032


def test_small_stem_keeps_28x28_resolution_into_the_first_stage():
  model = ResNet18(num_classes=2)
  out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0),
                                                      jnp.zeros((3, 28, 28, 1)))[0])
  assert out.shape == (3, 2) and out.dtype == jnp.float32
  # 3x3 stem on 1 channel: 576 weights, no 7x7 stem.
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1))))
  assert params['params']['stem_conv']['kernel'].shape == (3, 3, 1, 64)


def _tiny(block=None, **kw):
  kw = {'num_classes': 3, 'stage_sizes': (1, 1), 'width': 8, **kw}
  if block is not None:
    kw['block'] = block
  return ResNet(**kw)


@pytest.mark.parametrize('block,stem,size', [(None, 'small', 28), (BottleneckBlock, 'small', 28),
                                             (None, 'imagenet', 64)])
def test_shapes_and_batch_stats(block, stem, size):
  model = _tiny(block, stem=stem)
  x = jax.random.uniform(jax.random.key(1), (4, size, size, 3))
  variables = model.init(jax.random.key(0), x)
  assert set(variables) == {'params', 'batch_stats'}
  logits, new = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert logits.shape == (4, 3) and logits.dtype == jnp.float32
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables['batch_stats'],
                         new['batch_stats'])
  assert all(jax.tree.leaves(changed)), 'train mode must update every running statistic'
  eval_logits = model.apply(variables, x, train=False)  # no mutation needed in eval mode
  assert eval_logits.shape == (4, 3)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = _tiny(dtype=jnp.bfloat16)
  x = jnp.ones((2, 28, 28, 1))
  variables = model.init(jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['params']))
  assert model.apply(variables, x).dtype == jnp.float32


def test_gradient_reaches_every_parameter():
  model = _tiny()
  x = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
  y = jnp.arange(8) % 3
  variables = model.init(jax.random.key(0), x)

  def loss(params):
    logits, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                            train=True, mutable=['batch_stats'])
    return tasks.get('multiclass').loss(logits, y).mean()

  # Each block's last BatchNorm scale starts at zero (the block is the identity at init), which
  # blocks the gradient of its branch: give every scale 1 to check that gradients reach all.
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: jnp.ones_like(v) if jax.tree_util.keystr(p).endswith("['scale']") else v,
      variables['params'])
  grads = jax.grad(loss)(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert jnp.all(jnp.isfinite(g)), jax.tree_util.keystr(path)
    assert float(jnp.abs(g).sum()) > 0, jax.tree_util.keystr(path)


def test_registered_and_bad_input():
  for name in ('resnet18', 'resnet50', 'resnet18_imagenet', 'resnet50_imagenet'):
    model = models.get_model(name, num_classes=2, dropout_rate=0.1, dtype=jnp.float32)
    assert isinstance(model, ResNet)
  with pytest.raises(ValueError, match=r'\[batch, height, width, channels\]'):
    _tiny().init(jax.random.key(0), jnp.zeros((28, 28, 1)))
  with pytest.raises(ValueError, match='stem'):
    _tiny(stem='huge').init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


def test_train_step_learns_a_small_problem():
  """Batch statistics threaded through the pure step; loss falls on a fixed batch."""
  model = _tiny()
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, size=16).astype(np.int32)
  x = rng.uniform(size=(16, 28, 28, 1)).astype(np.float32) * 0.5
  x[y == 1, :14] += 0.5  # class 1: bright top half (a spatial pattern BatchNorm cannot erase)
  state = create_train_state(model, optax.adam(1e-2), x[:1], 0)
  step = jax.jit(steps.train_step)
  losses = []
  for _ in range(15):
    state, metrics = step(state, {'inputs': x, 'labels': y})
    losses.append(float(metrics['loss_sum']) / 16)
  assert losses[-1] < 0.5 * losses[0], losses
  assert int(state.step) == 15


_PARALLEL_WORKER = textwrap.dedent('''
    import sys, numpy as np, jax, optax
    from jmed.models.resnet import ResNet
    from jmed.train import parallel, steps
    from jmed.train.state import create_train_state
    batches = dict(np.load(sys.argv[1]))
    mesh = parallel.make_mesh()
    model = ResNet(num_classes=2, stage_sizes=(1, 1), width=8, dropout_rate=0.3)
    tx = optax.sgd(0.1, momentum=0.9)  # a jitted init: one compile, not one per operation
    init = jax.jit(lambda sample: create_train_state(model, tx, sample, 0))
    state = init(batches['inputs'][0, :1])
    state = parallel.replicate(state, mesh)
    step_fn = steps.bind(steps.train_steps, 'binary', 'chest_xray')
    train = parallel.data_parallel(step_fn, mesh, batch_axis=1)
    state, metrics = train(state, parallel.shard_batch(batches, mesh, batch_axis=1))
    leaves = jax.tree.leaves(jax.device_get((state.params, state.model_state)))
    np.savez(sys.argv[2], flat=np.concatenate([np.ravel(x) for x in leaves]),
             loss=np.asarray(metrics['loss_sum']), devices=len(jax.devices()))
''')


def test_four_devices_equal_one_device_with_batchnorm_and_augmentation(tmp_path):
  """BatchNorm statistics over the global batch: 4 devices give the 1-device params and stats."""
  rng = np.random.default_rng(0)
  path = tmp_path / 'batches.npz'
  np.savez(path, inputs=rng.uniform(size=(2, 16, 28, 28, 1)).astype(np.float32),
           labels=rng.integers(0, 2, size=(2, 16)).astype(np.int32))
  one, four = one_and_four_devices(tmp_path, _PARALLEL_WORKER, path)
  np.testing.assert_allclose(four['loss'], one['loss'], rtol=1e-5)
  np.testing.assert_allclose(four['flat'], one['flat'], rtol=1e-4, atol=1e-5)


def test_small_resnet_learns_real_pneumoniamnist(data_dir):
  """A narrow ResNet (width 8) with chest-X-ray augmentation learns PneumoniaMNIST in 2 epochs."""
  from jmed import data as jdata
  from jmed.metrics import binary_metrics
  dataset = jdata.load_dataset('pneumoniamnist', data_dir=str(data_dir))
  images, labels = dataset.splits['train']
  model = ResNet(num_classes=2, stage_sizes=(1, 1, 1), width=8)
  tx = optax.adam(3e-3)
  # Initialised under jit: one compile, and the state's step is an array from the start, so the
  # train step compiles once (a Python-int step would trace it a second time).
  state = jax.jit(lambda sample: create_train_state(model, tx, sample, 0))(images[:1])
  train = jax.jit(steps.bind(steps.train_step, 'binary', 'chest_xray'))
  for epoch in range(2):
    for batch in jdata.train_batches(images, labels, 64, seed=0, epoch=epoch):
      state, _ = train(state, batch)
  evaluate = jax.jit(steps.bind(steps.eval_step, 'binary'))
  test_images, test_labels = dataset.splits['test']
  probs = np.concatenate([np.asarray(evaluate(state, b)['predictions'])[b['valid'] > 0]
                          for b in jdata.eval_batches(test_images, test_labels, 208)])
  result = binary_metrics(probs, test_labels)
  # Chance: AUROC 0.5; the untrained net is near it (BatchNorm running stats at init).
  assert result['auroc'] > 0.85, result
