"""Treatment effect: metrics, the task's loss and label checks, TARNet/Dragonnet, the CFR step
on 4 devices, and the task_kwargs wiring."""

import dataclasses
import json
import math
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import one_and_four_devices
from jmed import configs, models, tasks
from jmed.causal import metrics
from jmed.errors import ConfigError, DataError
from jmed.train import loop

TASK = tasks.get('treatment_effect')


def _labels(n=8, seed=0, mu=True):
  """[n, 4] (treatment, factual outcome, mu0, mu1): half treated; true effect 2 + x."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=n)
  treatment = np.arange(n) % 2
  mu0, mu1 = x, x + 2 + x
  outcome = np.where(treatment == 1, mu1, mu0) + 0.1 * rng.normal(size=n)
  labels = np.stack([treatment, outcome, mu0, mu1], 1).astype(np.float32)
  if not mu:
    labels[:, 2:] = np.nan
  return labels


# ---------------------------------------------------------------- metrics (host)


def test_pehe_ate_and_policy_risk_on_a_hand_computed_example():
  effect_hat, effect_true = [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]
  assert metrics.pehe(effect_hat, effect_true) == pytest.approx(math.sqrt((0 + 1 + 4 + 9) / 4))
  assert metrics.ate_error(effect_hat, effect_true) == pytest.approx(1.5)
  # The policy treats units 0 and 1 (positive effect): p = 1/2. Agreeing units: 0 (treated,
  # outcome 1 -> scaled 1) and 3 (control, outcome 0 -> 0): value = 1/2 * 1 + 1/2 * 0.
  assert metrics.policy_risk([1, 1, -1, -1], [1, 0, 1, 0], [1.0, 0.5, 0.5, 0.0]) == 0.5
  # Ranking the treated responders first gives a positive Qini coefficient, reversing it a
  # negative one.
  t, y = np.array([1, 0, 1, 0, 1, 0]), np.array([1.0, 0, 1, 0, 0, 0])
  good = metrics.qini([3, 2.5, 2, 1.5, 0, -1], t, y)
  assert good > 0 and metrics.qini([-3, -2.5, -2, -1.5, 0, 1], t, y) < good
  assert metrics.summarize([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1 / math.sqrt(3)))
  assert metrics.summarize([0.5]) == (0.5, 0.0)


def test_evaluate_reports_pehe_only_with_potential_outcomes():
  labels = _labels()
  truth = labels[:, 3] - labels[:, 2]
  predictions = np.stack([labels[:, 2], labels[:, 2] + truth + 1, truth + 1], 1)  # effect + 1
  scores = TASK.evaluate(predictions, labels)
  assert scores['pehe'] == pytest.approx(1.0, rel=1e-5)
  assert scores['ate_error'] == pytest.approx(1.0, rel=1e-5)
  factual = np.where(labels[:, 0] == 1, predictions[:, 1], predictions[:, 0])
  assert scores['factual_rmse'] == pytest.approx(
      np.sqrt(np.mean((factual - labels[:, 1]) ** 2)), rel=1e-5)
  observational = TASK.evaluate(predictions, _labels(mu=False))
  assert 'pehe' not in observational and 'ate_error' not in observational
  assert {'factual_rmse', 'policy_risk', 'qini'} <= set(observational)
  assert TASK.select_metric('auto') == 'factual_rmse' and TASK.lower_is_better('factual_rmse')
  table = TASK.prediction_table(predictions, ['y0', 'y1'])
  assert list(table) == ['predicted_y0', 'predicted_y1', 'predicted_effect']


# ---------------------------------------------------------------- the task (device)


def _outputs(n=8, seed=1, dragonnet=False):
  keys = jax.random.split(jax.random.key(seed), 3)
  out = {'outcomes': jax.random.normal(keys[0], (n, 2)),
         'representation': jax.random.normal(keys[1], (n, 4))}
  if dragonnet:
    out.update(propensity=jax.random.normal(keys[2], (n,)), epsilon=jnp.full((n,), 0.3))
  return out


def test_loss_sees_factual_outcomes_only():
  labels = _labels()
  task = dataclasses.replace(TASK, ipm='wasserstein', ipm_weight=0.5).fit_to(labels)
  # One program: the loss, the penalty alone and the predictions.
  run = jax.jit(lambda o, y: (task.loss(o, y), task.penalty(o, y), task.predict(o)))
  outputs = _outputs()
  losses, penalty, predictions = run(outputs, labels)
  changed = labels.copy()
  changed[:, 2:] = [[100.0, -100.0]]  # other potential outcomes
  np.testing.assert_array_equal(losses, run(outputs, changed)[0])
  # The counterfactual predictions do not enter the loss either (the IPM uses the representation).
  q = np.asarray(outputs['outcomes'])
  counterfactual = q.copy()
  arm = labels[:, 0].astype(int)
  counterfactual[np.arange(8), 1 - arm] += 7.0
  np.testing.assert_allclose(losses, run({**outputs, 'outcomes': counterfactual}, labels)[0],
                             rtol=1e-6)
  y = (labels[:, 1] - task.outcome_mean) / task.outcome_std
  assert float(penalty) > 0
  assert float(losses.mean()) == pytest.approx(
      np.mean((q[np.arange(8), arm] - y) ** 2) + 0.5 * float(penalty), rel=1e-5)
  # The selection metric is factual too.
  predictions = np.asarray(predictions)
  assert (TASK.evaluate(predictions, labels)['factual_rmse']
          == TASK.evaluate(predictions, changed)['factual_rmse'])
  assert TASK.evaluate(predictions, labels)['pehe'] != TASK.evaluate(predictions, changed)['pehe']


def test_fit_to_keeps_the_configured_fields():
  labels = _labels()
  task = dataclasses.replace(TASK, ipm='mmd', ipm_weight=0.3).fit_to(labels)
  assert (task.ipm, task.ipm_weight) == ('mmd', 0.3)
  assert task.outcome_mean == pytest.approx(labels[:, 1].mean(), rel=1e-5)
  assert task.p_treated == 0.5
  with pytest.raises(ConfigError, match='unknown ipm'):
    dataclasses.replace(TASK, ipm='energy')


@pytest.mark.parametrize('row, message', [
    ([2, 1.0, 0, 0], 'treatment must be 0'),
    ([1, np.nan, 0, 0], 'factual outcome must be a finite'),
    ([1, 1.0, np.nan, 0], 'both be finite or both missing'),
    ([0, 1.0, np.inf, 0], 'both be finite or both missing')])
def test_bad_labels_raise_data_error(row, message):
  labels = _labels(mu=False)
  TASK.check_labels(labels, 2, (5,), 'ihdp/train')  # NaN potential outcomes are fine
  labels[3] = row
  with pytest.raises(DataError, match=f'ihdp/train: .*{message}'):
    TASK.check_labels(labels, 2, (5,), 'ihdp/train')


@pytest.mark.parametrize('name, ipm', [('tarnet', 'wasserstein'), ('dragonnet', 'none')])
def test_models_shapes_and_gradients_reach_every_parameter(name, ipm):
  x = jax.random.normal(jax.random.key(0), (8, 5))
  model = models.get_model(name, num_classes=2, dropout_rate=0.1, dtype=jnp.float32,
                           representation=(16, 16), head=(8,))
  params = jax.jit(model.init)(jax.random.key(1), x)['params']
  labels = _labels()
  task = dataclasses.replace(TASK, ipm=ipm).fit_to(labels)

  @jax.jit
  def outputs_and_grads(params):
    def objective(p):
      out = model.apply({'params': p}, x, train=True, rngs={'dropout': jax.random.key(2)})
      return task.loss(out, labels).mean(), out
    (_, out), grads = jax.value_and_grad(objective, has_aux=True)(params)
    return out, task.predict(out), grads

  outputs, predictions, grads = outputs_and_grads(params)
  assert outputs['outcomes'].shape == (8, 2) and outputs['representation'].shape == (8, 16)
  assert predictions.shape == (8, 3)
  if name == 'dragonnet':
    assert outputs['propensity'].shape == (8,) and outputs['epsilon'].shape == (8,)
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0, jax.tree_util.keystr(path)


# ---------------------------------------------------------------- data parallel


_PARALLEL_WORKER = textwrap.dedent('''
    import dataclasses, sys, numpy as np, jax, optax
    from jmed import models, tasks
    from jmed.train import parallel, steps
    from jmed.train.state import create_train_state
    inputs = dict(np.load(sys.argv[1]))
    mesh = parallel.make_mesh()
    task = dataclasses.replace(tasks.get('treatment_effect'), ipm='wasserstein',
                               ipm_weight=1.0).fit_to(inputs['y'].reshape(-1, 4))
    model = models.TARNet(representation=(8, 8), head=(8,))
    tx = optax.adam(1e-2)
    state = jax.jit(lambda sample: create_train_state(model, tx, sample, 0))(inputs['x'][0, :1])
    state = parallel.replicate(state, mesh)
    train = parallel.data_parallel(steps.bind(steps.train_steps, task), mesh, batch_axis=1)
    state, metrics = train(state, parallel.shard_batch({'inputs': inputs['x'],
                                                        'labels': inputs['y']}, mesh, batch_axis=1))
    flat = np.concatenate([np.ravel(a) for a in jax.tree.leaves(jax.device_get(state.params))])
    np.savez(sys.argv[2], devices=len(jax.devices()), flat=flat,
             loss=np.asarray(metrics['loss_sum']), ipm=np.asarray(metrics['ipm_sum']))
''')


def test_cfr_step_on_four_devices_equals_one_device(tmp_path):
  """The Sinkhorn penalty spans the global batch: each device's quarter holds treated units of
  one kind only (the batch is sorted by treatment), so a per-device penalty would differ."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 16, 5)).astype(np.float32)  # one step
  t = np.r_[np.ones(8), np.zeros(8)][None]  # devices 0-1 treated, 2-3 control
  y = np.stack([t, x[..., 0] + t * (1 + x[..., 1]), np.zeros_like(t), np.zeros_like(t)], -1)
  path = tmp_path / 'inputs.npz'
  np.savez(path, x=x, y=y.astype(np.float32))
  one, four = one_and_four_devices(tmp_path, _PARALLEL_WORKER, path)
  assert (one['ipm'] > 0).all()  # per-device halves would have no treated-control pair: 0
  np.testing.assert_allclose(four['ipm'], one['ipm'], rtol=1e-5)
  np.testing.assert_allclose(four['loss'], one['loss'], rtol=1e-5)
  np.testing.assert_allclose(four['flat'], one['flat'], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- config


def test_task_kwargs_configure_the_task_and_round_trip():
  cfg = configs.TrainConfig(task_kwargs={'ipm': 'mmd', 'ipm_weight': 0.5})
  task = loop.configured_task(cfg, 'treatment_effect')
  assert (task.ipm, task.ipm_weight) == ('mmd', 0.5)
  saved = json.loads(json.dumps(dataclasses.asdict(cfg)))  # as config.json holds it
  assert configs.config_from_dict(saved).task_kwargs == cfg.task_kwargs
  with pytest.raises(ConfigError, match=r"task_kwargs \['alpha'\] do not apply .* valid keys: "
                     'ipm, ipm_weight'):
    loop.configured_task(dataclasses.replace(cfg, task_kwargs={'alpha': 1}), 'treatment_effect')
  for name, recipe in configs.EFFECT_RECIPES.items():
    assert recipe.dataset == 'ihdp' and recipe.model in models.MODELS, name
    loop.configured_task(recipe, 'treatment_effect')

