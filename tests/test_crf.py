"""jmed.models.crf against brute force over all tag paths."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmed.models import crf

T, L = 3, 4
LENGTHS = np.array([4, 2, 1, 0, 3])
# jitted once per shape: far fewer compilations than eager calls (each eager scan compiles).
SCORE, LOGZ = jax.jit(crf.sequence_score), jax.jit(crf.log_partition)
LL, VITERBI = jax.jit(crf.log_likelihood), jax.jit(crf.viterbi)


def _problem(seed=0):
  """Random emissions [b, L, T], tags [b, L] (-1 on padding), mask [b, L] and CRF scores."""
  rng = np.random.default_rng(seed)
  b = len(LENGTHS)
  mask = np.arange(L)[None] < LENGTHS[:, None]
  emissions = rng.normal(size=(b, L, T)).astype(np.float32)
  tags = np.where(mask, rng.integers(0, T, (b, L)), -1).astype(np.int32)
  scores = {'transitions': rng.normal(size=(T, T)).astype(np.float32),
            'start': rng.normal(size=T).astype(np.float32),
            'end': rng.normal(size=T).astype(np.float32)}
  return emissions, tags, mask, scores


def _path_score(emissions, path, scores):
  """Score of one path over the first len(path) tokens of emissions [L, T]."""
  if not path:
    return 0.0
  total = scores['start'][path[0]] + scores['end'][path[-1]]
  total += sum(emissions[t, y] for t, y in enumerate(path))
  total += sum(scores['transitions'][a, b] for a, b in zip(path[:-1], path[1:]))
  return float(total)


def _all_paths(emissions, n, scores):
  """{path: score} over all T^n paths."""
  return {p: _path_score(emissions, p, scores) for p in itertools.product(range(T), repeat=n)}


def test_sequence_score_matches_direct_sum():
  emissions, tags, mask, scores = _problem()
  got = np.asarray(SCORE(emissions, tags, mask, **scores))
  want = [_path_score(e, tuple(t[:n]), scores) for e, t, n in zip(emissions, tags, LENGTHS)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_log_partition_matches_brute_force():
  emissions, _, mask, scores = _problem()
  got = np.asarray(LOGZ(emissions, mask, **scores))
  want = []
  for e, n in zip(emissions, LENGTHS):
    paths = np.array(list(_all_paths(e, n, scores).values()))
    want.append(np.log(np.exp(paths).sum()) if n else 0.0)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert got[LENGTHS == 0][0] == 0


def test_viterbi_matches_brute_force():
  for seed in range(3):
    emissions, _, mask, scores = _problem(seed)
    tags, score = VITERBI(emissions, mask, **scores)
    assert tags.dtype == jnp.int32 and tags.shape == (len(LENGTHS), L)
    for row, (e, n) in enumerate(zip(emissions, LENGTHS)):
      paths = _all_paths(e, n, scores)
      best = max(paths, key=paths.get) if n else ()
      assert tuple(np.asarray(tags[row, :n])) == best
      assert (np.asarray(tags[row, n:]) == -1).all()
      np.testing.assert_allclose(score[row], paths[best] if n else 0.0, rtol=1e-5, atol=1e-5)


def test_padding_changes_nothing():
  emissions, tags, mask, scores = _problem()
  rng = np.random.default_rng(7)
  noisy_e = np.where(mask[..., None], emissions, 100 * rng.normal(size=emissions.shape))
  noisy_t = np.where(mask, tags, rng.integers(-1, T, tags.shape)).astype(np.int32)
  for fn, a, b in [(LL, (emissions, tags), (noisy_e, noisy_t))]:
    np.testing.assert_allclose(fn(*a, mask, **scores), fn(*b, mask, **scores), rtol=1e-6)
  np.testing.assert_allclose(LOGZ(emissions, mask, **scores),
                             LOGZ(noisy_e, mask, **scores), rtol=1e-6)
  got, want = VITERBI(noisy_e, mask, **scores), VITERBI(emissions, mask, **scores)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_allclose(got[1], want[1], rtol=1e-6)


def test_gradients_finite_and_bf16():
  emissions, tags, mask, scores = _problem()

  @jax.jit
  def loss(emissions, scores):
    return -crf.log_likelihood(emissions, tags, mask, **scores).mean()

  value, grads = jax.value_and_grad(loss, argnums=(0, 1))(jnp.asarray(emissions), scores)
  assert np.isfinite(value) and value > 0
  for g in jax.tree_util.tree_leaves(grads):
    assert np.isfinite(np.asarray(g)).all()
  assert not np.asarray(grads[0])[~mask].any()  # padding gets no gradient
  ll = LL(emissions, tags, mask, **scores)
  np.testing.assert_allclose(ll, SCORE(emissions, tags, mask, **scores)
                             - LOGZ(emissions, mask, **scores), rtol=1e-6)
  assert (np.asarray(ll) <= 1e-6).all()
  half = LOGZ(jnp.asarray(emissions, jnp.bfloat16), mask, **scores)
  assert half.dtype == jnp.float32


def test_module_and_constraints():
  tags = ('O', 'B-Disease', 'I-Disease')
  module = crf.CRF(num_tags=3, tags=tags)
  params = module.init(jax.random.key(0))
  assert set(params['params']) == {'transitions', 'start', 'end'}
  scores = module.apply(params)
  assert scores['transitions'].shape == (3, 3) and scores['start'].dtype == jnp.float32
  assert scores['transitions'][0, 2] == crf.PENALTY and scores['start'][2] == crf.PENALTY
  assert scores['transitions'][1, 2] == 0 and scores['transitions'][2, 2] == 0
  # Emissions preferring O, I-X: decoding must not produce I after O nor start with I.
  emissions = np.log(np.array([[[0.1, 0.1, 0.8], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]], np.float32))
  path, _ = VITERBI(emissions, np.ones((1, 3), bool), **scores)
  names = [tags[i] for i in np.asarray(path[0])]
  for a, b in zip(['O'] + names, names):
    assert not (b.startswith('I-') and a == 'O'), names
  iobes = ('O', 'B-X', 'E-X', 'I-X', 'S-X')
  allowed = crf.allowed_transitions(iobes)
  assert allowed[1, 3] and allowed[1, 2] and not allowed[1, 0] and not allowed[0, 2]
  assert allowed[2, 4] and not allowed[4, 3]
  np.testing.assert_array_equal(crf.allowed_ends(iobes), [True, False, True, False, True])
  with pytest.raises(ValueError, match='num_tags'):
    crf.CRF(num_tags=2, tags=tags).init(jax.random.key(0))
