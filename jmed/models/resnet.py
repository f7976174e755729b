"""ResNet-18/50 (He et al. 2016) with BatchNorm state threaded through `batch_stats`.

Two stems: 'imagenet' (7x7 stride-2 convolution + 3x3 stride-2 max pool, for 224x224 inputs)
and 'small' (one 3x3 stride-1 convolution, no pool), which is what the MedMNIST v2 benchmark
calls "ResNet (28)" for 28x28 inputs.

BatchNorm statistics: in training mode the batch mean and variance are taken over the batch the
module sees. Under `jmed.train.parallel.data_parallel` (jit over a device mesh) that batch is the
global batch, so the statistics are averaged across devices by construction and a 4-device run
equals a 1-device run (tests/test_resnet.py checks this).
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jmed.models.layers import Conv

STEMS = ('small', 'imagenet')


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

  features: int
  strides: int = 1
  conv: Callable = Conv
  norm: Callable = nn.BatchNorm

  @nn.compact
  def __call__(self, x):
    """[batch, h, w, c] -> [batch, h / strides, w / strides, features]."""
    residual = x
    y = self.conv(self.features, (3, 3), (self.strides, self.strides))(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.features, (3, 3))(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)  # each block starts as the identity
    if residual.shape != y.shape:
      residual = self.conv(self.features, (1, 1), (self.strides, self.strides),
                           name='shortcut_conv')(residual)
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
    """[batch, h, w, c] -> [batch, h / strides, w / strides, 4 * features]."""
    residual = x
    y = nn.relu(self.norm()(self.conv(self.features, (1, 1))(x)))
    y = self.conv(self.features, (3, 3), (self.strides, self.strides))(y)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.features * self.expansion, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = self.conv(self.features * self.expansion, (1, 1),
                           (self.strides, self.strides), name='shortcut_conv')(residual)
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
      XLA:CPU, ResNet-18 at 28x28, batch 128).
    bn_momentum: BatchNorm running-average momentum.
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

  @nn.compact
  def __call__(self, images, train: bool = False):
    """Maps images [batch, height, width, channels] to float32 logits [batch, num_classes]."""
    if images.ndim != 4:
      raise ValueError(f'ResNet expects [batch, height, width, channels], got {images.shape}.')
    if self.stem not in STEMS:
      raise ValueError(f'stem must be one of {STEMS}, got {self.stem!r}.')
    conv = functools.partial(Conv, use_bias=False, impl=self.conv_impl, dtype=self.dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out',
                                                                          'normal'))
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=1e-5, dtype=self.dtype)
    x = images.astype(self.dtype)
    if self.stem == 'imagenet':
      x = conv(self.width, (7, 7), (2, 2), name='stem_conv')(x)
      x = nn.relu(norm(name='stem_norm')(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = conv(self.width, (3, 3), name='stem_conv')(x)
      x = nn.relu(norm(name='stem_norm')(x))
    for stage, num_blocks in enumerate(self.stage_sizes):
      for b in range(num_blocks):
        strides = 2 if stage > 0 and b == 0 else 1
        x = self.block(self.width * 2**stage, strides, conv=conv, norm=norm)(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype)(x)
    return x.astype(jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BottleneckBlock)
