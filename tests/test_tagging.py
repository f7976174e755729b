"""The token tagger (BiLSTM / BiGRU / Transformer + CRF or softmax) and the 'tagging' task: shapes,
gradients, padding, entity metrics, label checks, 4 devices == 1, and a short real run on
NCBI-disease that must learn."""

import dataclasses
import os
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import one_and_four_devices
from jmed import configs, models, tasks
from jmed.errors import ConfigError, DataError
from jmed.models import crf

TAGS = ('O', 'B-Disease', 'I-Disease')
NER_DIR = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'ner',
                       'NCBI-disease-IOB')


def _inputs(batch=4, length=7, chars=5, seed=0):
  """Word + char ids [batch, length, 1 + chars], row i holding length - i % length real
  tokens (at least 1)."""
  rng = np.random.default_rng(seed)
  x = np.zeros((batch, length, 1 + chars), np.int32)
  labels = np.full((batch, length), -1, np.int32)
  for row in range(batch):
    n = length - row % (length - 1)
    x[row, :n, 0] = rng.integers(2, 20, n)
    x[row, :n, 1:] = rng.integers(2, 10, (n, chars))
    labels[row, :n] = rng.integers(0, len(TAGS), n)
  return x, labels


def _task():
  return dataclasses.replace(tasks.get('tagging'), tags=TAGS)


@pytest.mark.parametrize('encoder,use_crf', [('gru', True), ('transformer', False)])
def test_tagger_shapes_gradients_and_padding(encoder, use_crf):
  x, labels = _inputs()
  model = models.SequenceTagger(num_classes=3, vocab_size=20, num_chars=10, encoder=encoder,
                                embed_dim=16, hidden_size=8, num_heads=2, mlp_dim=16,
                                char_dim=4, char_features=6, crf=use_crf, dropout_rate=0.1,
                                word_dropout=0.3)
  variables = model.init(jax.random.key(0), x)
  out = model.apply(variables, x)
  assert out['logits'].shape == (4, 7, 3) and out['logits'].dtype == jnp.float32
  np.testing.assert_array_equal(out['mask'], labels >= 0)
  assert ('transitions' in out) == use_crf
  task = _task()

  def objective(params):
    outputs = model.apply({'params': params}, x, train=True,
                          rngs={'dropout': jax.random.key(1)})
    return task.loss(outputs, labels).mean()

  grads = jax.jit(jax.grad(objective))(variables['params'])
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert np.isfinite(grad).all(), jax.tree_util.keystr(path)
  predictions = np.asarray(jax.jit(task.predict)(out))
  assert predictions.shape == (4, 7)
  np.testing.assert_array_equal(predictions < 0, labels < 0)  # -1 exactly on padding
  # What lies beyond a sentence changes nothing in it (except the Transformer's positions).
  changed = x.copy()
  changed[0, -1] = 0  # row 0 loses its last token
  again = model.apply(variables, changed)
  if encoder != 'transformer':
    np.testing.assert_allclose(again['logits'][1:], out['logits'][1:], atol=1e-5)


def test_crf_loss_and_viterbi_agree_with_the_crf_functions():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
  labels = np.array([[0, 1, 2, 0, -1], [1, 2, -1, -1, -1]], np.int32)
  mask = labels >= 0
  params = {'transitions': jnp.asarray(rng.normal(size=(3, 3)), jnp.float32),
            'start': jnp.zeros(3), 'end': jnp.zeros(3)}
  outputs = {'logits': logits, 'mask': jnp.asarray(mask), **params}
  task = _task()
  np.testing.assert_allclose(
      task.loss(outputs, labels),
      -crf.log_likelihood(logits, labels, mask, params['transitions'], params['start'],
                          params['end']), rtol=1e-6)
  assert (np.asarray(task.loss(outputs, labels)) > 0).all()
  path, _ = crf.viterbi(logits, mask, params['transitions'], params['start'], params['end'])
  np.testing.assert_array_equal(task.predict(outputs), path)


def test_evaluate_scores_entities_by_exact_span():
  task = _task()
  labels = np.array([[0, 1, 2, 0, 1, -1], [1, 0, 0, 1, 2, 2]], np.int32)
  #   sentence 1: entities (1, 3) and (4, 5); sentence 2: (0, 1) and (3, 6)
  predictions = np.array([[0, 1, 2, 0, 0, -1], [1, 0, 0, 1, 2, 0]], np.int32)
  #   predicted: (1, 3) right, (0, 1) right, (3, 5) wrong span: 2 of 3 right, 2 of 4 found
  metrics = task.evaluate(predictions, labels)
  assert metrics['precision'] == pytest.approx(2 / 3)
  assert metrics['recall'] == pytest.approx(2 / 4)
  assert metrics['f1'] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
  assert metrics['f1_Disease'] == pytest.approx(metrics['f1'])
  assert metrics['token_accuracy'] == pytest.approx(9 / 11)
  table = task.prediction_table(predictions, TAGS)
  assert table['predicted_tags'][0] == 'O B-Disease I-Disease O O'


def test_label_checks_and_missing_tag_names():
  task = _task()
  task.check_labels(np.array([[0, 2, -1]], np.int32), 3, (3, 6), 'ok')
  with pytest.raises(DataError, match=r'bad.*tag ids .*\[-1, 2\]'):
    task.check_labels(np.array([[0, 3, -1]], np.int32), 3, (3, 6), 'bad')
  with pytest.raises(DataError, match='2 model outputs for 3 tags'):
    task.check_outputs(2, 'model')
  with pytest.raises(ConfigError, match='no tag names'):
    tasks.get('tagging').evaluate(np.zeros((1, 2), np.int32), np.zeros((1, 2), np.int32))


def test_ensemble_combines_by_majority_vote():
  members = np.array([[[0, 1, -1]], [[0, 2, -1]], [[1, 2, -1]]], np.int32)
  np.testing.assert_array_equal(_task().combine(members), [[0, 2, -1]])


# ---------------------------------------------------------------- data parallel


_PARALLEL_WORKER = textwrap.dedent('''
    import dataclasses, sys, numpy as np, jax, optax
    from jmed import models, tasks
    from jmed.train import parallel, steps
    from jmed.train.state import create_train_state
    inputs = dict(np.load(sys.argv[1]))
    mesh = parallel.make_mesh()
    task = dataclasses.replace(tasks.get('tagging'), tags=('O', 'B-X', 'I-X'))
    model = models.SequenceTagger(num_classes=3, vocab_size=20, num_chars=10, embed_dim=8,
                                  hidden_size=4, char_dim=4, char_features=4)
    tx = optax.adam(1e-2)
    state = jax.jit(lambda sample: create_train_state(model, tx, sample, 0))(inputs['x'][0, :1])
    state = parallel.replicate(state, mesh)
    train = parallel.data_parallel(steps.bind(steps.train_steps, task), mesh, batch_axis=1)
    state, metrics = train(state, parallel.shard_batch({'inputs': inputs['x'],
                                                        'labels': inputs['y']}, mesh, batch_axis=1))
    flat = np.concatenate([np.ravel(a) for a in jax.tree.leaves(jax.device_get(state.params))])
    np.savez(sys.argv[2], devices=len(jax.devices()), flat=flat,
             loss=np.asarray(metrics['loss_sum']))
''')


def test_crf_tagger_step_on_four_devices_equals_one_device(tmp_path):
  x, y = _inputs(batch=8, length=6, chars=3)
  path = tmp_path / 'inputs.npz'
  np.savez(path, x=np.stack([x, x[::-1]]), y=np.stack([y, y[::-1]]))  # two steps
  one, four = one_and_four_devices(tmp_path, _PARALLEL_WORKER, path)
  np.testing.assert_allclose(four['loss'], one['loss'], rtol=1e-5)
  np.testing.assert_allclose(four['flat'], one['flat'], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- a short real run


@pytest.mark.skipif(not os.path.isdir(NER_DIR), reason='NCBI-disease not available')
def test_bilstm_crf_learns_ncbi_disease(tmp_path):
  """A tiny BiLSTM-CRF on the first 600 NCBI-disease training sentences finds diseases in the
  devel sentences far above chance (an all-'O' tagger scores F1 0; measured: devel 0.59, test
  0.46). One step a dispatch: `train_steps` unrolls its steps, so 5 a dispatch took 5 s to
  compile against 2 s, for the same metrics."""
  from jmed.data import conll
  from jmed.train import loop
  data = conll.load('ncbi_disease', os.path.dirname(os.path.dirname(NER_DIR)),
                    configs.TextConfig(min_frequency=1, max_length=64, char_length=12))
  cut = {'train': 600, 'validation': 200, 'test': 200}
  data = dataclasses.replace(data, splits={k: (x[:cut[k]], y[:cut[k]])
                                           for k, (x, y) in data.splits.items()})
  cfg = configs.TrainConfig(
      model='lstm_tagger', dataset='ncbi_disease', epochs=4, batch_size=20, eval_batch_size=100,
      optimizer=configs.OptimizerConfig(name='adam', learning_rate=1e-2, clip_norm=5.0),
      model_kwargs={'embed_dim': 24, 'hidden_size': 24, 'char_dim': 8, 'char_features': 16},
      steps_per_dispatch=1, output_dir=str(tmp_path / 'run'), progress=False)
  summary = loop.fit(cfg, data)
  assert summary['best']['value'] > 0.3, summary['best']
  assert summary['test_f1'] > 0.3 and summary['test_token_accuracy'] > 0.9
  assert os.path.isfile(tmp_path / 'run' / 'tokenizer.json')


# ---------------------------------------------------------------- the user's own CoNLL files


def _write_conll(path, sentences):
  with open(path, 'w', encoding='utf-8') as f:
    for tokens, tags in sentences:
      f.writelines(f'{token}\t{tag}\n' for token, tag in zip(tokens, tags))
      f.write('\n')


@pytest.mark.skipif(not os.path.isdir(NER_DIR), reason='NCBI-disease not available')
def test_user_conll_folder_trains_and_predicts(tmp_path):
  """A folder of token<TAB>tag files (NCBI-disease sentences) is found as 'conll', trains, and
  a new file is scored with the run's saved tokenizer, characters and tags: one predicted tag
  per token, beside the file's own tags."""
  from jmed import predict
  from jmed.data import conll, user
  from jmed.train import loop
  sentences = conll.read(os.path.join(NER_DIR, 'train.tsv'))[:90]
  folder = tmp_path / 'notes'
  folder.mkdir()
  for name, part in (('train', sentences[:60]), ('devel', sentences[60:75]),
                     ('test', sentences[75:])):
    _write_conll(folder / f'{name}.tsv', part)
  data = configs.DataConfig(path=str(folder))
  assert user.resolve_source(data) == 'conll'
  cfg = configs.TrainConfig(
      model='gru_tagger', data=data, epochs=1, batch_size=20, eval_batch_size=20,
      model_kwargs={'embed_dim': 8, 'hidden_size': 8, 'char_dim': 4, 'char_features': 4},
      text=configs.TextConfig(min_frequency=1, char_length=8), steps_per_dispatch=1,
      output_dir=str(tmp_path / 'run'), progress=False)
  summary = loop.fit(cfg)
  assert summary['task'] == 'tagging' and 0 <= summary['test_f1'] <= 1
  result = predict.predict_file(str(tmp_path / 'run'), str(folder / 'test.tsv'))
  assert result.ids[0] == 'sentence 1' and len(result.ids) == 15
  for (tokens, tags), predicted, own in zip(sentences[75:], result.columns['predicted_tags'],
                                            result.columns['tags']):
    assert len(predicted.split()) == len(tokens) and own.split() == tags
  assert set(result.metrics) >= {'f1', 'precision', 'recall', 'token_accuracy'}
