"""Text, survival and irregular series through the same jit'd data-parallel loop as the CNNs."""

import dataclasses
import textwrap

import jax
import numpy as np
import optax
import pytest

from conftest import one_and_four_devices, subset
from jmed import data as jdata
from jmed import models
from jmed import survival
from jmed import tasks
from jmed import text as jtext
from jmed.configs import OptimizerConfig, TextConfig, TrainConfig
from jmed.data import medical_abstracts
from jmed.train import steps
from jmed.train.loop import fit
from jmed.train.report import format_summary
from jmed.train.state import create_train_state


def _cfg(tmp_path, **kw):
  base = dict(epochs=2, batch_size=64, eval_batch_size=128, steps_per_dispatch=2,
              output_dir=str(tmp_path / 'run'), progress=False,
              optimizer=OptimizerConfig(name='adam', learning_rate=3e-3))
  return TrainConfig(**{**base, **kw})


@pytest.fixture(scope='module')
def metabric(data_dir):
  return jdata.load_dataset('metabric', data_dir=str(data_dir))


@pytest.fixture(scope='module')
def abstracts(data_dir, tmp_path_factory):
  return jdata.load_dataset('medical_abstracts', data_dir=str(data_dir),
                            tfds_dir=str(tmp_path_factory.mktemp('tfds')),
                            text=TextConfig(max_length=128))


def test_mlp_cox_model_learns_metabric_through_fit(tmp_path, metabric):
  """A real run: Cox loss over each global batch, C-index on validation picks the checkpoint."""
  assert metabric.task == 'survival' and metabric.sizes['test'] == 381
  cfg = _cfg(tmp_path, model='mlp', epochs=6, batch_size=256, eval_batch_size=200,
             model_kwargs={'hidden': [16]})
  summary = fit(cfg, dataset=metabric)
  assert summary['best']['metric'] == 'val_c_index'
  assert summary['test_c_index'] > 0.6, summary  # chance: 0.5; DeepSurv's CoxPH row: 0.631
  assert np.isfinite(summary['test_loss'])
  assert 'c_index' in format_summary(summary) and 'auroc' not in format_summary(summary)


def test_cox_train_loss_is_the_global_batch_cox_loss(metabric):
  x, y = (a[:64] for a in metabric.splits['train'])
  model = models.MLP(num_classes=1, hidden=(8,))
  state = create_train_state(model, optax.sgd(0.0), x[:1], 0)
  _, metrics = jax.jit(steps.bind(steps.train_step, 'survival'))(state, {'inputs': x, 'labels': y})
  risk = model.apply({'params': state.params}, x)[:, 0]
  expected = survival.cox_loss(risk, y[:, 0], y[:, 1])
  np.testing.assert_allclose(float(metrics['loss_sum']) / 64, expected, rtol=1e-5)


_PARALLEL_WORKER = textwrap.dedent('''
    import sys, numpy as np, jax, optax
    from jmed import models
    from jmed.train import parallel, steps
    from jmed.train.state import create_train_state
    inputs = dict(np.load(sys.argv[1]))
    mesh = parallel.make_mesh()
    out = {}
    for task, model, x, y in [
        ('survival', models.MLP(num_classes=1, hidden=(8,), dropout_rate=0.2),
         inputs['x'], inputs['y']),
        ('multiclass', models.TransformerClassifier(3, 30, embed_dim=8, num_heads=2, mlp_dim=16,
                                                    dropout_rate=0.2, max_length=12),
         inputs['ids'], inputs['labels'])]:
      tx = optax.sgd(0.1, momentum=0.9)  # a jitted init: one compile, not one per operation
      state = jax.jit(lambda sample: create_train_state(model, tx, sample, 0))(x[0, :1])
      state = parallel.replicate(state, mesh)
      train = parallel.data_parallel(steps.bind(steps.train_steps, task), mesh, batch_axis=1)
      state, metrics = train(state, parallel.shard_batch({'inputs': x, 'labels': y}, mesh,
                                                         batch_axis=1))
      leaves = jax.tree.leaves(jax.device_get(state.params))
      out[task + '_flat'] = np.concatenate([np.ravel(a) for a in leaves])
      out[task + '_loss'] = np.asarray(metrics['loss_sum'])
    np.savez(sys.argv[2], devices=len(jax.devices()), **out)
''')


def test_four_devices_equal_one_device_for_cox_and_transformer(tmp_path, metabric):
  """Cox risk sets span the global batch; padding masks and dropout agree across devices."""
  x, y = metabric.splits['train']
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 30, size=(2, 16, 12)).astype(np.int32)
  ids[:, :, 8:] *= rng.random((2, 16, 4)) < 0.3  # ragged padding
  path = tmp_path / 'inputs.npz'
  np.savez(path, x=x[:64].reshape(2, 32, -1), y=y[:64].reshape(2, 32, 2), ids=ids,
           labels=rng.integers(0, 3, size=(2, 16)).astype(np.int32))
  one, four = one_and_four_devices(tmp_path, _PARALLEL_WORKER, path)
  for task in ('survival', 'multiclass'):
    np.testing.assert_allclose(four[f'{task}_loss'], one[f'{task}_loss'], rtol=1e-5)
    np.testing.assert_allclose(four[f'{task}_flat'], one[f'{task}_flat'], rtol=1e-4, atol=1e-5)


def test_transformer_learns_medical_abstracts_and_saves_its_tokenizer(tmp_path, abstracts,
                                                                       data_dir):
  """A small real run: macro-F1 well above chance (about 0.2; 0.55 measured), and the saved
  vocabulary reproduces the training inputs. One step a dispatch: `train_steps` unrolls its
  steps, and 2 a dispatch also compiled a remainder program for the 63-step epochs."""
  cfg = _cfg(tmp_path, model='transformer', epochs=3, batch_size=32, steps_per_dispatch=1,
             select_metric='f1', class_weights='balanced', dropout_rate=0.3,
             model_kwargs={'embed_dim': 32, 'num_layers': 1, 'num_heads': 2, 'mlp_dim': 64,
                           'pooling': 'attention'})
  summary = fit(cfg, dataset=abstracts)
  assert summary['test_f1'] > 0.35, summary
  tokenizer = jtext.load(tmp_path / 'run' / 'tokenizer.json')
  assert jtext.vocab_size(tokenizer) == abstracts.model_kwargs['vocab_size']
  texts, labels = medical_abstracts.load_offline(str(data_dir / 'medical_abstracts'))['test']
  np.testing.assert_array_equal(labels, abstracts.splits['test'][1])
  np.testing.assert_array_equal(jtext.encode(tokenizer, texts, 128), abstracts.splits['test'][0])


def test_text_batches_have_one_shape_so_the_step_compiles_once(abstracts):
  ids, labels = abstracts.splits['train']
  model = models.RNNClassifier(5, abstracts.model_kwargs['vocab_size'], embed_dim=8,
                               hidden_size=8)
  state = create_train_state(model, optax.adam(1e-3), ids[:1], 0)
  step = jax.jit(steps.bind(steps.train_step, 'multiclass'))
  sizes = []
  for i, batch in enumerate(jdata.train_batches(ids, labels, 16, seed=0, epoch=0)):
    assert batch['inputs'].dtype == np.int32 and batch['inputs'].shape == (16, 128)
    state, _ = step(state, batch)
    sizes.append(step._cache_size())  # pylint: disable=protected-access
    if i == 5:
      break
  # The first call traces with the freshly created state's Python-scalar step; after that every
  # batch, whatever its documents' lengths, reuses one compiled program.
  assert sizes[1:] == [sizes[1]] * 5 and sizes[1] <= 2, sizes


def test_grud_learns_irregular_mnist_through_fit(tmp_path, data_dir):
  """GRU-D on real MNIST rows sampled irregularly with missing pixels (a stand-in signal)."""
  dataset = jdata.load_dataset('mnist_irregular', data_dir=str(data_dir))
  assert dataset.input_shape == (28, 1 + 3 * 28)
  inputs = dataset.splits['train'][0]
  assert 0.4 < inputs[..., 0].mean() < 0.6  # about half the rows kept
  small = subset(dataset, 3000, 500)
  cfg = _cfg(tmp_path, model='grud', epochs=4, model_kwargs={'hidden_size': 32},
             optimizer=OptimizerConfig(name='adam', learning_rate=1e-2))
  summary = fit(cfg, dataset=small)
  assert summary['test_accuracy'] > 0.5, summary  # chance: 0.1


def test_select_metric_follows_the_task():
  survival_task, binary = tasks.get('survival'), tasks.get('binary')
  assert survival_task.select_metric('auto') == 'c_index'
  assert binary.select_metric('auto') == 'auroc'
  assert survival_task.select_metric('loss') == 'loss'
  assert not survival_task.lower_is_better('c_index') and survival_task.lower_is_better('loss')
  with pytest.raises(ValueError, match='does not apply'):
    survival_task.select_metric('auroc')
  with pytest.raises(ValueError, match='does not apply'):
    tasks.get('multiclass').select_metric('c_index')


def test_balanced_class_weights_match_scikit_learn():
  from sklearn.utils.class_weight import compute_class_weight
  labels = np.array([0, 0, 0, 1, 2, 2])
  expected = compute_class_weight('balanced', classes=np.arange(3), y=labels)
  multiclass = tasks.get('multiclass')
  np.testing.assert_allclose(multiclass.class_weights(labels, 3), expected)
  assert multiclass.class_weights(labels, 4)[3] == 0.0


def test_class_weights_steer_the_gradient():
  """A zero weight removes a class from the objective; metrics stay unweighted."""
  x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
  y = np.array([0, 1] * 4, np.int32)
  state = create_train_state(models.MLP(num_classes=2, hidden=()), optax.sgd(1.0), x[:1], 0)
  only_0 = jax.jit(steps.bind(steps.train_step, 'binary', class_weights=(2.0, 0.0)))
  new, metrics = only_0(state, {'inputs': x, 'labels': y})
  unweighted = jax.jit(steps.bind(steps.train_step, 'binary'))
  _, plain_metrics = unweighted(state, {'inputs': x, 'labels': y})
  np.testing.assert_allclose(metrics['loss_sum'], plain_metrics['loss_sum'])
  keep_0 = jax.jit(steps.bind(steps.train_step, 'binary'))(
      state, {'inputs': x[y == 0], 'labels': y[y == 0]})[0]
  np.testing.assert_allclose(new.params['Dense_0']['kernel'],
                             keep_0.params['Dense_0']['kernel'], rtol=1e-5)


def test_survival_labels_are_validated(metabric):
  x, y = metabric.splits['test']
  bad = y.copy()
  bad[0, 1] = 2
  splits = {**metabric.splits, 'test': (x, bad)}
  with pytest.raises(jdata.DataError, match='event'):
    dataclasses.replace(metabric, splits=splits)
  with pytest.raises(jdata.DataError, match='float32'):
    dataclasses.replace(metabric, splits={**metabric.splits, 'test': (x, y.astype(np.int32))})


def test_model_that_does_not_fit_the_data_gets_a_clear_error(tmp_path, metabric):
  with pytest.raises(ValueError, match='does not fit dataset'):
    fit(_cfg(tmp_path, model='mlp', model_kwargs={'vocab_size': 3}), dataset=metabric)
  assert not (tmp_path / 'run').exists()  # refused before anything was written
