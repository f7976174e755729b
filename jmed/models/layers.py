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


def _convolve(module, x, *, strides, pads):
  """The shared body of `ValidConv` and `Conv`: creates `kernel` (and `bias`) in `module`.

  Args:
    module: the calling module (fields features, kernel_size, use_bias, impl, kernel_init,
      dtype, param_dtype); parameters are created in its scope.
    x: [batch, h, w, in].
    strides: (sh, sw).
    pads: ((top, bottom), (left, right)) zero padding.

  Returns:
    [batch, out_h, out_w, features] in `module.dtype`.
  """
  kh, kw = module.kernel_size
  in_features = x.shape[-1]
  kernel = module.param('kernel', module.kernel_init,
                        (kh, kw, in_features, module.features), module.param_dtype)
  x, kernel = x.astype(module.dtype), kernel.astype(module.dtype)
  if _use_im2col(module.impl, in_features):
    if any(p for pair in pads for p in pair):
      x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    patches = _patches(x, (kh, kw), strides)
    y = jnp.dot(patches, kernel.reshape(kh * kw * in_features, module.features))
  else:
    y = jax.lax.conv_general_dilated(
        x, kernel, tuple(strides), pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  if module.use_bias:
    bias = module.param('bias', nn.initializers.zeros, (module.features,), module.param_dtype)
    y = y + bias.astype(module.dtype)
  return y


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
    return _convolve(self, x, strides=(1, 1), pads=((0, 0), (0, 0)))


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
    return _convolve(self, x, strides=self.strides,
                     pads=((kh // 2, kh // 2), (kw // 2, kw // 2)))
