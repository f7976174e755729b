"""DP-SGD (Abadi et al. 2016): per-example clipping, Gaussian noise, and the privacy budget.

One DP-SGD step on a batch of B examples:

  1. per-example gradients g_i (a `jax.vmap` of `jax.grad` over the batch);
  2. clip each to L2 norm at most C (`optax.per_example_global_norm_clip`);
  3. add N(0, (sigma * C)^2) noise to their sum, and divide by B.

The (epsilon, delta) guarantee comes from Google's `dp-accounting`: every step is a Gaussian
mechanism with noise multiplier sigma, applied to a Poisson sample of rate q = B / n, composed
over the steps. The training loop draws fixed-size batches from a shuffled epoch instead of
Poisson samples, the usual practice (TF Privacy, Opacus) which this accounting approximates;
see Chua et al. 2024, "How Private are DP-SGD Implementations?", for the caveat.

The step is a pure function of the state and the global batch; the noise key is folded from the
state's key and step, so a data-parallel run adds the same noise as a one-device run.
"""

import jax
import optax

from jmed.errors import ConfigError

ACCOUNTANTS = ('rdp', 'pld')


def clipped_noisy_mean(per_example_grads, key, l2_clip: float, noise_multiplier: float):
  """DP-SGD's gradient: the noisy mean of per-example gradients clipped to `l2_clip`.

  Args:
    per_example_grads: a pytree whose leaves are [batch, *param_shape].
    key: PRNG key for the noise.
    l2_clip: the per-example L2 norm bound C (over all leaves together).
    noise_multiplier: sigma; the noise on the sum has std sigma * C per coordinate.

  Returns:
    (gradient pytree [*param_shape], number of examples whose gradient was clipped).
  """
  leaves, treedef = jax.tree.flatten(per_example_grads)
  batch = leaves[0].shape[0]
  summed, num_clipped = optax.per_example_global_norm_clip(leaves, l2_clip)
  keys = jax.random.split(key, len(summed))
  noisy = [(s + noise_multiplier * l2_clip * jax.random.normal(k, s.shape, s.dtype)) / batch
           for s, k in zip(summed, keys)]
  return jax.tree.unflatten(treedef, noisy), num_clipped


def dp_sgd_event(noise_multiplier: float, sample_rate: float, steps: int):
  """The `dp_accounting` event of `steps` Poisson-sampled Gaussian mechanisms."""
  import dp_accounting  # pylint: disable=g-import-not-at-top
  return dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), steps)


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
            accountant: str = 'rdp') -> float:
  """Epsilon of DP-SGD at `delta` after `steps` steps at sampling rate `sample_rate`.

  Args:
    noise_multiplier: sigma (> 0).
    sample_rate: q = batch size / training examples, in (0, 1].
    steps: optimizer steps taken (0 gives epsilon 0).
    delta: in (0, 1).
    accountant: 'rdp' (Renyi DP, Mironov 2017) or 'pld' (privacy loss distributions, tighter).

  Raises:
    ValueError: on an argument out of range.
  """
  _check(noise_multiplier, sample_rate, delta, accountant)
  if steps < 0:
    raise ValueError(f'steps must be >= 0, got {steps}.')
  if steps == 0:
    return 0.0
  acc = _accountant(accountant)
  acc.compose(dp_sgd_event(noise_multiplier, sample_rate, steps))
  return float(acc.get_epsilon(delta))


def noise_multiplier_for(target_epsilon: float, sample_rate: float, steps: int, delta: float,
                         accountant: str = 'rdp') -> float:
  """The smallest sigma whose DP-SGD run of `steps` steps stays within `target_epsilon` at
  `delta` (`dp_accounting.calibrate_dp_mechanism`)."""
  import dp_accounting  # pylint: disable=g-import-not-at-top
  _check(1.0, sample_rate, delta, accountant)
  if target_epsilon <= 0 or steps < 1:
    raise ValueError(f'target_epsilon must be > 0 and steps >= 1, got {target_epsilon}, {steps}.')
  return float(dp_accounting.calibrate_dp_mechanism(
      lambda: _accountant(accountant),
      lambda sigma: dp_sgd_event(sigma, sample_rate, steps),
      target_epsilon, delta, dp_accounting.LowerEndpointAndGuess(1e-2, 1.0)))


def default_delta(num_examples: int) -> float:
  """1 / n: the usual delta for a dataset of n examples (each one's leak probability)."""
  return 1.0 / num_examples


def budget(privacy, batch_size: int, num_examples: int, steps: int) -> dict:
  """The run-summary record of a `jmed.configs.PrivacyConfig` after `steps` steps."""
  delta = privacy.delta or default_delta(num_examples)
  sample_rate = batch_size / num_examples
  return {
      'epsilon': epsilon(privacy.noise_multiplier, sample_rate, steps, delta,
                         privacy.accountant),
      'delta': delta, 'noise_multiplier': privacy.noise_multiplier,
      'l2_clip': privacy.l2_clip, 'sample_rate': sample_rate, 'steps': steps,
      'accountant': privacy.accountant,
  }


def check_applies(task, model_state) -> None:
  """Raises ConfigError unless DP-SGD can train `task` with a model holding `model_state`.

  DP-SGD needs each example's own gradient: a task whose loss couples the examples of a batch
  (`task.per_example_loss` False: the Cox loss) and a model whose BatchNorm statistics mix them
  (non-empty `model_state`) cannot be privatised example by example.
  """
  if not task.per_example_loss:
    raise ConfigError(f'DP-SGD needs per-example gradients; the loss of task {task.name!r} '
                      'couples the examples of a batch.')
  if model_state:
    raise ConfigError('DP-SGD needs per-example gradients, which BatchNorm statistics do not '
                      f'allow: the model has {sorted(model_state)}; use a model without '
                      'BatchNorm (e.g. norm="group" or "none").')


def check_config(privacy) -> None:
  """Raises ConfigError on a `PrivacyConfig` that cannot be trained with."""
  if privacy.l2_clip <= 0 or privacy.noise_multiplier < 0:
    raise ConfigError(f'DP-SGD needs l2_clip > 0 and noise_multiplier >= 0, got '
                      f'{privacy.l2_clip} and {privacy.noise_multiplier}.')
  if not 0 <= privacy.delta < 1 or privacy.accountant not in ACCOUNTANTS:
    raise ConfigError(f'DP-SGD needs 0 <= delta < 1 and accountant in {ACCOUNTANTS}, got '
                      f'{privacy.delta} and {privacy.accountant!r}.')


def _check(noise_multiplier, sample_rate, delta, accountant) -> None:
  if noise_multiplier <= 0:
    raise ValueError(f'noise_multiplier must be > 0 for a finite epsilon, got '
                     f'{noise_multiplier}.')
  if not 0 < sample_rate <= 1:
    raise ValueError(f'sample_rate must be in (0, 1], got {sample_rate}.')
  if not 0 < delta < 1:
    raise ValueError(f'delta must be in (0, 1), got {delta}.')
  if accountant not in ACCOUNTANTS:
    raise ValueError(f'accountant must be one of {ACCOUNTANTS}, got {accountant!r}.')


def _accountant(name: str):
  from dp_accounting import pld, rdp  # pylint: disable=g-import-not-at-top
  return rdp.RdpAccountant() if name == 'rdp' else pld.PLDAccountant()


def per_example_grads(loss_fn, params, *per_example_args):
  """`jax.grad(loss_fn)` per example: leaves [batch, *param_shape], plus the aux outputs.

  Args:
    loss_fn: (params, *one_example_args) -> (scalar loss, aux).
    params: the parameters (shared by every example).
    *per_example_args: arrays with a leading [batch] axis, mapped over.
  """
  grad_fn = jax.grad(loss_fn, has_aux=True)
  return jax.vmap(grad_fn, in_axes=(None,) + (0,) * len(per_example_args))(
      params, *per_example_args)

