"""Treatment-effect estimation: IPM penalties (CFR), effect metrics, meta-learner baselines.

  from jmed.causal import ipm, metrics
  penalty = ipm.sinkhorn_wasserstein(rep, treated, valid)  # jit-able, [batch, d] -> scalar
  metrics.pehe(effect_hat, mu1 - mu0)                      # sqrt(PEHE), simulated data only

The models are `jmed.models.TARNet` and `jmed.models.Dragonnet`; the task is
`jmed.tasks.TreatmentEffect` ('treatment_effect'). `baselines` (scikit-learn) is imported on
its own: `from jmed.causal import baselines`.
"""

from jmed.causal import ipm, metrics

__all__ = ['ipm', 'metrics']
