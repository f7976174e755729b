"""Building blocks shared by jmed's image models."""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def max_pool(x, window: int = 2):
  """Non-overlapping max pooling with 'VALID' padding (stride = window).

  Same result as `nn.max_pool(x, (window, window), strides=(window, window))`, written as a
  reshape and a max so that its gradient is an elementwise select: XLA:CPU's select-and-scatter
  (the gradient of `reduce_window`) is several times slower.

  Args:
    x: [batch, height, width, channels]; a trailing row/column that does not fill a window is
      dropped, as in Keras' `MaxPooling2D`.
    window: the pooling window and stride.

  Returns:
    [batch, height // window, width // window, channels].
  """
  b, h, w, c = x.shape
  h2, w2 = h // window, w // window
  x = x[:, :h2 * window, :w2 * window]
  return x.reshape(b, h2, window, w2, window, c).max(axis=(2, 4))


def _patches(x, kernel_size: Sequence[int], strides: Sequence[int] = (1, 1)):
  """[batch, h, w, c] -> [batch, out_h, out_w, kh * kw * c] ('VALID' im2col with strides)."""
  kh, kw = kernel_size
  sh, sw = strides
  out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  if x.shape[1] < kh or x.shape[2] < kw:
    raise ValueError(f'Input {x.shape} is smaller than the kernel {tuple(kernel_size)}.')
  shifted = [x[:, i:i + (out_h - 1) * sh + 1:sh, j:j + (out_w - 1) * sw + 1:sw]
             for i in range(kh) for j in range(kw)]
  return jnp.concatenate(shifted, axis=-1)


def _use_im2col(impl: str, in_features: int) -> bool:
  if impl not in ('auto', 'xla', 'im2col'):
    raise ValueError(f"impl must be 'auto', 'xla' or 'im2col', got {impl!r}.")
  if impl != 'auto':
    return impl == 'im2col'
  return jax.default_backend() == 'cpu' and in_features > 1


class ValidConv(nn.Module):
  """A stride-1 'VALID' convolution with `nn.Conv`'s parameters (`kernel` [kh, kw, in, out], `bias`).

  `impl` picks how it is computed, with identical parameters and results up to float rounding:
    'xla': `lax.conv_general_dilated` (best on GPU/TPU).
    'im2col': patches and one matmul; on XLA:CPU its backward pass is much faster than the native
      convolution's (see `scripts/bench_seed_cnn.py`).
    'auto': 'im2col' on CPU when the input has more than one channel, else 'xla'.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    use_bias: add a learned bias.
    impl: 'auto' | 'xla' | 'im2col'.
    kernel_init: initializer of the kernel (flax's default, LeCun normal, unless given).
    dtype: computation dtype; parameters stay `param_dtype`.
    param_dtype: parameter dtype.
  """

  features: int
  kernel_size: Sequence[int] = (3, 3)
  use_bias: bool = True
  impl: str = 'auto'
  kernel_init: Callable = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """Maps [batch, h, w, in] to [batch, h - kh + 1, w - kw + 1, features]."""
    kh, kw = self.kernel_size
    in_features = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init,
                        (kh, kw, in_features, self.features), self.param_dtype)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if _use_im2col(self.impl, in_features):
      y = jnp.dot(_patches(x, (kh, kw)), kernel.reshape(kh * kw * in_features, self.features))
    else:
      y = jax.lax.conv_general_dilated(
          x, kernel, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class Conv(nn.Module):
  """A 2D convolution with symmetric zero padding and strides, `nn.Conv`'s parameter layout.

  Padding is `kernel_size // 2` on every side (PyTorch's ResNet convention), so a stride-s
  convolution maps h to `(h + 2 * (k // 2) - k) // s + 1`. `impl` as in `ValidConv`.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw), odd.
    strides: (sh, sw).
    use_bias: add a learned bias.
    impl: 'auto' | 'xla' | 'im2col'.
    kernel_init: kernel initializer.
    dtype: computation dtype; parameters stay `param_dtype`.
    param_dtype: parameter dtype.
  """

  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  use_bias: bool = True
  impl: str = 'auto'
  kernel_init: Callable = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """Maps [batch, h, w, in] to [batch, out_h, out_w, features]."""
    kh, kw = self.kernel_size
    in_features = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init,
                        (kh, kw, in_features, self.features), self.param_dtype)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    pads = ((kh // 2, kh // 2), (kw // 2, kw // 2))
    if _use_im2col(self.impl, in_features):
      if kh > 1 or kw > 1:
        x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
      patches = _patches(x, (kh, kw), self.strides)
      y = jnp.dot(patches, kernel.reshape(kh * kw * in_features, self.features))
    else:
      y = jax.lax.conv_general_dilated(
          x, kernel, tuple(self.strides), pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y
