"""Metrics of estimated treatment effects, on the host (NumPy).

With both potential outcomes known, which only simulated or semi-simulated data gives (IHDP's
mu0 and mu1), an estimate of the individual effects tau(x) = E[Y(1) - Y(0) | x] is scored
directly:

  * `pehe`: sqrt(PEHE), the root mean squared error of the individual effects (Hill 2011);
  * `ate_error`: |mean estimated effect - mean true effect|, the average treatment effect's error.

A real observational file never shows a unit's counterfactual outcome, so PEHE and the ATE
error cannot be computed from it. What factual data does support:

  * `policy_risk`: Shalit et al. (2017)'s policy risk: the policy treats a unit when its
    estimated effect is positive, and its value is estimated from the units whose actual
    treatment agrees with the policy; risk = 1 - value (for outcomes where higher is better,
    scaled to [0, 1] as in their Jobs experiment).
  * `qini`: the area between the uplift (Qini) curve of the units ranked by estimated effect and
    the random ranking's diagonal (Radcliffe 2007), normalised by the number of units and the
    overall uplift scale.

Both are unbiased only when treatment is randomised (or as good as random given the ranking);
on confounded observational data they are a heuristic view, not a guarantee.
"""

import math
from typing import Sequence, Tuple

import numpy as np


def pehe(effect_hat, effect_true) -> float:
  """sqrt(PEHE) = sqrt(mean((tau_hat - tau)^2)) over units [n]; needs the true individual
  effects tau = mu1 - mu0, known only for simulated data."""
  effect_hat, effect_true = _vectors(effect_hat, effect_true)
  return float(np.sqrt(np.mean(np.square(effect_hat - effect_true))))


def ate_error(effect_hat, effect_true) -> float:
  """|mean(tau_hat) - mean(tau)| over units [n]; needs the true effects (simulated data)."""
  effect_hat, effect_true = _vectors(effect_hat, effect_true)
  return float(abs(effect_hat.mean() - effect_true.mean()))


def policy_risk(effect_hat, treatment, outcome) -> float:
  """Shalit et al. (2017, section 5)'s policy risk of the policy "treat when tau_hat > 0".

  The policy's value is estimated from the factual outcomes of the units whose treatment agrees
  with the policy: value = p * E[Y | t = 1, policy = 1] + (1 - p) * E[Y | t = 0, policy = 0],
  p the share of units the policy treats; an empty group contributes 0. Outcomes are scaled to
  [0, 1] by their min and max over the units (binary outcomes stay as they are), so
  risk = 1 - value lies in [0, 1]; lower is better. Unbiased for randomised treatment.

  Args:
    effect_hat: estimated effects [n] (higher outcome = better).
    treatment: actual treatment [n], 1 or 0.
    outcome: factual outcomes [n].
  """
  effect_hat, treatment, outcome = _vectors(effect_hat, treatment, outcome)
  low, high = outcome.min(), outcome.max()
  y = (outcome - low) / (high - low) if high > low else np.zeros_like(outcome)
  policy = effect_hat > 0
  p = policy.mean()
  treat = policy & (treatment == 1)
  control = ~policy & (treatment == 0)
  value = (p * (y[treat].mean() if treat.any() else 0.0)
           + (1 - p) * (y[control].mean() if control.any() else 0.0))
  return float(1 - value)


def qini_curve(effect_hat, treatment, outcome) -> Tuple[np.ndarray, np.ndarray]:
  """(fraction of units targeted [n + 1], cumulative uplift [n + 1]) with units ranked by
  decreasing estimated effect: uplift(k) = Y_t(k) - Y_c(k) N_t(k) / N_c(k), the sums of
  outcomes and counts of the treated and control units among the top k (Radcliffe 2007)."""
  effect_hat, treatment, outcome = _vectors(effect_hat, treatment, outcome)
  order = np.argsort(-effect_hat, kind='stable')
  t, y = treatment[order], outcome[order]
  n_t, n_c = np.cumsum(t), np.cumsum(1 - t)
  y_t, y_c = np.cumsum(y * t), np.cumsum(y * (1 - t))
  uplift = y_t - y_c * n_t / np.maximum(n_c, 1)
  zero = np.zeros(1)
  return np.arange(len(t) + 1) / len(t), np.concatenate([zero, uplift])


def qini(effect_hat, treatment, outcome) -> float:
  """The Qini coefficient: the area between the Qini curve (`qini_curve`) and the random
  ranking's straight line to the same end point, divided by n * (the overall uplift scale,
  |mean treated outcome - mean control outcome| or, when that is 0, the outcome's standard
  deviation). Higher is better; 0 is a random ranking. Unbiased for randomised treatment."""
  effect_hat, treatment, outcome = _vectors(effect_hat, treatment, outcome)
  fraction, uplift = qini_curve(effect_hat, treatment, outcome)
  random = fraction * uplift[-1]
  area = np.trapezoid(uplift - random, fraction)
  scale = (abs(outcome[treatment == 1].mean() - outcome[treatment == 0].mean())
           if (treatment == 1).any() and (treatment == 0).any() else 0.0)
  scale = scale or outcome.std() or 1.0
  return float(area / (len(outcome) * scale))


def summarize(values: Sequence[float]) -> Tuple[float, float]:
  """(mean, standard error = sample std / sqrt(count)) of per-replication values; the standard
  error is 0 for one value, NaN for none."""
  values = np.asarray(values, np.float64).reshape(-1)
  if values.size == 0:
    return math.nan, math.nan
  if values.size == 1:
    return float(values[0]), 0.0
  return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def _vectors(*arrays):
  arrays = [np.asarray(a, np.float64).reshape(-1) for a in arrays]
  if len({a.size for a in arrays}) != 1:
    raise ValueError(f'arrays of different lengths: {[a.size for a in arrays]}.')
  return arrays
