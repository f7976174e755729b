"""The pure train/eval steps, data-parallel equivalence and the loop's guards."""

import dataclasses
import functools
import textwrap

import jax
import numpy as np
import pytest

from conftest import run_on_forced_devices, subset
from jmed import data as jdata
from jmed import tasks
from jmed.configs import OptimizerConfig, TrainConfig
from jmed.models import SeedCNN
from jmed.optim import make_optimizer
from jmed.train import parallel, steps
from jmed.train.loop import ConfigError, NonFiniteLossError, check_config, fit
from jmed.train.state import create_train_state


def _state(seed=0, dropout=0.0):
  tx = make_optimizer(OptimizerConfig(name='sgd', learning_rate=0.05, momentum=0.9))
  return create_train_state(SeedCNN(dropout_rate=dropout), tx, np.zeros((1, 28, 28, 1)), seed)


def _batches(mnist, steps_, batch):
  images, labels = mnist.splits['train']
  n = steps_ * batch
  return {'inputs': images[:n].reshape(steps_, batch, 28, 28, 1),
          'labels': labels[:n].reshape(steps_, batch)}


def test_train_step_is_pure_and_learns(mnist):
  batch = jax.tree.map(lambda x: x[0], _batches(mnist, 1, 64))
  state = _state()
  step = jax.jit(steps.train_step)
  new_a, m_a = step(state, batch)
  new_b, m_b = step(state, batch)  # same input, same output: no hidden state
  np.testing.assert_array_equal(m_a['loss_sum'], m_b['loss_sum'])
  assert int(new_a.step) == 1 and int(m_a['count']) == 64
  assert set(m_a) == {'loss_sum', 'count', 'accuracy_sum'}
  first = float(m_a['loss_sum']) / 64
  for _ in range(30):
    state, metrics = step(state, batch)
  assert float(metrics['loss_sum']) / 64 < 0.3 * first
  assert float(metrics['accuracy_sum']) > float(m_a['accuracy_sum'])


def test_train_steps_equals_sequential_steps(mnist):
  batches = _batches(mnist, 3, 16)
  multi, multi_metrics = jax.jit(steps.train_steps)(_state(dropout=0.3), batches)
  state = _state(dropout=0.3)
  losses = []
  for i in range(3):
    state, m = jax.jit(steps.train_step)(state, jax.tree.map(lambda x: x[i], batches))
    losses.append(m['loss_sum'])
  np.testing.assert_allclose(multi_metrics['loss_sum'], losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(multi.params), jax.tree.leaves(state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_micro_batches_give_the_whole_batch_update(mnist):
  """Two steps on a batch of 64 in 4 micro-batches of 16: the update, loss and accuracy of the
  whole batch at once, to float rounding."""
  batches = _batches(mnist, 2, 64)
  whole, whole_metrics = jax.jit(steps.train_steps)(_state(), batches)
  micro_steps = jax.jit(functools.partial(steps.train_steps, micro_batches=4))
  micro, micro_metrics = micro_steps(_state(), batches)
  np.testing.assert_allclose(micro_metrics['loss_sum'], whole_metrics['loss_sum'], rtol=1e-5)
  np.testing.assert_array_equal(micro_metrics['accuracy_sum'], whole_metrics['accuracy_sum'])
  moved = 0.0
  for a, b, start in zip(jax.tree.leaves(micro.params), jax.tree.leaves(whole.params),
                         jax.tree.leaves(_state().params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    moved = max(moved, float(np.abs(np.asarray(b) - np.asarray(start)).max()))
  assert moved > 1e-3  # the steps changed the parameters


def test_automatic_micro_batches_on_cpu():
  """About 8 micro-batches of 32 to 128 rows that divide the batch; none with BatchNorm
  statistics or DP-SGD."""
  state = _state()
  counts = {b: steps.auto_micro_batches(b, state) for b in (8, 32, 48, 64, 97, 100, 128, 512,
                                                            4096)}
  assert counts == {8: 1, 32: 1, 48: 1, 64: 2, 97: 1, 100: 2, 128: 4, 512: 8, 4096: 32}
  assert steps.auto_micro_batches(512, state, privacy=(1.0, 1.1)) == 1
  with_statistics = state.replace(model_state={'batch_stats': {}})
  assert steps.auto_micro_batches(512, with_statistics) == 1


def test_micro_batches_refuse_what_they_cannot_split(mnist):
  batch = jax.tree.map(lambda x: x[0], _batches(mnist, 1, 64))
  with pytest.raises(ValueError, match='does not divide the batch of 64'):
    steps.train_step(_state(), batch, micro_batches=3)
  from jmed.models import get_model
  tx = make_optimizer(OptimizerConfig(name='sgd', learning_rate=0.05))
  resnet = create_train_state(get_model('resnet18', num_classes=10, width=4), tx,
                              np.zeros((1, 28, 28, 1)), 0)
  with pytest.raises(ValueError, match='batch statistics'):
    steps.train_step(resnet, batch, micro_batches=2)
  with pytest.raises(ConfigError, match='micro_batch_size'):
    check_config(TrainConfig(batch_size=32, micro_batch_size=5))


def test_eval_step_masks_padding(mnist):
  images, labels = mnist.splits['test']
  batch = next(jdata.eval_batches(images[:5], labels[:5], 8))
  out = jax.jit(steps.eval_step)(_state(), batch)
  assert float(out['count']) == 5 and out['predictions'].shape == (8, 10)
  np.testing.assert_allclose(out['predictions'].sum(-1), 1.0, rtol=1e-5)


_PARALLEL_WORKER = textwrap.dedent('''
    import functools, sys, numpy as np, jax
    from jmed.configs import OptimizerConfig
    from jmed.models import SeedCNN
    from jmed.optim import make_optimizer
    from jmed.train import parallel, steps
    from jmed.train.state import create_train_state
    batches = dict(np.load(sys.argv[1]))
    mesh = parallel.make_mesh()
    tx = make_optimizer(OptimizerConfig(name='adam', learning_rate=1e-3))
    state = create_train_state(SeedCNN(dropout_rate=0.5), tx, batches['inputs'][0, :1], 0)
    state = parallel.replicate(state, mesh)
    train_steps = functools.partial(steps.train_steps, micro_batches=2)
    train = parallel.data_parallel(train_steps, mesh, batch_axis=1)
    state, metrics = train(state, parallel.shard_batch(batches, mesh, batch_axis=1))
    flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(state.params))])
    np.savez(sys.argv[2], params=flat, loss=np.asarray(metrics['loss_sum']),
             devices=len(jax.devices()))
    try:
      parallel.shard_batch({'inputs': np.zeros((30, 28, 28, 1), np.float32)}, mesh)
    except ValueError as e:
      print('ERROR:', e)
''')


def test_four_devices_equal_one_device(tmp_path, mnist):
  """Three Adam steps with dropout on a global batch of 32 in 2 micro-batches, split over 4 CPU
  devices (both compiled at XLA's lowest backend optimisation level, about half the compile
  time)."""
  path = tmp_path / 'batches.npz'
  np.savez(path, **_batches(mnist, 3, 32))
  one, _ = run_on_forced_devices(tmp_path, 1, _PARALLEL_WORKER, path, fast_compile=True)
  four, stdout = run_on_forced_devices(tmp_path, 4, _PARALLEL_WORKER, path, fast_compile=True)
  assert int(one['devices']) == 1 and int(four['devices']) == 4
  np.testing.assert_allclose(four['loss'], one['loss'], rtol=1e-5)
  np.testing.assert_allclose(four['params'], one['params'], rtol=1e-4, atol=1e-6)
  assert 'not divisible by the 4 devices' in stdout


def test_check_batch_size_message():
  mesh = parallel.make_mesh()
  parallel.check_batch_size(32, mesh)
  fake = type('M', (), {'devices': np.zeros(4)})()
  with pytest.raises(ValueError, match='30 is not divisible by the 4 devices'):
    parallel.check_batch_size(30, fake)


def _cfg(tmp_path, **kw):
  base = dict(dataset='mnist', epochs=1, batch_size=32, eval_batch_size=100,
              output_dir=str(tmp_path / 'run'), progress=False)
  return TrainConfig(**{**base, **kw})


def test_nan_loss_stops_naming_the_step(tmp_path, mnist):
  # Adam's first step moves every weight by ~lr: activations overflow to inf, the loss to NaN.
  cfg = _cfg(tmp_path, optimizer=OptimizerConfig(name='adam', learning_rate=1e30))
  with pytest.raises(NonFiniteLossError, match=r'at step \d+'):
    fit(cfg, dataset=subset(mnist, 640, 100))
  # Nothing lost: the config was written before training started.
  assert (tmp_path / 'run' / 'config.json').exists()


def test_labels_out_of_range_are_rejected(mnist):
  images, labels = mnist.splits['train']
  with pytest.raises(ValueError, match='label'):
    dataclasses.replace(mnist, splits={'train': (images, labels + 5),
                                       'test': mnist.splits['test']})


def test_refuses_to_overwrite_a_run_without_resume(tmp_path, mnist):
  small = subset(mnist, 64, 50)
  fit(_cfg(tmp_path, eval_batch_size=50), dataset=small)
  with pytest.raises(FileExistsError, match='resume'):
    fit(_cfg(tmp_path, eval_batch_size=50), dataset=small)


def test_bad_config_values_fail_clearly(tmp_path, mnist):
  with pytest.raises(ValueError, match='batch_size must be >= 1'):
    fit(_cfg(tmp_path, batch_size=0), dataset=mnist)
  with pytest.raises(ValueError, match='exceeds the 64 training examples'):
    fit(_cfg(tmp_path, batch_size=128), dataset=subset(mnist, 64, 10))


def test_model_selection_rules(tmp_path, mnist):
  from jmed.train.loop import _improves
  task = tasks.get(mnist.task)
  lower_loss, lower_auroc = task.lower_is_better('loss'), task.lower_is_better('auroc')
  assert lower_loss and not lower_auroc
  assert _improves(0.5, None, lower_auroc) and not _improves(None, None, lower_auroc)
  assert not _improves(float('nan'), None, lower_loss)
  assert _improves(0.2, {'value': 0.3}, lower_loss)
  assert not _improves(0.2, {'value': 0.3}, lower_auroc)
  assert not _improves(0.3, {'value': 0.3}, lower_auroc)  # ties keep the earlier checkpoint
  with pytest.raises(ValueError, match="select_metric 'kappa' does not apply to task "
                     "'multiclass'"):
    fit(_cfg(tmp_path, select_metric='kappa'), dataset=subset(mnist, 64, 10))
  with pytest.raises(ValueError, match='early_stopping_patience'):
    fit(_cfg(tmp_path, early_stopping_patience=-1), dataset=subset(mnist, 64, 10))
  with pytest.raises(ValueError, match='chest_xray'):  # unknown preset lists the valid ones
    fit(_cfg(tmp_path, augment='ct'), dataset=subset(mnist, 64, 10))
