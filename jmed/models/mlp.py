"""A multilayer perceptron for flat inputs, e.g. Tox21's Morgan fingerprints."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """Flatten, then Dense-ReLU-Dropout per entry of `hidden`, then Dense.

  Attributes:
    num_classes: size of the output layer (logits).
    hidden: widths of the hidden layers; empty gives a linear model.
    dropout_rate: dropout after each hidden layer during training (rng name
      'dropout'); 0 disables it.
    dtype: computation dtype, e.g. `jnp.bfloat16`; logits are float32.
    param_dtype: parameter dtype.
  """

  num_classes: int
  hidden: Sequence[int] = (512, 256)
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Maps inputs [batch, ...] to logits [batch, num_classes] (float32)."""
    if x.ndim < 2:
      raise ValueError(f'MLP expects inputs [batch, ...], got shape {x.shape}.')
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f'MLP takes float features, got {x.dtype} inputs (token ids?): use a '
                       'sequence model (transformer, gru, text_cnn), or fingerprints for '
                       'molecules (--molecule-features fingerprint).')
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    for width in self.hidden:
      x = nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype)(x)
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype,
                 param_dtype=self.param_dtype)(x)
    return x.astype(jnp.float32)
