"""UNet and jmed.segmentation: shapes, gradients, Dice against scikit-learn, the generic steps on
the segmentation task, and a short real-data run of scripts/train.py that must learn per-pixel
digit classes on MNIST."""

import dataclasses
import functools
import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import f1_score

from conftest import REPO
from jmed import data as jdata
from jmed import segmentation as seg
from jmed.configs import TrainConfig
from jmed.data.datasets import digit_masks
from jmed.models.unet import UNet, UpConv, lecun_normal
from jmed.train import parallel, steps
from jmed.train.loop import fit
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
  return {'inputs': np.asarray(_images((n, 8, 8, 1), seed)),
          'labels': np.asarray(_masks((n, 8, 8), 3, seed), np.int32)}


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


# --- The generic steps on the segmentation task. ---


def test_train_step_is_pure_learns_and_runs_data_parallel():
  mesh = parallel.make_mesh()
  n = math.lcm(8, mesh.devices.size)
  host_state, host_batch = _tiny_state(), _tiny_batch(n)
  state = parallel.replicate(host_state, mesh)
  batch = parallel.shard_batch(host_batch, mesh)
  step = parallel.data_parallel(steps.bind(steps.train_step, 'segmentation'), mesh,
                                donate_state=False)
  a, m_a = step(state, batch)
  _, m_b = step(state, batch)  # same input, same output (dropout included): no hidden state
  np.testing.assert_array_equal(m_a['loss_sum'], m_b['loss_sum'])
  assert int(a.step) == 1 and int(m_a['count']) == n
  # The logged pixel accuracy is that of the step's own (train-mode, same dropout key) outputs,
  # summed over the examples.
  @jax.jit
  def pixel_accuracy_and_loss(state, batch):
    logits, _ = steps.apply_model(state, state.params, batch['inputs'], train=True,
                                  rng=jax.random.fold_in(state.rng, state.step))
    right = jnp.argmax(logits, -1) == batch['labels']
    return right.mean((1, 2)).sum(), seg.dice_ce_loss(logits, batch['labels']).sum()

  accuracy, loss = pixel_accuracy_and_loss(host_state, host_batch)
  np.testing.assert_allclose(m_a['pixel_accuracy_sum'], accuracy, rtol=1e-5)
  np.testing.assert_allclose(m_a['loss_sum'], loss, rtol=1e-5)
  assert set(m_a) == {'loss_sum', 'count', 'pixel_accuracy_sum'}
  assert not np.allclose(jax.tree.leaves(a.model_state)[0],
                         jax.tree.leaves(state.model_state)[0])
  first = float(m_a['loss_sum'])
  for _ in range(40):
    state, metrics = step(state, batch)
  assert float(metrics['loss_sum']) < 0.6 * first  # 0.49 here, on 1 or 2 devices


def test_eval_step_ignores_padding_examples():
  mesh = parallel.make_mesh()
  n = 4 * mesh.devices.size
  state, batch = parallel.replicate(_tiny_state(), mesh), _tiny_batch(n)
  evaluate = parallel.data_parallel(
      lambda s, b: (s, steps.eval_step(s, b, task='segmentation')), mesh, donate_state=False)
  half = (np.arange(n) < n // 2).astype(np.float32)
  _, padded = evaluate(state, parallel.shard_batch(dict(batch, valid=half), mesh))
  doubled = jax.tree.map(lambda x: np.concatenate([x[:n // 2]] * 2), batch)
  _, twice = evaluate(state, parallel.shard_batch(dict(doubled, valid=np.ones(n, np.float32)),
                                                  mesh))
  assert float(padded['count']) == n // 2 and float(twice['count']) == n
  np.testing.assert_allclose(2 * padded['loss_sum'], twice['loss_sum'], rtol=1e-5)
  probs = np.asarray(padded['predictions'])
  assert probs.shape == (n, 8, 8, 3)  # per-pixel class probabilities, padding rows included
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  # Per-class Dice counts of the argmax maps: the real half counted twice is the doubled batch.
  keep = np.broadcast_to(half[:, None, None], (n, 8, 8))
  counts = seg.dice_counts(np.argmax(probs, -1), batch['labels'], 3, pixel_mask=keep)
  counts_twice = seg.dice_counts(np.argmax(twice['predictions'], -1), doubled['labels'], 3)
  assert int(counts_twice['tp'].sum() + counts_twice['fp'].sum()) == n * 8 * 8
  for k in seg.COUNTS:
    np.testing.assert_array_equal(2 * counts[k], counts_twice[k])


def test_fit_refuses_patches_or_windows_that_do_not_fit_before_writing(tmp_path):
  """Augmentation moves the masks with the images (tests/test_segmentation_aug.py); patches and
  evaluation windows must fit the images."""
  inputs, labels = np.asarray(_images((16, 8, 8, 1))), np.asarray(_masks((16, 8, 8), 3), np.int32)
  dataset = jdata.Dataset(name='tiny_segmentation', splits={'train': (inputs, labels),
                                                            'test': (inputs, labels)},
                          num_classes=3, task='segmentation', input_shape=(8, 8, 1))
  cfg = TrainConfig(model='unet', dataset='tiny_segmentation', augment='digits', epochs=1,
                    batch_size=8, eval_batch_size=8, model_kwargs={'features': [4, 8]},
                    patch_size=16, output_dir=str(tmp_path / 'run'), progress=False)
  with pytest.raises(ValueError, match=r'patch_size 16 exceeds the images \(8, 8, 1\)'):
    fit(cfg, dataset)
  with pytest.raises(ValueError, match='eval_stride 8 needs an eval_window'):
    fit(dataclasses.replace(cfg, patch_size=4, eval_window=4, eval_stride=8), dataset)
  assert not (tmp_path / 'run').exists()


# --- scripts/train.py: the segmentation task through the command line. ---


def test_train_script_lists_the_unet_and_the_segmentation_dataset(capsys):
  spec = importlib.util.spec_from_file_location('train_script', REPO / 'scripts' / 'train.py')
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  with pytest.raises(SystemExit):
    script.parse_args(['--help'])
  text = ' '.join(capsys.readouterr().out.split())
  models = re.search(r'--model MODEL .*? One of: ([^.]*)\.', text).group(1).split(', ')
  datasets = re.search(r'--dataset DATASET .*? One of: ([^.]*)\.', text).group(1).split(', ')
  assert 'unet' in models and 'seed_cnn' in models
  assert 'mnist_segmentation' in datasets and 'mnist' in datasets
  cfg = script.parse_config(['--model', 'unet', '--dataset', 'mnist_segmentation',
                             '--model-kwargs', '{"features": [16, 32, 64]}'])
  assert (cfg.model, cfg.dataset, cfg.model_kwargs) == ('unet', 'mnist_segmentation',
                                                        {'features': [16, 32, 64]})


# --- A short real-data run through scripts/train.py. ---

STEPS, BATCH, LEARNING_RATE = 800, 8, 3e-3
# Measured with --seed 0 (the default): mean foreground Dice 0.60, binary foreground Dice at
# least 0.98 (from the background Dice), pixel accuracy 0.948 (0.856 predicting background
# everywhere); seeds 1 and 2 reach 0.31 and 0.53. The untrained net scores ~0.01; 200 steps of
# batch 32 at learning rate 5e-3 reach 0.34, with a binary bound of only 0.75. About 25 s on 2
# CPU cores, of which the training steps take 13 s; the rest is the process start, the
# validation and test evaluations, and the checkpoints.
MEAN_DICE_BAR = 0.3


def _binary_foreground_dice_bound(background_dice: float, masks: np.ndarray) -> float:
  """The lowest binary foreground (stroke vs background) Dice a prediction can have, given its
  background Dice on `masks`.

  With F stroke and B background pixels, a prediction with `a` background pixels called stroke
  and `b` stroke pixels called background has background Dice d0 = 2 (B - a) / (2 (B - a) +
  a + b), so a + b = 2 (B - a) (1 / d0 - 1); its foreground Dice 2 (F - b) / (2 (F - b) + a + b)
  is lowest at a = 0: 2 (F - E) / (2 F - E) with E = 2 B (1 / d0 - 1).
  """
  foreground = float(np.count_nonzero(masks))
  errors = 2 * (masks.size - foreground) * (1 / background_dice - 1)
  return 2 * (foreground - errors) / (2 * foreground - errors)


def test_unet_learns_mnist_digit_segmentation_through_the_cli(tmp_path, data_dir, mnist):
  """11 classes: the net must tell which digit each stroke pixel belongs to. Segmentation is a
  task like the others: scripts/train.py trains it with fit."""
  out = tmp_path / 'run'
  command = [sys.executable, str(REPO / 'scripts' / 'train.py'), '--model', 'unet',
             '--dataset', 'mnist_segmentation', '--data-dir', str(data_dir),
             '--model-kwargs', '{"features": [16, 32, 64]}', '--optimizer', 'adam',
             '--learning-rate', str(LEARNING_RATE), '--batch-size', str(BATCH),
             '--max-steps', str(STEPS), '--steps-per-dispatch', '1', '--eval-batch-size', '500',
             '--no-progress', '--output-dir', str(out)]
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((out / 'summary.json').read_text())
  assert (summary['task'], summary['steps']) == ('segmentation', STEPS)
  assert summary['best']['metric'] == 'val_dice'

  masks = digit_masks(*mnist.splits['test'])  # the test split of mnist_segmentation
  per_class = summary['test_dice_per_class']
  mean = summary['test_dice']
  foreground = _binary_foreground_dice_bound(per_class[0], masks)
  all_background = float(np.mean(masks == 0))  # the pixel accuracy of predicting no strokes
  print(f'\nmean foreground Dice {mean:.3f}, binary foreground Dice >= {foreground:.3f}, '
        f'pixel accuracy {summary["test_pixel_accuracy"]:.4f} (all background '
        f'{all_background:.4f}), per digit {[d and round(d, 2) for d in per_class[1:]]}')
  assert np.isfinite(summary['test_loss'])
  assert mean == pytest.approx(np.mean([d for d in per_class[1:] if d is not None]))
  assert mean > MEAN_DICE_BAR
  assert foreground > 0.9
  assert summary['test_pixel_accuracy'] > all_background + 0.03
