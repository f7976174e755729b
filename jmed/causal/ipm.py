"""Integral probability metrics between treated and control representations (CFR).

Counterfactual regression (Shalit, Johansson and Sontag, ICML 2017) adds to the factual loss a
distance between the distributions of the representation Phi(x) of treated and of control
units, which bounds the error on the counterfactual outcomes. Two penalties, both jit-able and
differentiable, over one batch [batch, d]:

  * `mmd`: the maximum mean discrepancy, squared: with the linear kernel the squared distance of
    the two (weighted) means (CFRNet's `mmd2_lin`); with an RBF kernel the biased (V-statistic)
    estimate of MMD^2 (Gretton et al. 2012).
  * `sinkhorn_wasserstein`: the entropic optimal-transport cost between the treated and the
    control samples (Cuturi 2013), solved by a fixed number of Sinkhorn iterations in log space
    (no under- or overflow of exp(-cost / epsilon)), as CFRNet's `wasserstein`.

Each unit counts with its weight (`weights`: 1 a real example, 0 padding, so padded rows change
nothing), uniform within each group. A batch without a treated or without a control unit has no
distance to measure: the penalty is 0 (with finite gradients).
"""

from typing import Optional

import jax
import jax.numpy as jnp

KERNELS = ('linear', 'rbf')


def group_weights(treated, weights=None):
  """(a, b, both): the treated units' and the control units' distribution over the batch [batch]
  (each sums to 1) and whether the batch has both groups.

  Without both groups, a and b are uniform over the batch (finite placeholders: every penalty
  is then multiplied by `both`).
  """
  treated = jnp.asarray(treated, jnp.float32)
  weights = jnp.ones_like(treated) if weights is None else jnp.asarray(weights, jnp.float32)
  wt, wc = weights * treated, weights * (1 - treated)
  st, sc = wt.sum(), wc.sum()
  both = (st > 0) & (sc > 0)
  uniform = jnp.full_like(treated, 1 / treated.shape[0])
  a = jnp.where(both, wt / jnp.where(st > 0, st, 1), uniform)
  b = jnp.where(both, wc / jnp.where(sc > 0, sc, 1), uniform)
  return a, b, both


def squared_distances(x, y):
  """Pairwise squared Euclidean distances [n, m] of x [n, d] and y [m, d] (>= 0)."""
  d2 = (jnp.square(x).sum(-1)[:, None] + jnp.square(y).sum(-1)[None, :] - 2 * x @ y.T)
  return jnp.maximum(d2, 0.0)


def mmd(rep, treated, weights=None, kernel: str = 'linear', bandwidth: float = 1.0,
        p_treated: Optional[float] = None):
  """The squared maximum mean discrepancy between treated and control representations.

  Args:
    rep: representations [batch, d].
    treated: [batch] 1 treated, 0 control.
    weights: [batch] per-unit weights (1 real, 0 padding); None: all 1.
    kernel: 'linear': ||2 p m_t - 2 (1 - p) m_c||^2 of the weighted group means m_t, m_c
      (CFRNet's `mmd2_lin`; with p = 0.5, the default, the squared distance of the means);
      'rbf': the biased estimate a'K_tt a + b'K_cc b - 2 a'K_tc b with
      k(x, y) = exp(-||x - y||^2 / (2 bandwidth^2)).
    bandwidth: the RBF kernel's length scale.
    p_treated: the linear kernel's p (e.g. the share of treated units); None: 0.5.

  Returns:
    A float32 scalar >= 0; 0 when the batch lacks either group.
  """
  if kernel not in KERNELS:
    raise ValueError(f'Unknown MMD kernel {kernel!r}; valid kernels: {", ".join(KERNELS)}.')
  rep = jnp.asarray(rep, jnp.float32)
  a, b, both = group_weights(treated, weights)
  if kernel == 'linear':
    p = 0.5 if p_treated is None else p_treated
    value = jnp.square(2 * p * (a @ rep) - 2 * (1 - p) * (b @ rep)).sum()
  else:
    gram = jnp.exp(-squared_distances(rep, rep) / (2 * bandwidth ** 2))
    value = a @ gram @ a + b @ gram @ b - 2 * a @ gram @ b
    value = jnp.maximum(value, 0.0)  # rounding
  return jnp.where(both, value, 0.0)


def sinkhorn_wasserstein(rep, treated, weights=None, epsilon: float = 0.1,
                         iterations: int = 50, differentiate_plan: bool = False):
  """The entropic Wasserstein-1 distance between treated and control representations.

  Costs are Euclidean distances C_ij = ||Phi_i - Phi_j|| between treated unit i and control
  unit j; the plan P solves min <P, C> - eps H(P) subject to P 1 = a, P'1 = b (the two groups'
  weights, `group_weights`) by `iterations` Sinkhorn updates of the dual potentials in log
  space. The regularisation is relative, eps = `epsilon` * (the mean treated-control cost), as
  CFRNet's lambda = 1 / `epsilon` (its default 10). The returned distance is <P, C>.

  Args:
    rep: representations [batch, d].
    treated: [batch] 1 treated, 0 control.
    weights: [batch] per-unit weights (1 real, 0 padding); None: all 1.
    epsilon: entropic regularisation relative to the mean cost (smaller: closer to the exact
      transport cost, slower to converge).
    iterations: Sinkhorn iterations (fixed, so the penalty compiles to one loop).
    differentiate_plan: also differentiate through the iterations; False (CFRNet's default)
      treats the plan as a constant, which at convergence is the exact gradient of the
      regularised cost (the envelope theorem) and cheaper.

  Returns:
    A float32 scalar >= 0; 0 when the batch lacks either group.
  """
  rep = jnp.asarray(rep, jnp.float32)
  a, b, both = group_weights(treated, weights)
  # Safe sqrt: the gradient of ||x - y|| at x == y is bounded.
  cost = jnp.sqrt(jnp.maximum(squared_distances(rep, rep), 1e-10))
  eps = jax.lax.stop_gradient(epsilon * (a @ cost @ b) + 1e-12)
  log_a = jnp.where(a > 0, jnp.log(jnp.where(a > 0, a, 1.0)), -jnp.inf)
  log_b = jnp.where(b > 0, jnp.log(jnp.where(b > 0, b, 1.0)), -jnp.inf)
  scaled = (cost if differentiate_plan else jax.lax.stop_gradient(cost)) / eps

  def update(log_v, _):
    # log u_i = log a_i - LSE_j(log v_j - C_ij / eps), then v from u likewise.
    log_u = log_a - jax.nn.logsumexp(log_v[None, :] - scaled, axis=1)
    log_v = log_b - jax.nn.logsumexp(log_u[:, None] - scaled, axis=0)
    return log_v, None

  log_v, _ = jax.lax.scan(update, jnp.zeros_like(log_b), None, length=iterations)
  log_u = log_a - jax.nn.logsumexp(log_v[None, :] - scaled, axis=1)
  plan = jnp.exp(log_u[:, None] + log_v[None, :] - scaled)  # rows treated, columns control
  if not differentiate_plan:
    plan = jax.lax.stop_gradient(plan)
  return jnp.where(both, (plan * cost).sum(), 0.0)
