"""Treatment-effect estimation: both potential outcomes of a binary treatment, per unit.

Labels are float32 [n, 4]: (treatment 1 / 0, the factual outcome, mu0, mu1), mu0 and mu1 the
noiseless potential outcomes where a simulation knows them (IHDP), NaN where not (a real
observational file: both NaN). The model (`jmed.models.TARNet`, `jmed.models.Dragonnet`)
returns a dict with 'outcomes' [batch, 2] (y0, y1 on the standardised scale) and
'representation' [batch, d], and Dragonnet also 'propensity' (logit) and 'epsilon'.

The loss sees factual outcomes only (standardised by the training split's mean and std):

  mean_i w_i (y_i - q_{t_i}(x_i))^2                      factual MSE (TARNet)
  + ipm_weight * IPM(Phi | t = 1, Phi | t = 0)           CFR (Shalit et al. 2017)
  + propensity_weight * mean_i BCE(g(x_i), t_i)          Dragonnet (Shi et al. 2019)
  + targeted_weight * mean_i (y_i - q_{t_i} - eps h_i)^2 targeted regularisation,
                                                         h = t / g - (1 - t) / (1 - g)

The IPM term couples the units of a batch: it spans the global batch (data parallel or not),
weighs padding 0, and DP-SGD does not apply (`per_example_loss` False). The Dragonnet terms
apply only when the model's outputs hold 'propensity' and 'epsilon'.

Metrics on a whole split: the factual RMSE (which picks the checkpoint: never a counterfactual
metric) and MAE; where every unit's mu0 and mu1 are known, sqrt(PEHE) and the ATE error; always
the policy risk and the Qini coefficient, which factual data supports (`jmed.causal.metrics`).
"""

import dataclasses
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jmed.causal import ipm as jipm
from jmed.causal import metrics as cmetrics
from jmed.errors import ConfigError, DataError
from jmed.tasks.base import Task

IPMS = ('none', 'mmd', 'mmd_rbf', 'wasserstein')
PROPENSITY_CLIP = 0.01  # g is clipped to [0.01, 0.99] in the targeted regulariser's h


@dataclasses.dataclass(frozen=True)
class TreatmentEffect(Task):
  """Potential outcomes of a binary treatment from factual outcomes (TARNet, CFR, Dragonnet).

  Attributes:
    ipm: the penalty between treated and control representations: 'none' (TARNet), 'mmd'
      (linear MMD^2, CFR-MMD), 'mmd_rbf' (RBF-kernel MMD^2) or 'wasserstein' (Sinkhorn,
      CFR-Wass).
    ipm_weight: its weight alpha.
    propensity_weight: the weight of Dragonnet's propensity cross-entropy.
    targeted_weight: the weight of Dragonnet's targeted regularisation (beta).
    reweight: weight each unit's factual loss by t / (2 p) + (1 - t) / (2 (1 - p)), p the
      training share of treated units (CFRNet's reweight_sample), so both arms count equally.
    outcome_mean, outcome_std: the training factual outcomes' mean and std (set by `fit_to`).
    p_treated: the training share of treated units (set by `fit_to`).
  """

  name = 'treatment_effect'
  metric_names = ('factual_rmse', 'factual_mae', 'pehe', 'ate_error', 'policy_risk', 'qini',
                  'ate', 'loss')
  default_metric = 'factual_rmse'
  minimized = frozenset({'loss', 'factual_rmse', 'factual_mae', 'pehe', 'ate_error',
                         'policy_risk'})
  per_example_loss = False
  label_dtype = np.float32
  column_roles = ('treatment', 'outcome', 'mu0', 'mu1')
  role_outputs = 2  # the two potential outcomes

  ipm: str = 'none'
  ipm_weight: float = 1.0
  propensity_weight: float = 1.0
  targeted_weight: float = 1.0
  reweight: bool = False
  outcome_mean: float = 0.0
  outcome_std: float = 1.0
  p_treated: float = 0.5

  def __post_init__(self):
    if self.ipm not in IPMS:
      raise ConfigError(f'task_kwargs: unknown ipm {self.ipm!r}; valid: {", ".join(IPMS)}.')

  # ---------------------------------------------------------------- labels (host)

  def label_shape(self, num_outputs, input_shape) -> Tuple[int, ...]:
    return (4,)

  def _check_values(self, labels, num_outputs, where) -> None:
    treatment, outcome, mu = labels[:, 0], labels[:, 1], labels[:, 2:]
    bad = ~np.isin(treatment, (0, 1))
    if bad.any():
      raise DataError(f'{where}: treatment must be 0 (control) or 1 (treated); row '
                      f'{int(np.argmax(bad))} holds {treatment[np.argmax(bad)]}.')
    bad = ~np.isfinite(outcome)
    if bad.any():
      raise DataError(f'{where}: the factual outcome must be a finite number; row '
                      f'{int(np.argmax(bad))} holds {outcome[np.argmax(bad)]}.')
    bad = np.isinf(mu).any(1) | (np.isnan(mu[:, 0]) != np.isnan(mu[:, 1]))
    if bad.any():
      raise DataError(f'{where}: the potential outcomes mu0, mu1 must both be finite or both '
                      f'missing (NaN); row {int(np.argmax(bad))} holds {mu[np.argmax(bad)]}.')

  def fit_to(self, train_labels) -> 'TreatmentEffect':
    """This task (its other fields kept) standardising outcomes by the training factual
    outcomes' mean and std, with the training share of treated units."""
    labels = np.asarray(train_labels, np.float64)
    std = labels[:, 1].std()
    return dataclasses.replace(self, outcome_mean=float(np.float32(labels[:, 1].mean())),
                               outcome_std=float(np.float32(std if std > 0 else 1.0)),
                               p_treated=float(np.float32(labels[:, 0].mean())))

  def summary(self) -> Dict:
    return {'outcome_scale': {'mean': self.outcome_mean, 'std': self.outcome_std},
            'p_treated': self.p_treated,
            'effect_loss': {'ipm': self.ipm, 'ipm_weight': self.ipm_weight,
                            'propensity_weight': self.propensity_weight,
                            'targeted_weight': self.targeted_weight,
                            'reweight': self.reweight}}

  # ---------------------------------------------------------------- on device (jit-able)

  def _factual(self, outputs, labels):
    """(treatment [batch], standardised outcome [batch], factual prediction q_t [batch])."""
    _check_model_outputs(outputs)
    treatment = labels[:, 0]
    y = (labels[:, 1] - self.outcome_mean) / self.outcome_std
    q = outputs['outcomes'].astype(jnp.float32)
    return treatment, y, jnp.where(treatment > 0.5, q[:, 1], q[:, 0])

  def penalty(self, outputs, labels, valid=None) -> jax.Array:
    """The IPM between the treated and control representations of the batch (a scalar; 0 for
    ipm 'none'), each unit weighted by `valid` [batch]."""
    rep, treatment = outputs['representation'], labels[:, 0]
    if self.ipm == 'mmd':
      return jipm.mmd(rep, treatment, valid)
    if self.ipm == 'mmd_rbf':
      return jipm.mmd(rep, treatment, valid, kernel='rbf')
    if self.ipm == 'wasserstein':
      return jipm.sinkhorn_wasserstein(rep, treatment, valid)
    return jnp.zeros((), jnp.float32)

  def loss(self, outputs, labels, valid=None):
    """Per-example terms [batch] whose mean over the batch is the objective (see the module
    docstring); the IPM (a batch-level term) is added to every example. `valid` [batch] (1
    real, 0 padding) weighs the units in the IPM."""
    treatment, y, q_t = self._factual(outputs, labels)
    losses = jnp.square(y - q_t)
    if self.reweight:
      p = min(max(self.p_treated, 1e-3), 1 - 1e-3)
      losses = losses * (treatment / (2 * p) + (1 - treatment) / (2 * (1 - p)))
    if self.ipm != 'none' and self.ipm_weight:
      losses = losses + self.ipm_weight * self.penalty(outputs, labels, valid)
    if 'propensity' in outputs and self.propensity_weight:
      logit = outputs['propensity'].astype(jnp.float32)
      losses = losses + self.propensity_weight * optax.sigmoid_binary_cross_entropy(
          logit, treatment)
    if 'propensity' in outputs and 'epsilon' in outputs and self.targeted_weight:
      g = jnp.clip(jax.nn.sigmoid(outputs['propensity'].astype(jnp.float32)),
                   PROPENSITY_CLIP, 1 - PROPENSITY_CLIP)
      h = treatment / g - (1 - treatment) / (1 - g)
      perturbed = q_t + outputs['epsilon'].astype(jnp.float32) * h
      losses = losses + self.targeted_weight * jnp.square(y - perturbed)
    return losses

  def train_metrics(self, outputs, labels) -> Dict[str, jax.Array]:
    """'factual_mse' (standardised scale) and, with an IPM, 'ipm' (the batch's, per example)."""
    _, y, q_t = self._factual(outputs, labels)
    metrics = {'factual_mse': jnp.square(y - q_t)}
    if self.ipm != 'none':
      metrics['ipm'] = jnp.broadcast_to(self.penalty(outputs, labels), y.shape)
    return metrics

  def predict(self, outputs):
    """(y0_hat, y1_hat, effect_hat) [batch, 3] in the outcome's units."""
    _check_model_outputs(outputs)
    q = outputs['outcomes'].astype(jnp.float32) * self.outcome_std + self.outcome_mean
    return jnp.stack([q[:, 0], q[:, 1], q[:, 1] - q[:, 0]], -1)

  # ---------------------------------------------------------------- on the host

  def prediction_table(self, predictions, names, baseline=None) -> Dict[str, np.ndarray]:
    """'predicted_y0', 'predicted_y1' (the potential outcomes) and 'predicted_effect'."""
    del names, baseline
    predictions = np.asarray(predictions)
    return {'predicted_y0': predictions[:, 0], 'predicted_y1': predictions[:, 1],
            'predicted_effect': predictions[:, 2]}

  def evaluate(self, predictions, labels) -> Dict:
    """'factual_rmse', 'factual_mae', 'policy_risk', 'qini' and 'ate' (the mean estimated
    effect) from factual data; 'pehe' (sqrt PEHE) and 'ate_error' when every unit's mu0 and
    mu1 are known (simulated data only)."""
    predictions = np.asarray(predictions, np.float64)
    labels = np.asarray(labels, np.float64)
    treatment, outcome = labels[:, 0], labels[:, 1]
    effect_hat = predictions[:, 2]
    factual = np.where(treatment == 1, predictions[:, 1], predictions[:, 0])
    out = {'factual_rmse': float(np.sqrt(np.mean(np.square(factual - outcome)))),
           'factual_mae': float(np.mean(np.abs(factual - outcome))),
           'policy_risk': cmetrics.policy_risk(effect_hat, treatment, outcome),
           'qini': cmetrics.qini(effect_hat, treatment, outcome),
           'ate': float(effect_hat.mean())}
    mu = labels[:, 2:]
    if len(mu) and np.isfinite(mu).all():
      effect_true = mu[:, 1] - mu[:, 0]
      out['pehe'] = cmetrics.pehe(effect_hat, effect_true)
      out['ate_error'] = cmetrics.ate_error(effect_hat, effect_true)
    return out


def _check_model_outputs(outputs) -> None:
  """Raises `ConfigError` unless `outputs` is a treatment-effect model's dict."""
  if not (isinstance(outputs, dict) and 'outcomes' in outputs and 'representation' in outputs):
    got = sorted(outputs) if isinstance(outputs, dict) else f'an array {jnp.shape(outputs)}'
    raise ConfigError("task 'treatment_effect' needs a model returning {'outcomes', "
                      f"'representation', ...}} (model tarnet or dragonnet); got {got}.")
