"""Sequence models: shapes, padding invariance, gradients and what they expose for inspection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmed import models
from jmed.models.recurrent import RNNEncoder
from jmed.models.transformer import sinusoidal_positions

from conftest import packed_series

VOCAB = 20
IDS = np.array([[5, 6, 7, 0, 0, 0],
                [3, 4, 5, 6, 2, 9],
                [8, 0, 0, 0, 0, 0]], np.int32)


def _text_models():
  return {
      'gru': models.RNNClassifier(3, VOCAB, cell='gru', embed_dim=8, hidden_size=6, num_layers=2),
      'lstm_last': models.RNNClassifier(3, VOCAB, cell='lstm', embed_dim=8, hidden_size=6,
                                        pooling='last'),
      'gru_max_unidirectional': models.RNNClassifier(3, VOCAB, embed_dim=8, hidden_size=6,
                                                     bidirectional=False, pooling='max'),
      'transformer': models.TransformerClassifier(3, VOCAB, embed_dim=8, num_heads=2, mlp_dim=16,
                                                  max_length=16),
      'transformer_sinusoidal_max': models.TransformerClassifier(
          3, VOCAB, embed_dim=8, num_heads=2, mlp_dim=16, positions='sinusoidal', pooling='max'),
      'text_cnn': models.TextCNN(3, VOCAB, embed_dim=8, features=4),
  }


@pytest.mark.parametrize('name', list(_text_models()))
def test_text_models_logits_ignore_padding(name):
  """Logits [batch, classes] float32; more padding changes nothing (masks, lengths, pooling)."""
  model = _text_models()[name]
  params = model.init(jax.random.key(0), IDS)['params']
  logits = model.apply({'params': params}, IDS)
  assert logits.shape == (3, 3) and logits.dtype == jnp.float32
  longer = np.pad(IDS, ((0, 0), (0, 5)))
  np.testing.assert_allclose(model.apply({'params': params}, longer), logits, atol=1e-5)
  # A real token where padding was does change the output of that row only.
  changed = IDS.copy()
  changed[0, 3] = 11
  out = model.apply({'params': params}, changed)
  assert not np.allclose(out[0], logits[0]) and np.allclose(out[1:], logits[1:], atol=1e-6)


@pytest.mark.parametrize('name', list(_text_models()))
def test_text_models_gradients_are_finite_and_reach_the_embedding(name):
  model = _text_models()[name].clone(dropout_rate=0.2)
  params = model.init(jax.random.key(0), IDS)['params']

  def loss(p):
    logits = model.apply({'params': p}, IDS, train=True, rngs={'dropout': jax.random.key(1)})
    return -jax.nn.log_softmax(logits)[:, 0].mean()

  grads = jax.grad(loss)(params)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  embedding = grads[[k for k in grads if k.startswith('Embed')][0]]['embedding']
  assert np.abs(embedding[IDS[1]]).sum() > 0
  # Tokens not in the batch get no gradient.
  assert np.abs(embedding[np.array([1, 10, 12])]).sum() == 0


def test_bidirectional_encoder_runs_backward_from_each_sequences_own_end():
  """The backward final state of a padded row equals that of the unpadded sequence."""
  x = jax.random.normal(jax.random.key(0), (1, 4, 5))
  encoder = RNNEncoder('gru', hidden_size=3, bidirectional=True)
  padded = jnp.concatenate([x, 7 * jnp.ones((1, 3, 5))], 1)
  mask = jnp.arange(7)[None] < 4
  params = encoder.init(jax.random.key(1), padded, mask)
  out_padded, final_padded = encoder.apply(params, padded, mask)
  out, final = encoder.apply(params, x, jnp.ones((1, 4), bool))
  np.testing.assert_allclose(final_padded, final, atol=1e-6)
  np.testing.assert_allclose(out_padded[:, :4], out, atol=1e-6)
  assert np.all(out_padded[:, 4:] == 0)
  assert out.shape == (1, 4, 6) and final.shape == (1, 6)


def test_lstm_encoder_stacks_layers_and_sows_each():
  x = jnp.ones((2, 5, 4))
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  encoder = RNNEncoder('lstm', hidden_size=3, num_layers=3)
  variables = encoder.init(jax.random.key(0), x, mask)
  (outputs, final), state = encoder.apply(variables, x, mask, mutable=['intermediates'])
  hidden = state['intermediates']['hidden_states']
  assert len(hidden) == 3 and all(h.shape == (2, 5, 3) for h in hidden)
  np.testing.assert_allclose(final[0], outputs[0, 2])  # the last real step of row 0
  with pytest.raises(ValueError, match='cell'):
    RNNEncoder('elman').init(jax.random.key(0), x, mask)


def test_transformer_exposes_attention_weights_that_ignore_padding():
  model = _text_models()['transformer']
  variables = model.init(jax.random.key(0), IDS)
  _, inter = models.inspect(model, {'params': variables['params']}, IDS)
  encoder = inter['TransformerEncoder_0']
  weights = encoder['block0']['attention']['attention_weights'][0]
  assert weights.shape == (3, 2, 6, 6)  # [batch, heads, queries, keys]
  np.testing.assert_allclose(weights.sum(-1), 1, rtol=1e-5)
  assert float(weights[0, :, :3, 3:].max()) < 1e-6  # real queries never look at padding keys
  assert len(encoder['hidden_states']) == 2


def test_transformer_rejects_sequences_longer_than_its_positions():
  model = models.TransformerClassifier(3, VOCAB, embed_dim=8, num_heads=2, mlp_dim=16,
                                       max_length=4)
  with pytest.raises(ValueError, match='max_length'):
    model.init(jax.random.key(0), IDS)


def test_sinusoidal_positions_match_the_formula():
  table = sinusoidal_positions(50, 8)
  pos, i = 7, 2
  assert table.shape == (50, 8)
  np.testing.assert_allclose(table[pos, 2 * i], np.sin(pos / 10000 ** (2 * i / 8)), rtol=1e-5)
  np.testing.assert_allclose(table[pos, 2 * i + 1], np.cos(pos / 10000 ** (2 * i / 8)),
                             rtol=1e-5)


def test_text_cnn_exposes_feature_maps_and_pooled_features():
  model = _text_models()['text_cnn']
  variables = model.init(jax.random.key(0), IDS)
  _, inter = models.inspect(model, {'params': variables['params']}, IDS)
  assert [m.shape for m in inter['feature_maps']] == [(3, 6, 4)] * 3
  assert inter['features'][0].shape == (3, 12)
  assert all(np.all(m[0, 3:] == 0) for m in inter['feature_maps'])


def test_grud_ignores_padding_and_sows_hidden_states():
  x = packed_series(np.random.default_rng(0))
  model = models.GRUDClassifier(3, hidden_size=5)
  params = model.init(jax.random.key(0), x)['params']
  logits, inter = models.inspect(model, {'params': params}, x)
  assert logits.shape == (3, 3) and inter['hidden_states'][0].shape == (3, 6, 5)
  longer = np.pad(x, ((0, 0), (0, 4), (0, 0)))
  np.testing.assert_allclose(model.apply({'params': params}, longer), logits, atol=1e-6)
  hidden = inter['hidden_states'][0]
  np.testing.assert_allclose(hidden[2, 2:], np.broadcast_to(hidden[2, 1], (4, 5)))  # frozen


def test_grud_uses_the_missing_values_decay():
  """A missing value is imputed from its last observation, decayed by the elapsed time."""
  x = packed_series(np.random.default_rng(1), batch=1)
  model = models.GRUDClassifier(2, hidden_size=4)
  params = model.init(jax.random.key(0), x)['params']
  params = jax.tree.map(lambda p: p, params)
  params['grud']['input_decay_kernel'] = jnp.full((4,), 2.0)

  def loss(p, inputs):
    return model.apply({'params': p}, inputs)[0, 0]

  grads = jax.grad(loss)(params, x)
  assert np.isfinite(grads['grud']['input_decay_kernel']).all()
  assert np.abs(grads['grud']['input_decay_kernel']).sum() > 0
  assert np.abs(grads['grud']['hidden_decay']['kernel']).sum() > 0


@pytest.mark.parametrize('name,inputs', [
    ('transformer', IDS), ('gru', IDS), ('text_cnn', IDS), ('grud', 'series')])
def test_registered_models_build_by_name_in_bfloat16(name, inputs):
  if isinstance(inputs, str):
    inputs = packed_series(np.random.default_rng(0))
  kwargs = {} if name == 'grud' else {'vocab_size': VOCAB}
  model = models.get_model(name, num_classes=4, dropout_rate=0.1, dtype=jnp.bfloat16, **kwargs)
  logits, _ = model.init_with_output(jax.random.key(0), inputs)
  assert logits.shape == (len(inputs), 4) and logits.dtype == jnp.float32
  assert np.isfinite(logits).all()
