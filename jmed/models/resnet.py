"""ResNet-18/50 (He et al. 2016) with BatchNorm state threaded through `batch_stats`.

Two stems: 'imagenet' (7x7 stride-2 convolution + 3x3 stride-2 max pool, for 224x224 inputs)
and 'small' (one 3x3 stride-1 convolution, no pool), which is what the MedMNIST v2 benchmark
calls "ResNet (28)" for 28x28 inputs.

2D or 3D: the kernel rank follows the input. Images [batch, height, width, channels] get 3x3
convolutions; volumes [batch, depth, height, width, channels] get 3x3x3 ones (MedMNIST v2's
"ResNet-18 + 3D" / "ResNet-50 + 3D"; the 'small' stem keeps 28^3 into the first stage). The
same blocks serve both; `spatial_dims` pins the rank when a model is meant for one only.

BatchNorm statistics: in training mode the batch mean and variance are taken over the batch the
module sees. Under `jmed.train.parallel.data_parallel` (jit over a device mesh) that batch is the
global batch, so the statistics are averaged across devices by construction and a 4-device run
equals a 1-device run (tests/test_resnet.py checks this).
"""

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jmed.models.layers import Conv, Conv3D

STEMS = ('small', 'imagenet')


def _kernels(x, strides: int):
  """(3x3[x3] kernel, 1x1[x1] kernel, strides) for the spatial rank of x [batch, *spatial, c]."""
  rank = x.ndim - 2
  return (3,) * rank, (1,) * rank, (strides,) * rank


def _conv(rank: int):
  """The convolution for `rank` spatial axes: 2 -> `layers.Conv`, 3 -> `Conv3D`."""
  return Conv if rank == 2 else Conv3D


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

  features: int
  strides: int = 1
  conv: Callable = Conv
  norm: Callable = nn.BatchNorm

  @nn.compact
  def __call__(self, x):
    """[batch, *spatial, c] -> [batch, *spatial / strides, features] (2 or 3 spatial axes)."""
    k3, k1, strides = _kernels(x, self.strides)
    residual = x
    y = self.conv(self.features, k3, strides)(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.features, k3)(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)  # each block starts as the identity
    if residual.shape != y.shape:
      residual = self.conv(self.features, k1, strides, name='shortcut_conv')(residual)
      residual = self.norm(name='shortcut_norm')(residual)
    return nn.relu(residual + y)


class BottleneckBlock(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a residual connection (ResNet-50+)."""

  features: int
  strides: int = 1
  conv: Callable = Conv
  norm: Callable = nn.BatchNorm
  expansion: int = 4

  @nn.compact
  def __call__(self, x):
    """[batch, *spatial, c] -> [batch, *spatial / strides, 4 * features] (2 or 3 spatial
    axes)."""
    k3, k1, strides = _kernels(x, self.strides)
    residual = x
    y = nn.relu(self.norm()(self.conv(self.features, k1)(x)))
    y = self.conv(self.features, k3, strides)(y)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.features * self.expansion, k1)(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = self.conv(self.features * self.expansion, k1, strides,
                           name='shortcut_conv')(residual)
      residual = self.norm(name='shortcut_norm')(residual)
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """A ResNet classifier.

  Attributes:
    num_classes: output logits.
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block: `BasicBlock` or `BottleneckBlock`.
    width: channels of the first stage (doubled at each later stage).
    stem: 'small' (3x3 stride 1, no pool: 28x28 inputs) or 'imagenet' (7x7/2 + max pool/2).
    dropout_rate: dropout before the classifier.
    dtype: computation dtype (BatchNorm statistics and parameters stay float32).
    conv_impl: 'xla' | 'im2col' | 'auto' (see `jmed.models.layers.Conv`). 'xla' by default:
      at ResNet widths im2col's patch matrices cost more than they save (3x slower measured on
      XLA:CPU, ResNet-18 at 28x28, batch 128). For volumes see `Conv3D`: there 'auto' (im2col
      on CPU) is about 2x faster per train step than 'xla' on XLA:CPU.
    bn_momentum: BatchNorm running-average momentum.
    spatial_dims: None (2D or 3D as the input is), 2 or 3 (inputs of any other rank are
      refused).
  """

  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: Any = BasicBlock
  width: int = 64
  stem: str = 'small'
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  conv_impl: str = 'xla'
  bn_momentum: float = 0.9
  spatial_dims: Optional[int] = None

  @nn.compact
  def __call__(self, images, train: bool = False):
    """Maps images [batch, height, width, channels] or volumes [batch, depth, height, width,
    channels] to float32 logits [batch, num_classes]."""
    rank = self._check(images)
    conv = functools.partial(_conv(rank), use_bias=False, impl=self.conv_impl, dtype=self.dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out',
                                                                          'normal'))
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=1e-5, dtype=self.dtype)
    x = images.astype(self.dtype)
    if self.stem == 'imagenet':
      x = conv(self.width, (7,) * rank, (2,) * rank, name='stem_conv')(x)
      x = nn.relu(norm(name='stem_norm')(x))
      x = nn.max_pool(x, (3,) * rank, strides=(2,) * rank, padding=((1, 1),) * rank)
    else:
      x = conv(self.width, (3,) * rank, name='stem_conv')(x)
      x = nn.relu(norm(name='stem_norm')(x))
    for stage, num_blocks in enumerate(self.stage_sizes):
      for b in range(num_blocks):
        strides = 2 if stage > 0 and b == 0 else 1
        x = self.block(self.width * 2**stage, strides, conv=conv, norm=norm)(x)
    x = jnp.mean(x, axis=tuple(range(1, rank + 1)))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype)(x)
    return x.astype(jnp.float32)

  def _check(self, images) -> int:
    """The spatial rank (2 or 3) of `images`; ValueError for a shape or stem that does not fit."""
    ranks = {2: (2,), 3: (3,), None: (2, 3)}.get(self.spatial_dims)
    if ranks is None:
      raise ValueError(f'spatial_dims must be None, 2 or 3, got {self.spatial_dims!r}.')
    if images.ndim - 2 not in ranks:
      layouts = {2: '[batch, height, width, channels]',
                 3: '[batch, depth, height, width, channels]'}
      raise ValueError(f'ResNet expects {" or ".join(layouts[r] for r in ranks)}, got '
                       f'{images.shape}.')
    if self.stem not in STEMS:
      raise ValueError(f'stem must be one of {STEMS}, got {self.stem!r}.')
    return images.ndim - 2


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BottleneckBlock)
ResNet18_3D = functools.partial(ResNet18, spatial_dims=3)  # MedMNIST v2 "ResNet-18 + 3D"
ResNet50_3D = functools.partial(ResNet50, spatial_dims=3)  # MedMNIST v2 "ResNet-50 + 3D"
