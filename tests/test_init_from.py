"""init_from: a pretrained run's parameters read back from its checkpoints and merged into a
new model by path and shape (a classifier starting from a masked LM's encoder)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jmed import configs
from jmed.errors import ConfigError, MissingDataError
from jmed.models.mlm import MaskedLM
from jmed.models.transformer import TransformerClassifier
from jmed.train import checkpoint, init_from
from jmed.train.state import create_train_state

ARCH = dict(vocab_size=30, embed_dim=8, num_layers=1, num_heads=2, mlp_dim=16, max_length=8)
IDS = np.arange(8, dtype=np.int32)[None] % 5 + 1


def _init(model, seed=0):
  return jax.jit(model.init)(jax.random.key(seed), IDS)['params']


@pytest.fixture(scope='module')
def mlm_params():
  return _init(MaskedLM(num_classes=30, **ARCH), seed=1)


def test_classifier_takes_embedding_and_encoder_from_a_masked_lm(mlm_params):
  fresh = _init(TransformerClassifier(num_classes=3, **ARCH))
  params, report = init_from.merge(fresh, mlm_params)
  assert jax.tree.structure(params) == jax.tree.structure(fresh)
  np.testing.assert_array_equal(params['Embed_0']['embedding'], mlm_params['Embed_0']['embedding'])
  for a, b in zip(jax.tree.leaves(params['TransformerEncoder_0']),
                  jax.tree.leaves(mlm_params['TransformerEncoder_0'])):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(params['Dense_0']['kernel'], fresh['Dense_0']['kernel'])
  encoder = [p for p in init_from.flatten(fresh) if not p.startswith('Dense_0')]
  assert sorted(report['loaded']) == sorted(encoder)
  assert 'TransformerEncoder_0/block0/attention/query/kernel' in report['loaded']
  assert report['skipped'] == ['Dense_0/bias: not in the pretrained parameters',
                               'Dense_0/kernel: not in the pretrained parameters']
  assert {'mask_embedding', 'mlm_bias', 'mlm_dense/kernel'} <= set(report['unused'])


def test_shape_mismatch_is_skipped_dtypes_kept_and_nothing_matching_raises(mlm_params):
  fresh = _init(TransformerClassifier(num_classes=3, **{**ARCH, 'vocab_size': 50}))
  pretrained = jax.tree.map(lambda x: np.asarray(x, np.float64), mlm_params)
  params, report = init_from.merge(fresh, pretrained)
  assert 'Embed_0/embedding: shape [50, 8] != pretrained [30, 8]' in report['skipped']
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
  np.testing.assert_allclose(params['TransformerEncoder_0']['positions'],
                             mlm_params['TransformerEncoder_0']['positions'])
  with pytest.raises(ConfigError, match=r'no parameter .* e\.g\. Dense_0/bias.* e\.g\. Embed_0'):
    init_from.merge({'Dense_0': fresh['Dense_0']}, mlm_params)


def _save_run(run_dir, params, steps_and_dirs):
  """A jmed-like run directory: config.json and orbax checkpoints of a TrainState."""
  run_dir.mkdir()
  (run_dir / 'config.json').write_text(json.dumps(dataclasses.asdict(configs.TrainConfig())))
  state = create_train_state(MaskedLM(num_classes=30, **ARCH), optax.adam(1e-3), IDS, 0)
  for step, directory, scale in steps_and_dirs:
    manager = checkpoint.make_manager(str(run_dir / directory))
    checkpoint.save(manager, state.replace(step=step,
                                           params=jax.tree.map(lambda x: x * scale, params)),
                    wait=True)
    manager.close()


def test_pretrained_params_read_the_best_checkpoint_else_the_latest(tmp_path, mlm_params):
  run = tmp_path / 'run'
  _save_run(run, mlm_params, [(5, 'best', 2.0), (9, 'checkpoints', 3.0)])
  best = init_from.pretrained_params(str(run))
  assert jax.tree.structure(best) == jax.tree.structure(mlm_params)
  np.testing.assert_allclose(best['mlm_bias'], 2 * np.asarray(mlm_params['mlm_bias']))
  np.testing.assert_allclose(best['Embed_0']['embedding'], 2 * mlm_params['Embed_0']['embedding'])
  latest = init_from.pretrained_params(str(run), which='latest')
  np.testing.assert_allclose(latest['Embed_0']['embedding'],
                             3 * mlm_params['Embed_0']['embedding'])
  with pytest.raises(MissingDataError, match='tokenizer.json not found'):
    init_from.tokenizer_path(str(run))
  (run / 'tokenizer.json').write_text('{}')
  assert init_from.tokenizer_path(str(run)) == str(run / 'tokenizer.json')

  only_latest = tmp_path / 'only_latest'
  _save_run(only_latest, mlm_params, [(3, 'checkpoints', 1.0)])
  np.testing.assert_allclose(init_from.pretrained_params(str(only_latest))['mlm_bias'],
                             mlm_params['mlm_bias'])
  with pytest.raises(MissingDataError, match='not a jmed run directory'):
    init_from.pretrained_params(str(tmp_path))
