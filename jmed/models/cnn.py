"""The seed's Keras-style CNN (the classic Keras MNIST example) as a flax module."""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jmed.models.layers import ValidConv, max_pool


class SeedCNN(nn.Module):
  """Conv 3x3-ReLU-MaxPool 2 per entry of `features`, flatten, Dense-ReLU, Dense.

  The Keras original: Conv2D(32, 3, relu), MaxPooling2D, Conv2D(64, 3, relu), MaxPooling2D,
  Flatten, Dense(64, relu), Dense(num_classes); 'VALID' padding as in Keras' defaults.

  Attributes:
    num_classes: size of the output layer (logits).
    features: output channels of the convolution blocks.
    hidden: width of the hidden dense layer.
    dropout_rate: dropout on the hidden layer during training; 0 disables it.
    dtype: computation dtype, e.g. `jnp.bfloat16`; parameters and logits stay float32.
    conv_impl: how convolutions are computed, see `ValidConv` ('auto' is fastest per backend).
    kernel_init: kernel initializer of every layer (biases start at 0). flax's LeCun normal by
      default; `nn.initializers.glorot_uniform()` is Keras' default. On PneumoniaMNIST the seed
      recipe scored higher with LeCun normal (README, "Results").
  """

  num_classes: int = 10
  features: Sequence[int] = (32, 64)
  hidden: int = 64
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    """Maps images [batch, height, width, channels] to logits [batch, num_classes] (float32)."""
    if x.ndim != 4:
      raise ValueError(
          f'SeedCNN expects images [batch, height, width, channels], got shape {x.shape}.')
    x = x.astype(self.dtype)
    for width in self.features:
      x = _pooled_input(x, kernel=3, window=2)
      x = ValidConv(width, (3, 3), impl=self.conv_impl, kernel_init=self.kernel_init,
                    dtype=self.dtype)(x)
      x = max_pool(nn.relu(x), 2)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, kernel_init=self.kernel_init)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=self.kernel_init)(x)
    return x.astype(jnp.float32)


def _pooled_input(x, kernel: int, window: int):
  """x [batch, height, width, channels] cropped to the rows and columns that reach a pooled
  output: a 'VALID' convolution (`kernel`) then a `max_pool` (`window`) drop the conv's last
  row / column when its size is not a multiple of the window, so those are never computed (the
  seed CNN's second convolution: 12 x 12 of its 13 x 13 input, 17% less work, same result)."""
  used = [(n - kernel + 1) // window * window + kernel - 1 for n in x.shape[1:3]]
  return x[:, :used[0], :used[1]]
