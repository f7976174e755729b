"""Building blocks shared by jmed's image models."""

import functools
import itertools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def max_pool(x, window: int = 2):
  """Non-overlapping max pooling with 'VALID' padding (stride = window).

  Same result as `nn.max_pool(x, (window, window), strides=(window, window))`, written as the
  maximum of the window's `window ** 2` strided slices, so that its gradient is elementwise
  selects: XLA:CPU's select-and-scatter (the gradient of `reduce_window`) is several times
  slower, and a reshape to windows and a max over them about 1.7x slower (forward and backward
  after a ReLU, the seed CNN's first layer at batch 32: 0.68 ms against 1.18 ms and 3.27 ms).

  Args:
    x: [batch, height, width, channels]; a trailing row/column that does not fill a window is
      dropped, as in Keras' `MaxPooling2D`.
    window: the pooling window and stride.

  Returns:
    [batch, height // window, width // window, channels].
  """
  _, h, w, _ = x.shape
  x = x[:, :h // window * window, :w // window * window]
  return functools.reduce(jnp.maximum, [x[:, i::window, j::window]
                                        for i in range(window) for j in range(window)])


def _shifted(x, kernel_size: Sequence[int], strides: Sequence[int]):
  """The `prod(kernel_size)` shifted (strided) views of x [batch, *spatial, c] that a 'VALID'
  convolution's taps see, in the kernel's row-major order: each [batch, *out_spatial, c]."""
  spatial = x.shape[1:-1]
  if any(n < k for n, k in zip(spatial, kernel_size)):
    raise ValueError(f'Input {x.shape} is smaller than the kernel {tuple(kernel_size)}.')
  out = [(n - k) // s + 1 for n, k, s in zip(spatial, kernel_size, strides)]
  return [x[(slice(None), *(slice(i, i + (o - 1) * s + 1, s)
                            for i, o, s in zip(offset, out, strides)))]
          for offset in itertools.product(*(range(k) for k in kernel_size))]


def _im2col(x, kernel, strides: Sequence[int]):
  """'VALID' convolution of x [batch, *spatial, in] with kernel [*kernel_size, in, out] as one
  matmul of patches; returns [batch, *out_spatial, out].

  Patches are [rows, taps * in] (row-major), except for a one-channel input: there they are
  tap-major [taps, rows], so that the kernel's gradient is a plain matmul rather than one after
  a transpose of the output gradient (the seed CNN's first layer: 0.50 ms against 0.82 ms
  forward and backward at batch 32).
  """
  *kernel_size, in_features, features = kernel.shape
  taps = _shifted(x, kernel_size, strides)
  out_shape = (*taps[0].shape[:-1], features)
  kernel = kernel.reshape(-1, features)
  if in_features == 1:
    patches = jnp.stack(taps).reshape(len(taps), -1)  # [taps, rows]
    return jax.lax.dot_general(patches, kernel, (((0,), (0,)), ((), ()))).reshape(out_shape)
  return jnp.dot(jnp.concatenate(taps, axis=-1), kernel)


def _use_im2col(impl: str) -> bool:
  """'auto': im2col on CPU (XLA:CPU's native convolution is slower at every size measured, and
  several times slower inside a loop such as the micro-batch scan of `steps.train_step`)."""
  if impl not in ('auto', 'xla', 'im2col'):
    raise ValueError(f"impl must be 'auto', 'xla' or 'im2col', got {impl!r}.")
  if impl != 'auto':
    return impl == 'im2col'
  return jax.default_backend() == 'cpu'


_DIMENSIONS = {2: ('NHWC', 'HWIO', 'NHWC'), 3: ('NDHWC', 'DHWIO', 'NDHWC')}  # by spatial rank


def _convolve(module, x, *, strides, pads):
  """The shared body of `ValidConv`, `Conv` and `Conv3D`: creates `kernel` (and `bias`) in
  `module`.

  Args:
    module: the calling module (fields features, kernel_size, use_bias, impl, kernel_init,
      dtype, param_dtype); parameters are created in its scope.
    x: [batch, *spatial, in], 2 or 3 spatial axes.
    strides: one per spatial axis.
    pads: (before, after) zero padding per spatial axis.

  Returns:
    [batch, *out_spatial, features] in `module.dtype`.
  """
  kernel_size = tuple(module.kernel_size)
  in_features = x.shape[-1]
  kernel = module.param('kernel', module.kernel_init,
                        (*kernel_size, in_features, module.features), module.param_dtype)
  x, kernel = x.astype(module.dtype), kernel.astype(module.dtype)
  if _use_im2col(module.impl):
    if any(p for pair in pads for p in pair):
      x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    y = _im2col(x, kernel, tuple(strides))
  else:
    y = jax.lax.conv_general_dilated(x, kernel, tuple(strides), tuple(pads),
                                     dimension_numbers=_DIMENSIONS[len(kernel_size)])
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
    'auto': 'im2col' on CPU, else 'xla'.

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
    """Maps [batch, h, w, in] to [batch, out_h, out_w, features] ([batch, d, h, w, in] to
    [batch, out_d, out_h, out_w, features] with 3-tuple `kernel_size` and `strides`)."""
    return _convolve(self, x, strides=self.strides,
                     pads=tuple((k // 2, k // 2) for k in self.kernel_size))


class Conv3D(Conv):
  """`Conv` for volumes [batch, d, h, w, in]: `kernel` [kd, kh, kw, in, out], 3-tuple
  `kernel_size` and `strides`. 'auto' picks im2col on CPU for every input: XLA:CPU's native 3D
  convolution, its backward pass above all, is many times slower."""

  kernel_size: Sequence[int] = (3, 3, 3)
  strides: Sequence[int] = (1, 1, 1)
