"""IPM penalties of CFR (jmed.causal.ipm) against NumPy references.

Every call has one signature (16 units, 3 dimensions, explicit weights), so each penalty and
its gradient compile once.
"""

import functools

import jax
import numpy as np
import pytest

from jmed.causal import ipm

PENALTIES = {
    'wasserstein': jax.jit(ipm.sinkhorn_wasserstein),
    'mmd': jax.jit(ipm.mmd),
    'mmd_rbf': jax.jit(functools.partial(ipm.mmd, kernel='rbf')),
}
GRADS = {name: jax.jit(jax.value_and_grad(fn)) for name, fn in PENALTIES.items()}
ONES = np.ones(16, np.float32)


def _samples(seed=0):
  """16 units in 3 dimensions: 12 real (4 treated, 8 control), then 4 far-off padding rows."""
  rng = np.random.default_rng(seed)
  rep = rng.normal(size=(16, 3)).astype(np.float32)
  rep[12:] *= 100
  treated = np.r_[np.arange(12) % 3 == 0, [1, 0, 1, 0]].astype(np.float32)
  valid = np.r_[np.ones(12), np.zeros(4)].astype(np.float32)
  return rep, treated, valid


def _numpy_sinkhorn(xt, xc, epsilon=0.1, iterations=50):
  """Plain (not log-space) Sinkhorn scaling in float64 with uniform marginals; <P, C>."""
  xt, xc = np.float64(xt), np.float64(xc)
  cost = np.sqrt(np.maximum(((xt[:, None] - xc[None]) ** 2).sum(-1), 1e-10))
  a, b = np.full(len(xt), 1 / len(xt)), np.full(len(xc), 1 / len(xc))
  kernel = np.exp(-cost / (epsilon * a @ cost @ b))
  v = np.ones(len(xc))
  for _ in range(iterations):
    u = a / (kernel @ v)
    v = b / (kernel.T @ u)
  u = a / (kernel @ v)
  return ((u[:, None] * kernel * v[None]) * cost).sum()


def _numpy_mmd(xt, xc, kernel):
  xt, xc = np.float64(xt), np.float64(xc)
  if kernel == 'mmd':
    return np.square(xt.mean(0) - xc.mean(0)).sum()
  k = lambda x, y: np.exp(-((x[:, None] - y[None]) ** 2).sum(-1) / 2)
  return k(xt, xt).mean() + k(xc, xc).mean() - 2 * k(xt, xc).mean()


def test_penalties_match_numpy_references_and_ignore_padding():
  rep, treated, valid = _samples()
  real = valid == 1
  xt, xc = rep[real & (treated == 1)], rep[real & (treated == 0)]
  expected = {'wasserstein': _numpy_sinkhorn(xt, xc), 'mmd': _numpy_mmd(xt, xc, 'mmd'),
              'mmd_rbf': _numpy_mmd(xt, xc, 'rbf')}
  other = rep.copy()
  other[12:] = -other[12:]  # other padding values: nothing changes
  for name, penalty in PENALTIES.items():
    value = float(penalty(rep, treated, valid))
    np.testing.assert_allclose(value, expected[name], rtol=1e-4, err_msg=name)
    assert float(penalty(other, treated, valid)) == pytest.approx(value, rel=1e-6)
  p = 0.3  # CFRNet's mmd2_lin with p_treated
  np.testing.assert_allclose(float(ipm.mmd(rep, treated, valid, p_treated=p)),
                             np.square(2 * p * xt.mean(0) - 2 * (1 - p) * xc.mean(0)).sum(),
                             rtol=1e-5)
  with pytest.raises(ValueError, match='valid kernels: linear, rbf'):
    ipm.mmd(rep, treated, kernel='laplace')


def test_identical_samples_near_zero_and_growing_with_a_mean_shift():
  rep = _samples()[0][:8]
  both = np.concatenate([rep, rep])
  treated = np.r_[np.ones(8), np.zeros(8)].astype(np.float32)
  for name, penalty in PENALTIES.items():
    values = np.array([float(penalty(both + s * treated[:, None], treated, ONES))
                       for s in (0.0, 0.5, 1.0, 2.0, 4.0)])
    assert abs(values[0]) < 0.02 * values[2], (name, values)
    assert (np.diff(values) > 0).all(), (name, values)
    if name == 'wasserstein':  # W1 of a sample and its translate: the translation's length
      np.testing.assert_allclose(values[-1], 4.0 * np.sqrt(3), rtol=0.03)


def test_a_missing_arm_gives_zero_and_gradients_are_finite():
  rep, treated, _ = _samples()
  coincident = rep.copy()
  coincident[1] = coincident[0]  # a treated and a control unit at distance 0
  for name, value_and_grad in GRADS.items():
    for arm in (np.zeros(16, np.float32), np.ones(16, np.float32)):
      value, grad = value_and_grad(rep, arm, ONES)
      assert float(value) == 0.0 and np.isfinite(grad).all(), name
    value, grad = value_and_grad(coincident, treated, ONES)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0, name
  through_plan = jax.jit(jax.grad(functools.partial(ipm.sinkhorn_wasserstein,
                                                    differentiate_plan=True)))
  grad = through_plan(coincident, treated, ONES)
  assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
