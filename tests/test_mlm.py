"""Masked-LM pretraining: the MaskedLM model (positions, corruption, shapes, gradients), the
masked_lm task on hand values, and one data-parallel step on 4 devices equal to 1 device."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import one_and_four_devices
from jmed.errors import ConfigError, DataError
from jmed.models import mlm
from jmed.models.mlm import MaskedLM
from jmed.tasks.masked_lm import MaskedLM as MaskedLMTask

TASK = MaskedLMTask()
VOCAB = 40


def _model(**kwargs):
  defaults = dict(num_classes=VOCAB, vocab_size=VOCAB, embed_dim=16, num_layers=1, num_heads=2,
                  mlp_dim=32, max_length=16, mask_rate=0.25)
  return MaskedLM(**{**defaults, **kwargs})


def _ids(lengths=(12, 5, 1, 0), length=12):
  """[rows, length]: row r holds ids 2.. (distinct: an id names its position), then padding."""
  ids = np.zeros((len(lengths), length), np.int32)
  for r, n in enumerate(lengths):
    ids[r, :n] = np.arange(2, 2 + n)
  return ids


# ---------------------------------------------------------------- the model


@pytest.fixture(scope='module')
def tiny():
  """(model, ids, params, train(key), evaluate()): compiled once for the tests below."""
  model, ids = _model(dropout_rate=0.1), _ids()
  params = jax.jit(model.init)(jax.random.key(0), ids)['params']
  train = jax.jit(lambda key: model.apply({'params': params}, ids, train=True,
                                          rngs={'dropout': key}))
  evaluate = jax.jit(lambda: model.apply({'params': params}, ids, train=False))
  return model, ids, params, train, evaluate


def test_shapes_targets_are_real_tokens_and_never_padding(tiny):
  _, _, params, train, _ = tiny
  assert {'Embed_0', 'TransformerEncoder_0', 'mask_embedding', 'mlm_dense', 'mlm_norm',
          'mlm_bias'} == set(params)
  k = mlm.num_targets(12, 0.25)
  assert k == 3
  seen = set()
  for seed in range(20):
    out = train(jax.random.key(seed))
    assert out['logits'].shape == (4, k, VOCAB) and out['logits'].dtype == jnp.float32
    assert out['targets'].shape == (4, k) and out['targets'].dtype == jnp.int32
    targets = np.asarray(out['targets'])
    for row, n in enumerate((12, 5, 1, 0)):
      real = targets[row][targets[row] >= 0]
      assert len(real) == min(k, n) and len(set(real)) == len(real)  # distinct positions
      assert ((real >= 2) & (real < 2 + n)).all()  # real tokens only
      assert (targets[row][min(k, n):] == -1).all()  # the picks beyond a short row come last
      seen.update((row, t) for t in real)
  assert len([1 for row, _ in seen if row == 0]) == 12  # every position of a full row is drawn


def test_eval_is_deterministic_and_train_draws_new_masks(tiny):
  _, _, _, train, evaluate = tiny
  first, second = evaluate(), evaluate()
  np.testing.assert_array_equal(first['logits'], second['logits'])
  np.testing.assert_array_equal(first['targets'], second['targets'])
  targets = [np.asarray(train(jax.random.key(s))['targets']) for s in range(4)]
  assert any((t != targets[0]).any() for t in targets[1:])


def test_corruption_is_80_10_10_and_positions_skip_padding():
  kinds = np.asarray(mlm.corruption_kinds(jax.random.key(1), (200, 100)))
  shares = np.bincount(kinds.ravel(), minlength=3) / kinds.size
  np.testing.assert_allclose(shares, [0.8, 0.1, 0.1], atol=0.01)
  mask = np.arange(10)[None] < np.array([[10], [3]])
  positions, chosen = mlm.select_positions(jax.random.key(2), jnp.asarray(mask), 4)
  np.testing.assert_array_equal(chosen, [[True] * 4, [True] * 3 + [False]])
  assert (np.asarray(positions)[1, :3] < 3).all()
  assert mlm.num_targets(4, 0.15) == 1 and mlm.num_targets(100, 0.15) == 15


def test_num_classes_must_be_the_vocabulary():
  with pytest.raises(ValueError, match='num_classes 3 must equal vocab_size 40'):
    _model(num_classes=3).init(jax.random.key(0), _ids())


# ---------------------------------------------------------------- the task


def _outputs():
  logits = np.log(np.array([[[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]],
                            [[0.1, 0.1, 0.8], [0.3, 0.6, 0.1]],
                            [[0.5, 0.3, 0.2], [0.4, 0.4, 0.2]]], np.float32))
  targets = np.array([[0, 2], [2, -1], [-1, -1]], np.int32)
  return {'logits': jnp.asarray(logits), 'targets': jnp.asarray(targets)}


def test_task_loss_metrics_and_predictions_on_hand_values():
  outputs, labels = _outputs(), np.zeros((3, 4), np.int32)
  losses = np.asarray(jax.jit(TASK.loss)(outputs, labels))
  np.testing.assert_allclose(losses, [-(np.log(0.7) + np.log(0.3)) / 2, -np.log(0.8), 0.0],
                             rtol=1e-5)
  accuracy = np.asarray(TASK.train_metrics(outputs, labels)['accuracy'])
  np.testing.assert_allclose(accuracy, [0.5, 1.0, 0.0])
  predictions = np.asarray(jax.jit(TASK.predict)(outputs))
  assert predictions.shape == (3, 3) and predictions.dtype == np.float32
  np.testing.assert_allclose(predictions[:, 1:], [[1, 2], [1, 1], [0, 0]])
  scores = TASK.evaluate(predictions, labels)
  ce = -(np.log(0.7) + np.log(0.3) + np.log(0.8)) / 3  # token mean, not the mean of rows
  assert scores['loss'] == pytest.approx(ce, rel=1e-5)
  assert scores['perplexity'] == pytest.approx(np.exp(ce), rel=1e-5)
  assert scores['accuracy'] == pytest.approx(2 / 3)
  table = TASK.prediction_table(predictions, [])
  np.testing.assert_allclose(table['accuracy'], [0.5, 1.0, np.nan])
  np.testing.assert_array_equal(table['masked_tokens'], [2, 1, 0])


def test_task_metadata_and_checks():
  assert TASK.name == 'masked_lm' and TASK.select_metric('auto') == 'loss'
  assert TASK.lower_is_better('perplexity') and not TASK.lower_is_better('accuracy')
  assert TASK.label_shape(VOCAB, (12,)) == (12,)
  TASK.check_labels(_ids(), VOCAB, (12,), 'corpus/train')
  with pytest.raises(DataError, match='corpus/train: token ids outside'):
    TASK.check_labels(_ids() + VOCAB, VOCAB, (12,), 'corpus/train')
  with pytest.raises(ConfigError, match="needs a model returning {'logits', 'targets'}"):
    TASK.loss(jnp.zeros((2, 5)), None)


# ---------------------------------------------------------------- data parallel


_PARALLEL_WORKER = textwrap.dedent('''
    import sys, numpy as np, jax, optax
    from jmed.models.mlm import MaskedLM
    from jmed.tasks.masked_lm import MaskedLM as MaskedLMTask
    from jmed.train import parallel, steps
    from jmed.train.state import create_train_state
    inputs = dict(np.load(sys.argv[1]))
    mesh = parallel.make_mesh()
    model = MaskedLM(num_classes=20, vocab_size=20, embed_dim=8, num_layers=1, num_heads=2,
                     mlp_dim=16, max_length=8, mask_rate=0.25, dropout_rate=0.1)
    # SGD (update = -lr * gradient): Adam would turn the attention key biases' ~0 gradients
    # (float noise) into full steps.
    state = create_train_state(model, optax.sgd(1.0), inputs['x'][0, :1], 0)
    leaves = lambda params: {'.'.join(k.key for k in path): np.asarray(leaf) for path, leaf
                             in jax.tree_util.tree_leaves_with_path(jax.device_get(params))}
    before = leaves(state.params)
    state = parallel.replicate(state, mesh)
    train = parallel.data_parallel(steps.bind(steps.train_steps, MaskedLMTask()), mesh,
                                   batch_axis=1)
    batch = {'inputs': inputs['x'], 'labels': inputs['x']}
    state, metrics = train(state, parallel.shard_batch(batch, mesh, batch_axis=1))
    grads = {name: before[name] - after for name, after in leaves(state.params).items()}
    np.savez(sys.argv[2], devices=len(jax.devices()), loss=np.asarray(metrics['loss_sum']),
             accuracy=np.asarray(metrics['accuracy_sum']), **grads)
''')


def test_mlm_step_on_four_devices_equals_one_device(tmp_path):
  """One data-parallel train step (dropout on): the same loss and gradients on 4 devices as on
  1 (the masks are drawn per global batch), finite and reaching every part of the model."""
  rng = np.random.default_rng(0)
  x = rng.integers(1, 20, size=(1, 8, 8)).astype(np.int32)  # one step, batch 8, length 8
  x[0, 4:, 5:] = 0  # some padded rows
  path = tmp_path / 'inputs.npz'
  np.savez(path, x=x)
  one, four = one_and_four_devices(tmp_path, _PARALLEL_WORKER, path)
  assert (one['loss'] > 0).all()
  assert one.keys() == four.keys()
  for name in one:
    np.testing.assert_allclose(four[name], one[name], rtol=1e-4, atol=1e-6, err_msg=name)
  grads = {name: g for name, g in one.items() if name not in ('loss', 'accuracy')}
  assert all(np.isfinite(g).all() for g in grads.values())
  for part in ('Embed_0', 'TransformerEncoder_0', 'mask_embedding', 'mlm_dense', 'mlm_bias'):
    assert max(np.abs(g).max() for name, g in grads.items() if name.startswith(part)) > 0, part
