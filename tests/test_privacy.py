"""DP-SGD: per-example clipping and noise, data parallelism, the accountant, and a real run."""

import dataclasses
import json
import math
import os
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import optimize, stats

from conftest import one_and_four_devices, subset
from jmed import data as jdata
from jmed import models
from jmed import privacy
from jmed import tasks
from jmed.configs import OptimizerConfig, PrivacyConfig, TrainConfig
from jmed.train import steps
from jmed.train.loop import fit
from jmed.train.state import create_train_state


def _batch(n=16, features=6, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, features)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32)
  return {'inputs': x, 'labels': y}


def _state(model=None, lr=0.1, seed=0):
  model = model or models.MLP(num_classes=2, hidden=(8,))
  return create_train_state(model, optax.sgd(lr), np.zeros((1, 6), np.float32), seed)


def _flat(tree):
  return np.concatenate([np.ravel(a) for a in jax.tree.leaves(jax.device_get(tree))])


def test_without_clipping_or_noise_a_dp_step_is_the_ordinary_step():
  batch, state = _batch(), _state()
  plain, _ = jax.jit(steps.bind(steps.train_step, 'binary'))(state, batch)
  dp, metrics = jax.jit(steps.bind(steps.train_step, 'binary', privacy=(1e6, 0.0)))(state, batch)
  np.testing.assert_allclose(_flat(dp.params), _flat(plain.params), rtol=1e-5, atol=1e-6)
  assert int(metrics['clipped']) == 0


def test_clipping_bounds_each_example_then_averages():
  """The update is -lr * mean_i(g_i * min(1, C / |g_i|)), computed here one example at a time."""
  batch, state = _batch(), _state(lr=1.0)
  clip = 0.05
  expected = []
  for x, y in zip(batch['inputs'], batch['labels']):
    g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        state.apply_fn({'params': p}, x[None]), y[None]).mean())(state.params)
    norm = float(optax.tree.norm(g))
    expected.append(_flat(g) * min(1.0, clip / norm))
  new, metrics = steps.train_step(state, batch, task='binary', privacy=(clip, 0.0))
  np.testing.assert_allclose(_flat(state.params) - _flat(new.params), np.mean(expected, 0),
                             rtol=1e-4, atol=1e-7)
  assert int(metrics['clipped']) == len(expected)  # every gradient is longer than 0.05


def test_noise_has_std_sigma_times_clip_over_batch():
  grads = {'w': jnp.zeros((32, 20000))}  # 32 examples, all-zero gradients
  noisy, clipped = privacy.clipped_noisy_mean(grads, jax.random.key(0), 2.0, 1.5)
  assert int(clipped) == 0
  np.testing.assert_allclose(float(noisy['w'].std()), 1.5 * 2.0 / 32, rtol=0.02)
  assert abs(float(noisy['w'].mean())) < 4 * 1.5 * 2.0 / 32 / math.sqrt(20000)


_PARALLEL_WORKER = textwrap.dedent('''
    import sys, numpy as np, jax, optax
    from jmed import models
    from jmed.train import parallel, steps
    from jmed.train.state import create_train_state
    inputs = dict(np.load(sys.argv[1]))
    mesh = parallel.make_mesh()
    model = models.MLP(num_classes=2, hidden=(8,), dropout_rate=0.3)
    tx = optax.sgd(0.1, momentum=0.9)  # a jitted init: one compile, not one per operation
    state = jax.jit(lambda sample: create_train_state(model, tx, sample, 0))(inputs['x'][0, :1])
    state = parallel.replicate(state, mesh)
    train = parallel.data_parallel(steps.bind(steps.train_steps, 'binary', privacy=(0.5, 1.1)),
                                   mesh, batch_axis=1)
    state, metrics = train(state, parallel.shard_batch({'inputs': inputs['x'],
                                                        'labels': inputs['y']}, mesh, batch_axis=1))
    flat = np.concatenate([np.ravel(a) for a in jax.tree.leaves(jax.device_get(state.params))])
    np.savez(sys.argv[2], devices=len(jax.devices()), flat=flat,
             loss=np.asarray(metrics['loss_sum']), clipped=np.asarray(metrics['clipped']))
''')


def test_four_devices_equal_one_device_with_noise_and_dropout(tmp_path):
  """Per-example gradients, clipping, noise and dropout keys are those of a one-device run."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 16, 6)).astype(np.float32)
  path = tmp_path / 'inputs.npz'
  np.savez(path, x=x, y=(x[..., 0] > 0).astype(np.int32))
  one, four = one_and_four_devices(tmp_path, _PARALLEL_WORKER, path)
  np.testing.assert_allclose(four['loss'], one['loss'], rtol=1e-5)
  np.testing.assert_array_equal(four['clipped'], one['clipped'])
  np.testing.assert_allclose(four['flat'], one['flat'], rtol=1e-4, atol=1e-5)


class _BatchNormNet(nn.Module):
  """Dense -> BatchNorm -> Dense: statistics that mix the examples of a batch."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x))
    return nn.Dense(2)(nn.relu(x))


def test_check_applies_refuses_coupled_losses_and_batchnorm():
  """The one applicability check, asked of the task and the model state (fit and the step)."""
  privacy.check_applies(tasks.get('binary'), {})  # per-example loss, no model state: fine
  with pytest.raises(ValueError, match="task 'survival' couples the examples of a batch"):
    privacy.check_applies(tasks.get('survival'), {})
  with pytest.raises(ValueError, match=r"BatchNorm statistics.*\['batch_stats'\]"):
    privacy.check_applies(tasks.get('binary'), {'batch_stats': {'mean': np.zeros(2)}})
  state = _state(_BatchNormNet())
  assert set(state.model_state) == {'batch_stats'}
  with pytest.raises(ValueError, match='BatchNorm statistics'):
    steps.train_step(state, _batch(), task='binary', privacy=(1.0, 1.0))


def _exact_gaussian_epsilon(sigma: float, delta: float) -> float:
  """Epsilon of one Gaussian mechanism (sensitivity 1) at delta: Balle & Wang 2018, Thm. 8."""
  def delta_at(eps):
    return (stats.norm.cdf(0.5 / sigma - eps * sigma)
            - math.exp(eps) * stats.norm.cdf(-0.5 / sigma - eps * sigma))
  return optimize.brentq(lambda eps: delta_at(eps) - delta, 1e-6, 100)


@pytest.mark.parametrize('sigma', [0.8, 2.0])
def test_accountants_bound_the_exact_gaussian_mechanism(sigma):
  """One full-batch step is one Gaussian mechanism: PLD is tight, RDP an upper bound."""
  exact = _exact_gaussian_epsilon(sigma, 1e-5)
  assert privacy.epsilon(sigma, 1.0, 1, 1e-5, 'pld') == pytest.approx(exact, rel=0.02)
  assert exact * 0.999 <= privacy.epsilon(sigma, 1.0, 1, 1e-5, 'rdp') < exact * 1.5


def test_epsilon_grows_with_steps_and_sampling_and_shrinks_with_noise():
  base = privacy.epsilon(1.1, 0.01, 1000, 1e-5)
  assert privacy.epsilon(1.1, 0.01, 4000, 1e-5) > base
  assert privacy.epsilon(1.1, 0.04, 1000, 1e-5) > base
  assert privacy.epsilon(2.0, 0.01, 1000, 1e-5) < base
  assert privacy.epsilon(1.1, 0.01, 1000, 1e-5, 'pld') <= base  # PLD is the tighter one
  assert privacy.epsilon(1.1, 0.01, 0, 1e-5) == 0.0


def test_noise_calibration_inverts_epsilon():
  sigma = privacy.noise_multiplier_for(2.0, 0.01, 1000, 1e-5)
  assert privacy.epsilon(sigma, 0.01, 1000, 1e-5) == pytest.approx(2.0, rel=0.01)


@pytest.mark.parametrize('kwargs', [dict(noise_multiplier=0.0), dict(sample_rate=1.5),
                                    dict(delta=0.0), dict(accountant='moments')])
def test_bad_accounting_arguments_are_refused(kwargs):
  args = dict(noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=1e-5, accountant='rdp')
  with pytest.raises(ValueError):
    privacy.epsilon(**{**args, **kwargs})


@pytest.fixture(scope='module')
def pneumonia(data_dir):
  return subset(jdata.load_dataset('pneumoniamnist', data_dir=str(data_dir)), 2048, 624)


def _cfg(tmp_path, **kw):
  base = dict(model='seed_cnn', epochs=2, batch_size=64, eval_batch_size=208,
              steps_per_dispatch=4, output_dir=str(tmp_path / 'run'), progress=False,
              optimizer=OptimizerConfig(name='sgd', learning_rate=0.5),
              privacy=PrivacyConfig(enabled=True, l2_clip=1.0, noise_multiplier=1.0))
  return TrainConfig(**{**base, **kw})


def test_a_private_run_learns_and_reports_its_budget(tmp_path, pneumonia):
  """Real PneumoniaMNIST images through `fit` with DP-SGD: it learns, and the summary's epsilon
  is the accountant's for the steps taken."""
  summary = fit(_cfg(tmp_path), dataset=pneumonia)
  assert summary['test_auroc'] > 0.8, summary  # chance: 0.5
  budget = summary['privacy']
  n = pneumonia.sizes['train']
  assert budget['steps'] == summary['steps'] == 2 * (n // 64)
  assert budget['delta'] == pytest.approx(1 / n)
  assert budget['epsilon'] == pytest.approx(
      privacy.epsilon(1.0, 64 / n, budget['steps'], 1 / n))
  with open(os.path.join(tmp_path, 'run', 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert records[0]['epsilon'] < records[1]['epsilon'] == pytest.approx(budget['epsilon'])
  assert 0 <= records[0]['train_clipped_fraction'] <= 1


def test_private_runs_refuse_batchnorm_and_cox_before_writing(tmp_path, pneumonia, data_dir):
  # A one-stage ResNet: fit refuses it once its BatchNorm state exists, after the init.
  cfg = _cfg(tmp_path, model='resnet18', model_kwargs={'width': 4, 'stage_sizes': [1]})
  with pytest.raises(ValueError, match='BatchNorm statistics'):
    fit(cfg, dataset=pneumonia)
  metabric = jdata.load_dataset('metabric', data_dir=str(data_dir))
  with pytest.raises(ValueError, match="task 'survival' couples the examples of a batch"):
    fit(dataclasses.replace(cfg, model='mlp', model_kwargs={}), dataset=metabric)
  assert not os.path.exists(tmp_path / 'run')
  bad = dataclasses.replace(cfg, privacy=PrivacyConfig(enabled=True, l2_clip=0.0))
  with pytest.raises(ValueError, match='l2_clip'):
    fit(bad, dataset=pneumonia)
