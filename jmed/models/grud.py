"""GRU-D (Che et al., 2018): a GRU for irregular multivariate series with missing values.

Its input is the packed array of `jmed.data.timeseries` ([batch, time, 1 + 3 * features]: step
valid, standardised values, observation mask, time since each feature's last observation). A
missing value decays from its last observation towards the training mean (0 after
standardisation) at a learned per-feature rate, and the hidden state decays with the time
elapsed; the mask is also an input. Padding steps leave the state unchanged.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jmed.data.timeseries import unpack


class GRUDCell(nn.Module):
  """One GRU-D step.

  Attributes:
    hidden_size: state size.
    dtype: computation dtype.
  """

  hidden_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, carry, step):
    """carry: (h [batch, hidden], last observed values [batch, features]); step: (valid
    [batch], values, observed, delta, each [batch, features]). Returns (carry, h)."""
    h, last = carry
    valid, x, observed, delta = step
    features = x.shape[-1]
    rate = self.param('input_decay_kernel', nn.initializers.zeros, (features,))
    bias = self.param('input_decay_bias', nn.initializers.zeros, (features,))
    rate, bias = rate.astype(self.dtype), bias.astype(self.dtype)  # float32 params, `dtype` math
    gamma_x = jnp.exp(-nn.relu(rate * delta + bias))  # diagonal decay, as in the paper
    gamma_h = jnp.exp(-nn.relu(nn.Dense(self.hidden_size, dtype=self.dtype,
                                        name='hidden_decay')(delta)))
    imputed = observed * x + (1 - observed) * gamma_x * last  # decays to the mean, 0
    new_h, _ = nn.GRUCell(self.hidden_size, dtype=self.dtype, name='gru')(
        gamma_h * h, jnp.concatenate([imputed, observed], -1))
    keep = valid[:, None] > 0
    h = jnp.where(keep, new_h, h)
    last = jnp.where(keep & (observed > 0), x, last)
    return (h, last), h


class GRUDClassifier(nn.Module):
  """GRU-D over the whole series, then dropout and a dense layer on the final state.

  Attributes:
    num_classes: output logits.
    hidden_size: GRU-D state size.
    dropout_rate: dropout on the final state while training.
    dtype: computation dtype; logits are float32.
  """

  num_classes: int
  hidden_size: int = 64
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    """Maps packed series [batch, time, 1 + 3 * features] to logits [batch, num_classes]."""
    if inputs.ndim != 3:
      raise ValueError(f'GRU-D expects packed series [batch, time, 1 + 3 * features], got '
                       f'shape {inputs.shape}.')
    valid, values, observed, delta = unpack(inputs.astype(self.dtype))
    batch, features = inputs.shape[0], values.shape[-1]
    carry = (jnp.zeros((batch, self.hidden_size), self.dtype),
             jnp.zeros((batch, features), self.dtype))
    scan = nn.scan(GRUDCell, variable_broadcast='params', split_rngs={'params': False},
                   in_axes=1, out_axes=1)
    (h, _), states = scan(self.hidden_size, self.dtype, name='grud')(
        carry, (valid, values, observed, delta))
    self.sow('intermediates', 'hidden_states', states)
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    return nn.Dense(self.num_classes, dtype=self.dtype)(h).astype(jnp.float32)
