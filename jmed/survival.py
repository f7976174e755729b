"""Survival analysis: Cox partial likelihood, Harrell's C, discrete time.

Conventions:
  * `risk` is a log-hazard score: higher means worse (earlier expected event),
    as a DeepSurv network outputs.
  * `time` is the observed time (event or censoring), `event` is 1 for an
    observed event and 0 for a censored subject.
  * `mask` (optional, in the jit-able losses) is 1 for real examples and 0 for
    padding; padding rows are in no risk set and contribute nothing.

Cox model (DeepSurv, Katzman et al., BMC Med Res Methodol 18:24, 2018): the
negative log partial likelihood with Breslow's handling of ties, i.e. the risk
set of subject i is every j with `time_j >= time_i`, so events tied in time
share one denominator. `cox_loss` (JAX, per batch) and `breslow_nll_numpy`
(float64 NumPy, for a whole split on the host) compute the same quantity,
averaged over events.

Harrell's C (`concordance_index`) follows `lifelines.utils.concordance_index(
time, -risk, event)` exactly: a pair (i, j) is comparable when i has an event
and either `time_i < time_j`, or `time_i == time_j` and j is censored (two
events at the same time are not comparable); it is concordant when
`risk_i > risk_j`, and a tie in risk counts 0.5. It runs in O(n log^2 n).

Discrete-time survival (logistic hazard: Gensheimer & Narasimhan, PeerJ 7:e6257,
2019; pycox's `LogisticHazard`): time is cut into `num_intervals` intervals
(`make_cuts`, `interval_index`); a network (e.g. `jmed.models.DiscreteTimeHead`) outputs one
hazard logit per interval, trained with `discrete_time_nll`; `survival_curve`
and `discrete_risk` turn logits into S(t_k) and a risk score for
`concordance_index`.
"""

from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np

# ---------------------------------------------------------------------------
# Cox partial likelihood.
# ---------------------------------------------------------------------------


def cox_terms(risk, time, event, mask=None) -> jax.Array:
  """Per-example terms of the Cox negative log partial likelihood (Breslow).

  Jit-able. Term i is `event_i * (log sum_{j: time_j >= time_i, mask_j}
  exp(risk_j) - risk_i)`, 0 for censored and padding rows. Uses a pairwise
  `[batch, batch]` risk-set mask and a masked log-sum-exp that is stable and has
  finite gradients (zero for padding rows), also when there is no event.

  Args:
    risk: `[batch]` log-hazard scores (higher = worse).
    time: `[batch]` observed times.
    event: `[batch]` 1 for an event, 0 for censored (any dtype; nonzero = 1).
    mask: optional `[batch]`, 1 for real rows, 0 for padding.

  Returns:
    `[batch]` terms, float32 (or float64 if `risk` is float64).
  """
  risk = jnp.asarray(risk)
  risk = risk.astype(jnp.promote_types(risk.dtype, jnp.float32))
  time = jnp.asarray(time)
  real = (jnp.ones(risk.shape, bool) if mask is None
          else jnp.asarray(mask) != 0)
  _check_1d(risk, time, event, real)
  has_event = (jnp.asarray(event) != 0) & real
  # at_risk[i, j]: j is in the risk set of i.
  at_risk = (time[None, :] >= time[:, None]) & real[None, :]
  any_at_risk = at_risk.any(axis=1)
  # Stable masked log-sum-exp; the double `where` keeps masked entries' (and
  # empty rows') gradients exactly zero instead of 0 * inf = NaN.
  peak = jnp.max(jnp.where(at_risk, risk[None, :], -jnp.inf), axis=1)
  peak = jax.lax.stop_gradient(jnp.where(any_at_risk, peak, 0.0))
  shifted = jnp.where(at_risk, risk[None, :] - peak[:, None], 0.0)
  total = jnp.sum(jnp.where(at_risk, jnp.exp(shifted), 0.0), axis=1)
  log_total = jnp.log(jnp.where(any_at_risk, total, 1.0)) + peak
  return jnp.where(has_event, log_total - jnp.where(has_event, risk, 0.0), 0.0)


def cox_loss(risk, time, event, mask=None) -> jax.Array:
  """DeepSurv's loss: Cox negative log partial likelihood averaged over events.

  Jit-able. `sum(cox_terms(...)) / max(number of unmasked events, 1)`.

  Args:
    risk: `[batch]` log-hazard scores (higher = worse).
    time: `[batch]` observed times.
    event: `[batch]` 1 for an event, 0 for censored.
    mask: optional `[batch]`, 1 for real rows, 0 for padding.

  Returns:
    Scalar loss (0 when the batch has no event).
  """
  terms = cox_terms(risk, time, event, mask)
  has_event = jnp.asarray(event) != 0
  if mask is not None:
    has_event &= jnp.asarray(mask) != 0
  return jnp.sum(terms) / jnp.maximum(jnp.sum(has_event), 1).astype(terms.dtype)


def breslow_nll_numpy(risk, time, event) -> float:
  """`cox_loss` for a whole split on the host, in float64 NumPy, O(n log n).

  Args:
    risk: `[n]` log-hazard scores (higher = worse).
    time: `[n]` observed times.
    event: `[n]` 1 for an event, 0 for censored.

  Returns:
    Negative log partial likelihood (Breslow ties) divided by
    `max(number of events, 1)`.

  Raises:
    ValueError: shapes differ, or a NaN/infinite risk or time.
  """
  risk, time, has_event = _host_inputs(risk, time, event, allow_inf_risk=False)
  order = np.argsort(time, kind='stable')
  sorted_time, sorted_risk = time[order], risk[order]
  # suffix_lse[k] = log sum_{m >= k} exp(sorted_risk[m]).
  suffix_lse = np.logaddexp.accumulate(sorted_risk[::-1])[::-1]
  first = np.searchsorted(sorted_time, time[has_event], side='left')
  terms = suffix_lse[first] - risk[has_event]
  return float(terms.sum() / max(int(has_event.sum()), 1))


def breslow_baseline(risk, time, event, quantiles=(0.25, 0.5, 0.75)) -> Dict[str, Any]:
  """Breslow's estimate of a Cox model's baseline cumulative hazard.

  H0(t) = sum over event times t_j <= t of d_j / sum_{i: t_i >= t_j} exp(risk_i), d_j the events
  at t_j.

  Args:
    risk: `[n]` log-risk scores of the training split.
    time, event: `[n]` its times and events (1 event, 0 censored).
    quantiles: of the event times, where `survival_probability` is usually read.

  Returns:
    {'times': the distinct event times ascending, 'cumulative_hazard': H0 there,
     'report_times': the event times' `quantiles`}, as lists (JSON-able).
  """
  risk, time, has_event = _host_inputs(risk, time, event, allow_inf_risk=False)
  order = np.argsort(time, kind='stable')
  sorted_time = time[order]
  # at_risk[k] = sum_{m >= k} exp(risk) over the time-sorted examples.
  at_risk = np.cumsum(np.exp(risk[order] - risk.max())[::-1])[::-1] * np.exp(risk.max())
  times = np.unique(time[has_event])
  events = np.array([np.sum(has_event & (time == t)) for t in times], np.float64)
  first = np.searchsorted(sorted_time, times, side='left')
  hazard = np.cumsum(events / at_risk[first])
  report = np.quantile(time[has_event], quantiles) if has_event.any() else np.array([])
  return {'times': times.tolist(), 'cumulative_hazard': hazard.tolist(),
          'report_times': [float(t) for t in report]}


def survival_probability(risk, baseline: Dict[str, Any], times) -> np.ndarray:
  """S(t | x) = exp(-H0(t) exp(risk)) of each example at each of `times`: `[len(times), n]`.

  H0 is the step function of `breslow_baseline` (0 before the first event time)."""
  risk = np.asarray(risk, np.float64).reshape(-1)
  steps = np.asarray(baseline['times'], np.float64)
  hazard = np.asarray(baseline['cumulative_hazard'], np.float64)
  index = np.searchsorted(steps, np.asarray(times, np.float64), side='right') - 1
  h0 = np.where(index >= 0, hazard[np.maximum(index, 0)], 0.0)
  return np.exp(-h0[:, None] * np.exp(risk)[None, :])


# ---------------------------------------------------------------------------
# Harrell's concordance index.
# ---------------------------------------------------------------------------


def concordance_index(time, risk, event) -> float:
  """Harrell's C of a risk score; equals lifelines' `concordance_index`.

  Exactly `lifelines.utils.concordance_index(time, -risk, event)`.

  Comparable pairs (i, j): i has an event and `time_i < time_j`, or
  `time_i == time_j` and j is censored. Concordant: `risk_i > risk_j`; a tie in
  risk (exact float equality) counts 0.5. O(n log^2 n) time, O(n) memory.

  Args:
    time: `[n]` observed times.
    risk: `[n]` risk scores (higher = worse), e.g. a Cox log-hazard.
    event: `[n]` 1 for an event, 0 for censored.

  Returns:
    C in [0, 1]; 0.5 for a random (or constant) score.

  Raises:
    ValueError: shapes differ, a NaN in any input, or no comparable pair
      (e.g. no event).
  """
  risk, time, has_event = _host_inputs(risk, time, event, allow_inf_risk=True)
  n = time.shape[0]
  if n < 2:
    raise ValueError(f'concordance_index: no comparable pairs among {n} '
                     'subjects.')
  # Sort by (time, censored after events at the same time, risk); `key` ranks
  # (time, censored) so that the pairs comparable with an event i are exactly
  # the j with key_j > key_i.
  censored = (~has_event).astype(np.int64)
  order = np.lexsort((risk, censored, time))
  time, risk, censored, has_event = (time[order], risk[order], censored[order],
                                     has_event[order])
  new_key = np.ones(n, bool)
  new_key[1:] = (time[1:] != time[:-1]) | (censored[1:] != censored[:-1])
  key = np.cumsum(new_key) - 1
  _, rank = np.unique(risk, return_inverse=True)
  rank = rank.reshape(-1).astype(np.int64)
  # Later positions have a larger key, or the same key and a risk at least as
  # high, so "later and lower risk" = "larger key and lower risk".
  lower = _later_smaller(rank)
  num_keys = int(key[-1]) + 1
  combined = np.sort(rank * num_keys + key)  # Ordered by (risk, key).
  tied = (np.searchsorted(combined, rank * num_keys + num_keys, side='left') -
          np.searchsorted(combined, rank * num_keys + key, side='right'))
  pairs = n - np.searchsorted(key, key, side='right')
  num_pairs = int(pairs[has_event].sum())
  if num_pairs == 0:
    raise ValueError('concordance_index: no comparable pairs (needs an event '
                     'before a later time, or tied with a censored time); got '
                     f'{int(has_event.sum())} events among {n} subjects.')
  correct = int(lower[has_event].sum())
  ties = int(tied[has_event].sum())
  return (correct + ties / 2) / num_pairs


def _later_smaller(values: np.ndarray) -> np.ndarray:
  """`out[p] = #{q > p: values[q] < values[p]}` for non-negative int `[n]`.

  Bottom-up merge-sort counting, each level vectorised with `searchsorted`:
  every pair p < q is split between a left and a right sibling block at
  exactly one level.
  """
  n = values.shape[0]
  span = int(values.max()) + 1 if n else 1
  counts = np.zeros(n, np.int64)
  position = np.arange(n)
  size = 1
  while size < n:
    block = position // size
    right = (block % 2) == 1
    pair = block // 2
    right_keys = np.sort(pair[right] * span + values[right])
    left = ~right
    base = pair[left] * span
    counts[left] += (np.searchsorted(right_keys, base + values[left], 'left') -
                     np.searchsorted(right_keys, base, 'left'))
    size *= 2
  return counts


def survival_metrics(risk, time, event) -> Dict[str, Any]:
  """Harrell's C, the Cox loss (float64) and the event count of a split.

  Args:
    risk: `[n]` log-hazard scores (higher = worse).
    time: `[n]` observed times.
    event: `[n]` 1 for an event, 0 for censored.

  Returns:
    {'c_index': float, 'loss': `breslow_nll_numpy(...)`, 'events': int}.

  Raises:
    ValueError: as `concordance_index` (e.g. no comparable pair).
  """
  _, _, has_event = _host_inputs(risk, time, event, allow_inf_risk=True)
  return {'c_index': concordance_index(time, risk, event),
          'loss': breslow_nll_numpy(risk, time, event),
          'events': int(has_event.sum())}


def _host_inputs(risk, time, event, allow_inf_risk: bool):
  """float64 risk, float64 time, bool event, all `[n]`; validated."""
  risk = np.asarray(risk, np.float64)
  time = np.asarray(time, np.float64)
  event = np.asarray(event, np.float64)
  if not (risk.ndim == time.ndim == event.ndim == 1 and
          risk.shape == time.shape == event.shape):
    raise ValueError('risk, time and event must all be [n] with the same n; '
                     f'got shapes {risk.shape}, {time.shape}, {event.shape}.')
  for name, array in (('risk', risk), ('time', time), ('event', event)):
    if np.isnan(array).any():
      raise ValueError(f'{name} has {int(np.isnan(array).sum())} NaN values.')
  if not allow_inf_risk and np.isinf(risk).any():
    raise ValueError('risk has infinite values.')
  if np.isinf(time).any():
    raise ValueError('time has infinite values.')
  return risk, time, event != 0


def _check_1d(risk, time, event, mask) -> None:
  shapes = tuple(jnp.shape(a) for a in (risk, time, event, mask))
  if len(shapes[0]) != 1 or len(set(shapes)) != 1:
    raise ValueError('risk, time, event and mask must all be [batch]; got '
                     f'shapes {shapes}.')


# ---------------------------------------------------------------------------
# Discrete-time survival (logistic hazard).
# ---------------------------------------------------------------------------


def make_cuts(train_time, num_intervals: int) -> np.ndarray:
  """Interval boundaries at quantiles of the training times.

  Args:
    train_time: `[n]` observed (event or censoring) times of the train split.
    num_intervals: number of intervals.

  Returns:
    float32 `[num_intervals + 1]` strictly increasing cut points: 0, the
    `k / num_intervals` quantiles of `train_time` for k = 1 .. num_intervals-1,
    and `max(train_time)`. Interval l is `(cuts[l], cuts[l + 1]]`.

  Raises:
    ValueError: `num_intervals < 1`, empty/negative/non-finite times, or cut
      points that are not strictly increasing (too many intervals for the tied
      times: use fewer).
  """
  time = np.asarray(train_time, np.float64).reshape(-1)
  if num_intervals < 1:
    raise ValueError(f'num_intervals must be >= 1, got {num_intervals}.')
  if time.size == 0 or not np.isfinite(time).all() or (time < 0).any():
    raise ValueError('train_time must be non-empty, finite and >= 0.')
  cuts = np.quantile(time, np.linspace(0.0, 1.0, num_intervals + 1))
  cuts[0], cuts[-1] = 0.0, time.max()
  cuts = cuts.astype(np.float32)
  if not (np.diff(cuts) > 0).all():
    raise ValueError(f'{num_intervals} quantile intervals of train_time are '
                     f'not all of positive length (cuts {cuts}); use fewer.')
  return cuts


def interval_index(time, cuts) -> jax.Array:
  """Index of the interval `(cuts[l], cuts[l + 1]]` holding each time. Jit-able.

  Times `<= cuts[1]` (including 0) go to interval 0, times beyond the last cut
  to the last interval.

  Args:
    time: `[batch]` times.
    cuts: `[num_intervals + 1]` increasing cut points, e.g. `make_cuts(...)`.

  Returns:
    int32 `[batch]` in `[0, num_intervals)`.
  """
  cuts = jnp.asarray(cuts)
  index = jnp.searchsorted(cuts, jnp.asarray(time, cuts.dtype), side='left') - 1
  return jnp.clip(index, 0, cuts.shape[0] - 2).astype(jnp.int32)


def discrete_time_nll(logits, interval, event, mask=None) -> jax.Array:
  """Per-example negative log-likelihood of the logistic-hazard model. Jit-able.

  For subject i with interval `k_i`: the sum over `l <= k_i` of the binary
  cross-entropy of `sigmoid(logits[i, l])` against target 1 at `l == k_i` if
  i had an event and 0 otherwise (pycox's convention: a censored subject
  survives its own interval).

  Args:
    logits: `[batch, num_intervals]` hazard logits.
    interval: int `[batch]` interval index, e.g. `interval_index(time, cuts)`.
    event: `[batch]` 1 for an event, 0 for censored.
    mask: optional `[batch]`, 1 for real rows, 0 for padding (loss 0).

  Returns:
    float32 `[batch]` (take the mean over real rows for a batch loss).
  """
  logits = jnp.asarray(logits, jnp.float32)
  steps = jnp.arange(logits.shape[-1])
  interval = jnp.asarray(interval)[:, None]
  target = ((steps[None, :] == interval) &
            (jnp.asarray(event) != 0)[:, None]).astype(jnp.float32)
  bce = jax.nn.softplus(logits) - target * logits
  nll = jnp.sum(jnp.where(steps[None, :] <= interval, bce, 0.0), axis=-1)
  if mask is not None:
    nll = jnp.where(jnp.asarray(mask) != 0, nll, 0.0)
  return nll


def survival_curve(logits) -> jax.Array:
  """Survival `S(t_k) = prod_{l <= k} (1 - sigmoid(logits[:, l]))`.

  Args:
    logits: `[batch, num_intervals]` hazard logits.

  Returns:
    float32 `[batch, num_intervals]`, non-increasing in k, in [0, 1].
  """
  logits = jnp.asarray(logits, jnp.float32)
  return jnp.exp(jnp.cumsum(jax.nn.log_sigmoid(-logits), axis=-1))


def discrete_risk(logits) -> jax.Array:
  """`-sum_k S(t_k)`, `[batch]`: minus the restricted mean survival.

  The restricted mean survival is in interval units (each interval counts 1).

  Higher = worse, so it can be passed to `concordance_index` as the risk.
  """
  return -jnp.sum(survival_curve(logits), axis=-1)
