"""Interpretability: saliency, SmoothGrad, integrated gradients, Grad-CAM, attention, the script."""

import dataclasses
import importlib.util
import json
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jmed import explain
from jmed.configs import TrainConfig
from jmed.models import MLP, ResNet, SeedCNN, TransformerClassifier
from jmed.train.loop import write_json
from conftest import REPO

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _rng(seed):
  return np.random.default_rng(seed)


def _jitter_biases(variables, seed, scale=0.1):
  """Random biases: at init they are 0, which makes ReLU nets positively homogeneous and
  puts the integration path's start exactly on every ReLU's kink."""
  rng = _rng(seed)
  return jax.tree.map(
      lambda leaf: leaf + scale * rng.standard_normal(leaf.shape, np.float32)
      if leaf.ndim == 1 else leaf, variables)


class SmoothNet(nn.Module):
  """A tiny differentiable-everywhere classifier for finite differences."""

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Dense(8)(x.reshape(x.shape[0], -1)))
    return nn.Dense(3)(x)


def _load_script():
  spec = importlib.util.spec_from_file_location('explain_script', REPO / 'scripts' / 'explain.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _assert_png(path):
  with open(path, 'rb') as f:
    assert f.read(8) == PNG_MAGIC, path


@pytest.fixture(scope='module')
def smooth_net():
  model = SmoothNet()
  x = jnp.asarray(_rng(1).standard_normal((2, 2, 3), np.float32))
  return model, jax.jit(model.init)(jax.random.key(0), x), x


@pytest.fixture(scope='module')
def seed_cnn():
  """A narrow seed CNN with random biases and two random 28 x 28 images."""
  model = SeedCNN(num_classes=2, features=(4, 8), hidden=16)
  x = jnp.asarray(_rng(1).uniform(size=(2, 28, 28, 1)).astype(np.float32))
  return model, _jitter_biases(jax.jit(model.init)(jax.random.key(0), x), 2), x


@pytest.mark.parametrize('output', ['logit', 'softmax', 'sigmoid'])
def test_saliency_matches_finite_differences(smooth_net, output):
  model, variables, x = smooth_net
  targets = jnp.array([0, 2])
  grads = explain.saliency(model.apply, variables, x, targets, output=output)
  assert grads.shape == x.shape
  eps = 1e-2
  steps = eps * jnp.eye(x[0].size).reshape(-1, *x.shape[1:])  # one coordinate each

  @jax.jit
  def central_differences(example, target):
    def scores(inputs):
      return explain.target_scores(model.apply, variables, inputs,
                                   jnp.full(len(inputs), target), output)
    return ((scores(example + steps) - scores(example - steps)) / (2 * eps)).reshape(
        example.shape)

  numeric = np.stack([central_differences(x[b], targets[b]) for b in range(len(x))])
  np.testing.assert_allclose(grads, numeric, rtol=2e-2, atol=2e-4)


def test_targets_default_to_the_prediction(smooth_net):
  model, variables, x = smooth_net
  predicted = jnp.argmax(model.apply(variables, x), -1)
  np.testing.assert_array_equal(explain.resolve_targets(model.apply, variables, x), predicted)
  np.testing.assert_array_equal(explain.saliency(model.apply, variables, x),
                                explain.saliency(model.apply, variables, x, predicted))
  with pytest.raises(ValueError, match=r'\[batch\]'):
    explain.saliency(model.apply, variables, x, jnp.array([0, 1, 2]))
  with pytest.raises(ValueError, match='output must be one of'):
    explain.saliency(model.apply, variables, x, output='prob')
  with pytest.raises(ValueError, match='floating-point'):
    explain.saliency(model.apply, variables, jnp.ones((2, 6), jnp.int32))


def test_smoothgrad_sigma_zero_is_saliency_and_noise_is_seeded(smooth_net):
  model, variables, x = smooth_net
  plain = explain.saliency(model.apply, variables, x)
  zero = explain.smoothgrad(model.apply, variables, x, key=jax.random.key(0), num_samples=3,
                            sigma=0.0)
  np.testing.assert_allclose(zero, plain, rtol=1e-6, atol=1e-7)
  noisy = [explain.smoothgrad(model.apply, variables, x, key=jax.random.key(k), num_samples=4,
                              sigma=0.3, value_range=(-3.0, 3.0)) for k in (0, 0, 1)]
  np.testing.assert_array_equal(noisy[0], noisy[1])
  assert not np.allclose(noisy[0], noisy[2])
  assert not np.allclose(noisy[0], plain)
  with pytest.raises(ValueError, match='sigma'):
    explain.smoothgrad(model.apply, variables, x, key=jax.random.key(0), sigma=-1.0)


def test_integrated_gradients_is_exact_for_a_linear_model():
  model = MLP(num_classes=3, hidden=())
  x = _rng(1).standard_normal((4, 6), np.float32)
  variables = _jitter_biases(jax.jit(model.init)(jax.random.key(0), x), 2)
  baseline = _rng(3).standard_normal(6, np.float32)  # one example, broadcast
  for method in explain.gradients.IG_METHODS:
    attributions, report = explain.integrated_gradients(model.apply, variables, x,
                                                        baseline=baseline, steps=2,
                                                        method=method)
    assert attributions.shape == x.shape
    np.testing.assert_allclose(report.attribution_sum, report.output_delta, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize('name', ['seed_cnn', 'mlp'])
def test_integrated_gradients_completeness(name, seed_cnn):
  """Sum of attributions = f(x) - f(0) within 1% with enough steps, and the gap shrinks.

  A random network's logits barely move between x and the baseline (leaving a ratio of two
  small numbers), so each example explains the class whose logit moves most.
  """
  if name == 'seed_cnn':
    model, variables, x = seed_cnn
  else:
    model = MLP(num_classes=3, hidden=(16,))
    x = _rng(1).standard_normal((3, 10), np.float32)
    variables = _jitter_biases(jax.jit(model.init)(jax.random.key(0), x), 2)
  apply = jax.jit(model.apply)
  targets = np.abs(apply(variables, x) - apply(variables, np.zeros_like(x))).argmax(-1)
  _, fine = explain.integrated_gradients(model.apply, variables, x, targets, steps=512)
  fine = jax.device_get(fine)
  assert np.all(np.abs(fine.output_delta) > 0.1)  # a meaningful difference to explain
  assert np.all(fine.relative_gap < 0.01), fine
  np.testing.assert_allclose(fine.gap, fine.attribution_sum - fine.output_delta, atol=1e-6)
  if name == 'mlp':  # (one compilation fewer for the CNN)
    _, coarse = explain.integrated_gradients(model.apply, variables, x, targets, steps=8)
    assert fine.relative_gap.mean() < np.mean(coarse.relative_gap)


class BrightSpotCNN(nn.Module):
  """CAM-style: a bright-spot detector, ReLU, global average pool; class 1 = 'bright spot'."""

  @nn.compact
  def __call__(self, x):
    features = nn.Conv(2, (3, 3), kernel_init=nn.initializers.constant(1.0),
                       bias_init=nn.initializers.constant(-4.0), name='detector')(x)
    pooled = nn.relu(features).mean(axis=(1, 2))
    return jnp.stack([-pooled.sum(-1), pooled.sum(-1)], axis=-1)


def test_gradcam_localises_the_evidence():
  model = BrightSpotCNN()
  images = np.full((2, 16, 16, 1), 0.1, np.float32)
  images[0, 6:10, 2:6] = 1.0    # spot on the left
  images[1, 6:10, 10:14] = 1.0  # spot on the right
  variables = model.init(jax.random.key(0), images)
  assert list(explain.feature_layers(model.apply, variables, images)) == ['detector']
  cams = np.asarray(explain.gradcam(model.apply, variables, images, targets=1))
  assert cams.shape == (2, 16, 16)
  assert cams.min() >= 0 and np.allclose(cams.max(axis=(1, 2)), 1)
  left, right = cams[:, :, :8].mean((1, 2)), cams[:, :, 8:].mean((1, 2))
  assert left[0] > 3 * right[0] and right[1] > 3 * left[1]
  assert cams[0, 6:10, 2:6].mean() > 0.5  # on the spot itself
  # Class 0 ('no spot') is explained by the detector's negative pre-ReLU response: off the spot.
  others = np.asarray(explain.gradcam(model.apply, variables, images, targets=0))
  assert others[0, 6:10, 2:6].max() < 0.2 < others[0, :, 8:].mean()


def test_gradcam_on_seed_cnn_and_resnet(seed_cnn):
  seed, variables, x = seed_cnn
  layers = explain.feature_layers(seed.apply, variables, x)
  # The second conv computes only the 10 x 10 of its 11 x 11 outputs that pooling keeps.
  assert layers == {'ValidConv_0': (2, 26, 26, 4), 'ValidConv_1': (2, 10, 10, 8)}
  cam = np.asarray(explain.gradcam(seed.apply, variables, x, layer='ValidConv_0'))
  assert cam.shape == (2, 28, 28) and cam.min() >= 0 and cam.max() <= 1
  small = jax.eval_shape(lambda v, x: explain.gradcam(seed.apply, v, x, resize=False),
                         variables, x)
  assert small.shape == (2, 10, 10)  # the default layer, ValidConv_1
  with pytest.raises(ValueError, match='ValidConv_0, ValidConv_1'):
    explain.gradcam(seed.apply, variables, x, layer='conv9')
  resnet = ResNet(num_classes=3, stage_sizes=(1,), width=4)
  variables = jax.jit(resnet.init)(jax.random.key(0), x)  # params and batch_stats
  assert list(explain.feature_layers(resnet.apply, variables, x))[-1] == 'BasicBlock_0'
  cam = np.asarray(explain.gradcam(resnet.apply, variables, x, np.array([0, 2])))
  assert cam.shape == (2, 28, 28) and cam.min() >= 0


@pytest.fixture(scope='module')
def transformer():
  model = TransformerClassifier(num_classes=2, vocab_size=20, embed_dim=16, num_layers=2,
                                num_heads=2, mlp_dim=32, max_length=8)
  ids = np.array([[3, 5, 7, 9, 2, 0, 0, 0], [4, 4, 6, 8, 10, 12, 14, 16]], np.int32)
  return model, jax.jit(model.init)(jax.random.key(0), ids), ids


def test_attention_maps_rows_sum_to_one_and_skip_padding(transformer):
  model, variables, ids = transformer
  maps = jax.jit(lambda v, ids: explain.attention_maps(model, v, ids))(variables, ids)
  assert len(maps) == 2 and all(w.shape == (2, 2, 8, 8) for w in maps.values())
  assert list(maps)[0].endswith('block0/attention')
  mask = ids != 0
  rollout = explain.attention_rollout(list(maps.values()), mask=mask)
  relevance = np.asarray(explain.token_relevance(rollout, mask))
  maps, rollout = jax.device_get((maps, rollout))
  for w in maps.values():
    np.testing.assert_allclose(w.sum(-1), 1, atol=1e-5)
    assert w[0, :, :5, 5:].max() < 1e-6  # real queries ignore padding keys
  assert rollout.shape == (2, 8, 8)
  np.testing.assert_allclose(rollout[0, :5].sum(-1), 1, atol=1e-5)
  np.testing.assert_allclose(rollout[1].sum(-1), 1, atol=1e-5)
  assert np.abs(rollout[0, 5:]).max() == 0 and np.abs(rollout[0, :, 5:]).max() < 1e-6
  np.testing.assert_allclose(relevance.sum(-1), 1, atol=1e-5)
  assert relevance[0, 5:].max() < 1e-6
  with pytest.raises(ValueError, match='sowed no attention'):
    seed = SeedCNN(num_classes=2, features=(4,), hidden=8)
    x = np.zeros((1, 8, 8, 1), np.float32)
    jax.eval_shape(lambda: explain.attention_maps(seed, seed.init(jax.random.key(0), x), x))


def test_attention_pngs(transformer, tmp_path):
  model, variables, ids = transformer
  script = _load_script()
  args = types.SimpleNamespace(output_dir=str(tmp_path), split='test', max_tokens=6)
  report = script.explain_tokens(args, model, variables, ids, np.array([0, 1]), None)
  assert [d['index'] for d in report['documents']] == [0, 1]
  for doc in report['documents']:
    _assert_png(doc['png'])
  assert len(report['documents'][0]['top_tokens']) == 5  # its real tokens only


def test_normalize_map():
  a = np.zeros((2, 4, 4, 3), np.float32)
  a[0, 1, 2, 1] = -5.0
  maps = explain.normalize_map(a, percentile=100)
  assert maps.shape == (2, 4, 4) and maps[0, 1, 2] == 1 and maps.sum() == 1
  assert explain.normalize_map(a, reduce='positive').max() == 0
  with pytest.raises(ValueError, match='reduce'):
    explain.normalize_map(a, reduce='l2')


def test_script_trains_explains_and_restores(data_dir, tmp_path):
  """No --run-dir: a few steps of the seed CNN on PneumoniaMNIST, then PNGs and the IG JSON;
  `load_run` gives back the run's final weights (the test loss the run reported)."""
  if not (data_dir / 'medmnist' / 'pneumoniamnist.npz').is_file():
    pytest.skip('PneumoniaMNIST not found')
  out = tmp_path / 'explain'
  code = _load_script().main([
      '--data-dir', str(data_dir), '--output-dir', str(out), '--num-images', '2',
      '--train-steps', '4', '--ig-steps', '32', '--smoothgrad-samples', '4'])
  assert code == 0
  pngs = sorted(out.glob('test_*.png'))
  assert [p.name for p in pngs] == ['test_000.png', 'test_001.png']
  for p in pngs:
    _assert_png(p)
  report = json.loads((out / 'ig_completeness.json').read_text())
  assert report['model'] == 'seed_cnn' and len(report['images']) == 2
  assert all(set(i) >= {'attribution_sum', 'output_delta', 'gap', 'relative_gap'}
             for i in report['images'])

  from jmed.train.restore import load_run, load_run_dataset, read_config
  run_dir = out / 'seed_cnn_run'
  dataset = load_run_dataset(read_config(run_dir), str(data_dir))
  cfg, model, variables = load_run(str(run_dir), 'latest', dataset=dataset)
  assert cfg.max_steps == 4 and isinstance(model, SeedCNN)
  images, labels = dataset.splits['test']
  logits = jax.jit(model.apply)(variables, images)
  loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean())
  summary = json.loads((run_dir / 'summary.json').read_text())
  assert loss == pytest.approx(summary['last_test_loss'], rel=1e-5)
  with pytest.raises(ValueError, match='which'):
    load_run(str(run_dir), 'first', dataset=dataset)
  with pytest.raises(FileNotFoundError, match='config.json'):
    load_run(str(tmp_path), dataset=dataset)


def test_script_refuses_runs_without_class_scores(data_dir, tmp_path, capsys):
  """A survival run's output is a risk score, not class logits: refused, nothing written."""
  run_dir = tmp_path / 'cox_run'
  run_dir.mkdir()
  write_json(str(run_dir / 'config.json'),
             dataclasses.asdict(TrainConfig(model='mlp', dataset='metabric')))
  out = tmp_path / 'explain'
  code = _load_script().main(['--run-dir', str(run_dir), '--data-dir', str(data_dir),
                              '--output-dir', str(out)])
  assert code == 1
  assert "task 'survival' (metabric) are not class scores" in capsys.readouterr().err
  assert not out.exists()


def test_out_of_range_targets_are_refused(smooth_net, seed_cnn):
  model, variables, x = smooth_net
  with pytest.raises(ValueError, match='class ids'):
    explain.saliency(model.apply, variables, x, targets=3)  # 3 classes: ids 0-2
  model, variables, x = seed_cnn
  with pytest.raises(ValueError, match='class ids'):
    explain.gradcam(model.apply, variables, x, targets=[0, -1])
