"""Output heads that turn features into a task's outputs."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class DiscreteTimeHead(nn.Module):
  """Dense layer to per-interval hazard logits of discrete-time survival (`jmed.survival`).

  Attributes:
    num_intervals: number of time intervals (outputs).
    dtype: computation dtype, e.g. `jnp.bfloat16`; logits are float32.
  """

  num_intervals: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """Maps features [batch, d] to hazard logits [batch, num_intervals]."""
    x = nn.Dense(self.num_intervals, dtype=self.dtype)(x.astype(self.dtype))
    return x.astype(jnp.float32)
