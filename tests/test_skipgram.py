"""word2vec's skip-gram with negative sampling: the pairs the model draws, the task's loss, and
that a short run on real text separates contexts from noise."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmed import configs, models, tasks
from jmed.errors import ConfigError

DATA = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')


def test_pairs_stay_in_the_window_and_on_real_tokens():
  ids = np.array([[5, 6, 7, 8, 9, 0, 0, 0], [2, 3, 0, 0, 0, 0, 0, 0]], np.int32)
  model = models.SkipGram(num_classes=10, vocab_size=10, embed_dim=4, window=2, negatives=3)
  variables = model.init(jax.random.key(0), ids)
  # With the context vectors set to one-hot rows, a score reads back the target token's id.
  params = jax.tree.map(lambda x: x, variables['params'])
  params['Embed_0']['embedding'] = jnp.ones((10, 4)) * jnp.arange(1, 5) / 10
  params['context']['embedding'] = jnp.arange(10.)[:, None] * jnp.array([10, 0, 0, 0.])
  out = model.apply({'params': params}, ids, train=True, rngs={'dropout': jax.random.key(3)})
  assert out['scores'].shape == (2, 8, 4) and out['weights'].shape == (2, 8)
  targets = np.rint(np.asarray(out['scores'])).astype(int)  # [b, L, 1 + negatives] token ids
  weights = np.asarray(out['weights'])
  assert not weights[:, 5:].any() and weights[0, :5].any()
  for b, t in zip(*np.nonzero(weights)):
    row = list(ids[b])
    near = {row[u] for u in range(max(0, t - 2), min(8, t + 3)) if u != t}
    assert targets[b, t, 0] in near  # the context lies within the window
  real = set(ids[ids > 0])
  assert set(targets[..., 1:].ravel()) <= real  # noise is drawn from the batch's real tokens
  with pytest.raises(ValueError, match='num_classes'):
    models.SkipGram(num_classes=9, vocab_size=10).init(jax.random.key(0), ids)


def test_task_loss_is_word2vecs_objective():
  task = tasks.get('skipgram')
  scores = jnp.array([[[2.0, -1.0, 0.5], [0.0, 1.0, -3.0]]])  # [1, 2, 1 + 2]
  weights = jnp.array([[True, False]])
  expected = jax.nn.softplus(-2.0) + jax.nn.softplus(-1.0) + jax.nn.softplus(0.5)
  loss = task.loss({'scores': scores, 'weights': weights}, None)
  np.testing.assert_allclose(loss, [expected], rtol=1e-6)
  predictions = np.asarray(task.predict({'scores': scores, 'weights': weights}))
  metrics = task.evaluate(predictions, None)
  assert metrics == {'accuracy': 1.0, 'loss': pytest.approx(float(expected))}
  assert task.metric_names == ('accuracy', 'loss') and task.select_metric('auto') == 'loss'
  with pytest.raises(ConfigError, match='skipgram'):
    task.loss(jnp.zeros((1, 3)), None)


@pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, 'ner')), reason='no NER corpora')
def test_skipgram_learns_on_real_sentences(tmp_path):
  """On NCBI-disease's training and devel sentences a few hundred steps lift the held-out
  pairs' accuracy (the context above all 5 noise words) well above chance (1/6); a tagger
  started from the run (`init_from`) takes its word embeddings and vocabulary (0.39 measured).
  One step a dispatch: `train_steps` unrolls its steps (the recipe's 8 a dispatch, and the
  remainder of 5 of each 45-step epoch, took 6 s to compile against 1 s)."""
  from jmed.data import corpus
  from jmed.train import loop
  data = corpus.load(DATA, configs.TextConfig(vocab_size=3000, min_frequency=2, max_length=64),
                     sources=['ncbi_disease'], task='skipgram')
  cfg = dataclasses.replace(
      configs.SKIPGRAM_RECIPE, epochs=6, batch_size=64, steps_per_dispatch=1,
      optimizer=configs.OptimizerConfig(name='adam', learning_rate=2e-2),
      model_kwargs={'embed_dim': 32, 'window': 3, 'negatives': 5},
      output_dir=str(tmp_path / 'run'), progress=False)
  summary = loop.fit(cfg, data)
  assert summary['test_accuracy'] > 0.25, summary['best']

  # A tagger starts from the run: its word embeddings, and the run's vocabulary for the words.
  tagger = configs.TrainConfig(
      model='lstm_tagger', dataset='ncbi_disease', data_dir=DATA, init_from=str(tmp_path / 'run'),
      epochs=1, max_steps=1, batch_size=32, eval_batch_size=64, steps_per_dispatch=1,
      model_kwargs={'embed_dim': 32, 'hidden_size': 4, 'char_features': 4},
      output_dir=str(tmp_path / 'tagger'), progress=False)
  tagged = loop.load_dataset(tagger)
  assert tagged.model_kwargs['vocab_size'] == data.model_kwargs['vocab_size']
  tagged = dataclasses.replace(tagged, splits={k: (x[:64], y[:64])
                                               for k, (x, y) in tagged.splits.items()})
  summary = loop.fit(tagger, tagged)
  assert summary['init_from']['loaded'] == ['Embed_0/embedding']
  with open(tmp_path / 'tagger' / 'tokenizer.json') as saved, \
       open(tmp_path / 'run' / 'tokenizer.json') as pretrained:
    assert saved.read() == pretrained.read()
