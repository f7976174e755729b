"""Deep ensembles (vmapped training), MC dropout, ensemble uncertainty and reliability diagrams."""

import dataclasses
import functools
import json
import math
import textwrap

import flax.linen as nn
import jax
import numpy as np
import pytest

from conftest import real_data_dir, run_on_forced_devices
from jmed import data as jdata
from jmed import metrics as jmetrics
from jmed import plots, tasks, uncertainty
from jmed.configs import OptimizerConfig, TrainConfig
from jmed.errors import NonFiniteLossError
from jmed.models import SeedCNN
from jmed.optim import make_optimizer
from jmed.train import ensemble, steps
from jmed.train.state import create_train_state

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def pneumonia():
  path = real_data_dir()
  if not (path / 'medmnist' / 'pneumoniamnist.npz').exists():
    pytest.skip(f'PneumoniaMNIST not found under {path}; set JMED_DATA_DIR')
  return jdata.load_dataset('pneumoniamnist', data_dir=str(path))


def _random_subset(dataset, sizes: dict, seed: int = 0):
  """A seeded random subset of each split (PneumoniaMNIST's train split is sorted by label, so
  its first examples are all of one class)."""
  rng = np.random.default_rng(seed)
  splits = {}
  for name, n in sizes.items():
    images, labels = dataset.splits[name]
    index = rng.permutation(len(labels))[:n]
    splits[name] = (images[index], labels[index])
  return dataclasses.replace(dataset, splits=splits)


def _batches(dataset, num_steps: int, batch: int, seed: int = 0):
  """[steps, batch, ...] real training batches."""
  images, labels = _random_subset(dataset, {'train': num_steps * batch}, seed).splits['train']
  return {'inputs': images.reshape(num_steps, batch, *images.shape[1:]),
          'labels': labels.reshape(num_steps, batch)}


def _tx():  # the four-device worker below builds the same
  return make_optimizer(OptimizerConfig(name='sgd', learning_rate=0.05, momentum=0.9))


MODEL = SeedCNN(num_classes=2, dropout_rate=0.5)
SAMPLE = np.zeros((1, 28, 28, 1), np.float32)


def _assert_trees_close(a, b, **tolerance):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tolerance)


# ---------------------------------------------------------------- ensemble state and steps


SEEDS = (3, 0)
_single_step = jax.jit(functools.partial(steps.train_step, task='binary'))


@pytest.fixture(scope='module')
def members_alone():
  """`create_train_state` for each of SEEDS."""
  return [create_train_state(MODEL, _tx(), SAMPLE, seed) for seed in SEEDS]


@pytest.fixture(scope='module')
def stacked():
  """The ensemble of SEEDS (steps are not donated: tests may share it)."""
  return ensemble.create_ensemble_state(MODEL, _tx(), SAMPLE, SEEDS)


def test_ensemble_state_equals_per_seed_states(stacked, members_alone):
  assert ensemble.num_members(stacked) == len(SEEDS)
  for m, alone in enumerate(members_alone):
    member = ensemble.member_state(stacked, m)
    _assert_trees_close(member.params, alone.params, rtol=0, atol=0)
    _assert_trees_close(member.opt_state, alone.opt_state, rtol=0, atol=0)
    np.testing.assert_array_equal(jax.random.key_data(member.rng), jax.random.key_data(alone.rng))
    assert int(member.step) == 0
  kernel = stacked.params['Dense_0']['kernel']
  assert not np.allclose(kernel[0], kernel[1])  # different seeds, different members


@pytest.mark.parametrize('seeds', [(), (1, 1), (-1, 2), ((0, 1),)])
def test_ensemble_state_rejects_bad_seeds(seeds):
  with pytest.raises(ValueError, match='seeds must be'):
    ensemble.create_ensemble_state(MODEL, _tx(), SAMPLE, seeds)


def _train_ensemble(state, batches, shared_batch: bool):
  """Runs the jitted ensemble step over [steps, ...] batches; returns (state, losses)."""
  step = jax.jit(functools.partial(ensemble.ensemble_train_step, task='binary',
                                   shared_batch=shared_batch))
  losses = []
  for i in range(len(batches['labels'])):
    state, metrics = step(state, jax.tree.map(lambda x: x[i], batches))
    losses.append(np.asarray(metrics['loss_sum']))
  return state, np.stack(losses)  # losses: [steps, members]


@pytest.fixture(scope='module')
def shared_run(pneumonia, stacked):
  """(batches [3, 16, ...], the ensemble after three steps on them, losses [3, members])."""
  batches = _batches(pneumonia, 3, 16)
  return (batches, *_train_ensemble(stacked, batches, shared_batch=True))


@pytest.mark.parametrize('shared_batch', [True, False])
def test_ensemble_steps_equal_members_trained_alone(pneumonia, stacked, members_alone,
                                                   shared_run, shared_batch):
  """Three momentum-SGD steps with dropout: the vmapped ensemble equals each member trained
  alone."""
  if shared_batch:
    batches, state, losses = shared_run
  else:  # member m trains on its own batches: [steps, members, batch, ...]
    batches = jax.tree.map(lambda a, b: np.stack([a, b], 1), _batches(pneumonia, 3, 16),
                           _batches(pneumonia, 3, 16, seed=1))
    state, losses = _train_ensemble(stacked, batches, shared_batch=False)
  for m, alone in enumerate(members_alone):
    for i in range(3):
      batch = jax.tree.map(lambda x: x[i] if shared_batch else x[i, m], batches)
      alone, metrics = _single_step(alone, batch)
      np.testing.assert_allclose(losses[i, m], metrics['loss_sum'], rtol=1e-5)
    _assert_trees_close(ensemble.member_state(state, m).params, alone.params, rtol=1e-5,
                        atol=1e-6)


def test_ensemble_eval_step_gives_member_probabilities(pneumonia, stacked):
  images, labels = pneumonia.splits['test']
  batch = next(jdata.eval_batches(images[:5], labels[:5], 8))
  out = jax.jit(functools.partial(ensemble.ensemble_eval_step, task='binary'))(stacked, batch)
  assert out['predictions'].shape == (2, 8, 2) and out['count'].tolist() == [5, 5]
  alone = jax.jit(functools.partial(steps.eval_step, task='binary'))(
      ensemble.member_state(stacked, 1), batch)
  np.testing.assert_allclose(out['predictions'][1], alone['predictions'], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(out['loss_sum'][1], alone['loss_sum'], rtol=1e-5)


_PARALLEL_WORKER = textwrap.dedent('''
    import functools, sys, numpy as np, jax
    from jmed.configs import OptimizerConfig
    from jmed.models import SeedCNN
    from jmed.optim import make_optimizer
    from jmed.train import ensemble, parallel
    batches = dict(np.load(sys.argv[1]))
    seeds = batches.pop('seeds').tolist()
    mesh = parallel.make_mesh()
    tx = make_optimizer(OptimizerConfig(name='sgd', learning_rate=0.05, momentum=0.9))  # _tx()
    state = ensemble.create_ensemble_state(SeedCNN(num_classes=2, dropout_rate=0.5), tx,
                                           batches['inputs'][0, :1], seeds)
    state = parallel.replicate(state, mesh)
    step = parallel.data_parallel(
        functools.partial(ensemble.ensemble_train_step, task='binary'), mesh)
    losses = []
    for i in range(len(batches['labels'])):
      batch = parallel.shard_batch({k: v[i] for k, v in batches.items()}, mesh)
      state, metrics = step(state, batch)
      losses.append(np.asarray(metrics['loss_sum']))
    flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(state.params))])
    np.savez(sys.argv[2], params=flat, loss=np.stack(losses), devices=len(jax.devices()))
''')


def test_ensemble_on_four_devices_equals_one_device(tmp_path, shared_run):
  """The data-parallel ensemble step with the stacked state replicated and a global batch of 16
  sharded over 4 forced CPU devices equals the one-device run of `shared_run`."""
  batches, one_state, one_losses = shared_run
  path = tmp_path / 'batches.npz'
  np.savez(path, seeds=np.asarray(SEEDS), **batches)
  four, _ = run_on_forced_devices(tmp_path, 4, _PARALLEL_WORKER, path)
  assert int(four['devices']) == 4 and four['loss'].shape == (3, len(SEEDS))
  np.testing.assert_allclose(four['loss'], one_losses, rtol=1e-5)
  one_params = np.concatenate([np.ravel(x) for x in jax.tree.leaves(one_state.params)])
  np.testing.assert_allclose(four['params'], one_params, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- MC dropout


class _DropoutNet(nn.Module):
  """Dense -> [BatchNorm ->] Dropout -> Dense (BatchNorm tells train and inference apart)."""

  rate: float
  norm: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    x = nn.Dense(16)(x)
    if self.norm:
      x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.Dropout(self.rate, deterministic=not train)(nn.relu(x))
    return nn.Dense(3)(x)


def _norm_net(rate):
  net = _DropoutNet(rate)
  inputs = jax.random.normal(jax.random.key(0), (6, 5))
  variables = net.init(jax.random.key(1), inputs)
  # Running statistics far from this batch's: train-mode BatchNorm would change the outputs.
  stats = variables['batch_stats']['BatchNorm_0']
  variables['batch_stats'] = {'BatchNorm_0': {'mean': stats['mean'] - 1.0,
                                              'var': stats['var'] * 0.25}}
  return net, variables, inputs


def test_mc_dropout_rate_zero_is_the_inference_model():
  net, variables, inputs = _norm_net(0.0)
  probs = uncertainty.mc_dropout_probs(net.apply, variables, inputs, jax.random.key(2), 4)
  assert probs.shape == (4, 6, 3)
  expected = jax.nn.softmax(net.apply(variables, inputs, train=False))
  for sample in probs:
    np.testing.assert_array_equal(sample, probs[0])
  np.testing.assert_allclose(probs[0], expected, rtol=1e-6)


def test_mc_dropout_samples_differ_and_are_reproducible():
  net, variables, inputs = _norm_net(0.5)
  sample = jax.jit(functools.partial(uncertainty.mc_dropout_probs, net.apply, num_samples=8,
                                     task='multiclass'))
  probs = sample(variables, inputs, jax.random.key(2))
  assert probs.shape == (8, 6, 3)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  assert not np.allclose(probs[0], probs[1])
  np.testing.assert_array_equal(probs, sample(variables, inputs, jax.random.key(2)))
  assert not np.allclose(probs, sample(variables, inputs, jax.random.key(3)))


def test_mc_dropout_equals_train_mode_without_batch_norm():
  """Where dropout is the only train-mode difference, a sample is the train=True output."""
  net = _DropoutNet(0.5, norm=False)
  inputs = jax.random.normal(jax.random.key(0), (6, 5))
  variables = net.init(jax.random.key(1), inputs)
  key = jax.random.key(7)
  probs = uncertainty.mc_dropout_probs(net.apply, variables, inputs, key, 3, 'multiclass')
  third = net.apply(variables, inputs, train=True, rngs={'dropout': jax.random.split(key, 3)[2]})
  np.testing.assert_allclose(probs[2], jax.nn.softmax(third), rtol=1e-6)


def test_mc_dropout_predict_covers_a_split_in_padded_batches():
  net, variables, inputs = _norm_net(0.5)  # 6 examples: batches of 4 and 2 (+ 2 padding)
  key = jax.random.key(4)
  probs = uncertainty.mc_dropout_predict(net.apply, variables, np.asarray(inputs), key, 5,
                                         batch_size=4)
  assert probs.shape == (5, 6, 3)
  padded = np.pad(np.asarray(inputs[4:]), ((0, 2), (0, 0)))
  second = uncertainty.mc_dropout_probs(net.apply, variables, padded, jax.random.fold_in(key, 1),
                                        5)
  np.testing.assert_allclose(probs[:, 4:], second[:, :2], rtol=1e-5)


@pytest.mark.parametrize('kwargs, match', [
    ({'num_samples': 0}, 'num_samples'),
    ({'task': 'survival'}, "task 'survival' does not predict class probabilities"),
    ({'task': 'regression'}, "task 'regression' does not predict class probabilities"),
])
def test_mc_dropout_rejects_bad_arguments(kwargs, match):
  net, variables, inputs = _norm_net(0.5)
  args = {'num_samples': 2, 'task': 'multiclass', **kwargs}
  with pytest.raises(ValueError, match=match):
    uncertainty.mc_dropout_probs(net.apply, variables, inputs, jax.random.key(0), **args)


# ---------------------------------------------------------------- summaries and metrics


def _bernoulli_entropy(p):
  return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_ensemble_summary_by_hand():
  # Example 0: two confident members that disagree (epistemic); example 1: two members that
  # agree on a coin flip (aleatoric).
  member_probs = np.array([[[1.0, 0.0], [0.5, 0.5]],
                           [[0.0, 1.0], [0.5, 0.5]]])
  out = uncertainty.ensemble_summary(member_probs)
  ln2 = math.log(2)
  np.testing.assert_allclose(out['mean'], [[0.5, 0.5], [0.5, 0.5]])
  np.testing.assert_allclose(out['predictive_entropy'], [ln2, ln2], rtol=1e-6)
  np.testing.assert_allclose(out['expected_entropy'], [0.0, ln2], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(out['mutual_information'], [ln2, 0.0], rtol=1e-6, atol=1e-7)
  three = np.array([[[0.2, 0.3, 0.5]], [[0.6, 0.2, 0.2]]])
  p = three.mean(0)[0]
  h = lambda q: -np.sum(q * np.log(q))  # noqa: E731
  np.testing.assert_allclose(uncertainty.ensemble_summary(three)['mutual_information'],
                             [h(p) - (h(three[0, 0]) + h(three[1, 0])) / 2], rtol=1e-5)
  with pytest.raises(ValueError, match=r'\[members, batch, classes\]'):
    uncertainty.ensemble_summary(np.ones((4, 2)) / 2)
  with pytest.raises(ValueError, match="task 'regression' does not predict class probabilities"):
    uncertainty.ensemble_summary(member_probs, 'regression')


def test_ensemble_summary_of_independent_labels_by_hand():
  """'multilabel': an entropy is the sum of the labels' Bernoulli entropies (not a softmax's)."""
  member_probs = np.array([[[0.9, 0.2]],   # member 0: one example, two labels
                           [[0.5, 0.6]]])  # member 1
  out = uncertainty.ensemble_summary(member_probs, 'multilabel')
  h = _bernoulli_entropy
  predictive = h(0.7) + h(0.4)  # the mean member: [0.7, 0.4]
  expected = (h(0.9) + h(0.2) + h(0.5) + h(0.6)) / 2
  np.testing.assert_allclose(out['mean'], [[0.7, 0.4]], rtol=1e-6)
  np.testing.assert_allclose(out['predictive_entropy'], [predictive], rtol=1e-5)
  np.testing.assert_allclose(out['expected_entropy'], [expected], rtol=1e-5)
  np.testing.assert_allclose(out['mutual_information'], [predictive - expected], rtol=1e-4)
  assert predictive - expected > 0.05  # the members disagree on label 0


def test_negative_log_likelihood_by_hand():
  probs = np.array([[0.9, 0.1], [0.2, 0.8]])
  multiclass, multilabel_task = tasks.get('multiclass'), tasks.get('multilabel')
  assert multiclass.nll(probs, [0, 0]) == pytest.approx(-(math.log(0.9) + math.log(0.2)) / 2)
  multilabel = np.array([[0.9, 0.3], [0.4, 0.5]])
  labels = np.array([[1, 0], [-1, 1]])  # -1: missing, ignored
  assert multilabel_task.nll(multilabel, labels) == pytest.approx(
      -(math.log(0.9) + math.log(0.7) + math.log(0.5)) / 3)
  metrics = uncertainty.prediction_metrics(probs, np.array([0, 1]))
  assert metrics['accuracy'] == 1.0 and 'ece' in metrics
  assert metrics['nll'] == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
  with pytest.raises(ValueError, match='labels'):
    multiclass.nll(probs, [0, 2])
  with pytest.raises(ValueError, match='does not predict class probabilities'):
    uncertainty.prediction_metrics(probs, np.array([0, 1]), 'survival')


def test_reliability_diagram_writes_a_png(tmp_path):
  rng = np.random.default_rng(0)
  confidences = rng.uniform(0.5, 1.0, 300)
  correct = rng.uniform(size=300) < confidences ** 2  # overconfident
  path = tmp_path / 'plots' / 'reliability.png'
  out = plots.reliability_diagram(confidences, correct, str(path), num_bins=10, title='test')
  assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 5000
  assert out['ece'] == pytest.approx(jmetrics.expected_calibration_error(confidences, correct, 10))
  assert out['count'].sum() == 300
  with pytest.raises(ValueError, match='.png'):
    plots.reliability_diagram(confidences, correct, str(tmp_path / 'x.pdf'))
  with pytest.raises(ValueError, match='confidences'):
    plots.reliability_diagram(confidences + 1, correct, str(path))


# ---------------------------------------------------------------- fit_ensemble on real data


def _fit_cfg(tmp_path, **kw):
  base = dict(dataset='pneumoniamnist', epochs=2, batch_size=32, eval_batch_size=100,
              dropout_rate=0.3, optimizer=OptimizerConfig(name='adam', learning_rate=1e-3),
              output_dir=str(tmp_path / 'run'), progress=False)
  return TrainConfig(**{**base, **kw})


def test_fit_ensemble_learns_and_writes_outputs(tmp_path, pneumonia):
  data = _random_subset(pneumonia, {'train': 768, 'validation': 100, 'test': 300})
  state, summary = ensemble.fit_ensemble(_fit_cfg(tmp_path), 2, data)
  assert ensemble.num_members(state) == 2 and summary['steps'] == 2 * 24
  assert 'test_ensemble' not in summary  # test_* are the ensemble's own metrics
  assert len(summary['test_members']) == 2
  assert summary['test_mean_member']['auroc'] == pytest.approx(
      np.mean([m['auroc'] for m in summary['test_members']]))
  # Chance: AUROC 0.5, NLL 0.66 (the base rate); this run: about 0.91 and 0.48.
  assert summary['test_auroc'] > 0.85 and summary['test_nll'] < 0.6, summary
  assert 0 <= summary['test_ece'] <= 1 and summary['test_mean_mutual_information'] >= 0
  run = tmp_path / 'run'
  assert json.loads((run / 'summary.json').read_text())['members'] == 2
  assert (run / 'reliability.png').read_bytes()[:8] == PNG_SIGNATURE
  records = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
  assert len(records) == 2 and len(records[0]['train_loss']) == 2 and 'val_auroc' in records[0]


def test_fit_ensemble_stops_on_nan_loss(tmp_path, pneumonia):
  data = _random_subset(pneumonia, {'train': 128, 'test': 100})
  cfg = _fit_cfg(tmp_path, max_steps=3, optimizer=OptimizerConfig(name='adam',
                                                                  learning_rate=1e30))
  with pytest.raises(NonFiniteLossError, match=r'member \d+ .* at step \d+'):
    ensemble.fit_ensemble(cfg, 2, data)
  with pytest.raises(ValueError, match='members'):
    ensemble.fit_ensemble(cfg, 0, data)


def test_fit_ensemble_resumed_equals_uninterrupted_run(tmp_path, pneumonia):
  """A 2-member run stopped mid-epoch by max_steps, then resumed, ends where one run does."""
  # 96 images / 16 = 6 steps per epoch, 2 epochs; stopped after step 7, inside epoch 1. One
  # step per dispatch: one train program to compile per run.
  data = _random_subset(pneumonia, {'train': 96, 'test': 50})
  cfg = lambda out, **kw: _fit_cfg(  # noqa: E731
      tmp_path, model='mlp', model_kwargs={'hidden': [8]}, batch_size=16, eval_batch_size=50,
      steps_per_dispatch=1, output_dir=str(tmp_path / out), **kw)
  full_state, full = ensemble.fit_ensemble(cfg('full'), 2, data)
  _, stopped = ensemble.fit_ensemble(cfg('interrupted', max_steps=7), 2, data)
  assert stopped['steps'] == 7
  state, resumed = ensemble.fit_ensemble(cfg('interrupted', resume=True), 2, data)
  assert resumed['steps'] == full['steps'] == 12
  assert np.asarray(state.step).tolist() == np.asarray(full_state.step).tolist() == [12, 12]
  _assert_trees_close((state.params, state.opt_state), (full_state.params, full_state.opt_state),
                      rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(jax.random.key_data(state.rng),
                                jax.random.key_data(full_state.rng))
  assert resumed['test_loss'] == pytest.approx(full['test_loss'], rel=1e-6)
  # It continued from step 7 (a fresh start would also end at step 12): the log keeps the
  # records up to the restored step, then the rest of epoch 1.
  lines = (tmp_path / 'interrupted' / 'metrics.jsonl').read_text().splitlines()
  assert [(r['epoch'], r['step']) for r in map(json.loads, lines)] == [(0, 6), (1, 7), (1, 12)]
