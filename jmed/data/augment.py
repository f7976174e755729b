"""On-device, jit-able data augmentation for medical images.

Augmentation runs on the accelerator, inside the training step, from a PRNG
key: the same key always gives the same batch, and every example gets its own
key (`jax.random.split` + `jax.vmap`, no Python loop over examples).

All geometric parts (flips, rotation by multiples of 90 degrees, small
rotation, zoom, translation) are folded into ONE affine map per image and
resampled once, bilinearly, with `jax.scipy.ndimage.map_coordinates`, so
stacking them costs one interpolation (and one blur) rather than several.
Intensity parts (brightness, contrast, gamma, noise) follow, and the result is
clipped to [0, 1].

Usage:

  config = get_augment('chest_xray')
  augment = jax.jit(augment_batch, static_argnames='config')
  images = augment(rng, images, config)    # [batch, height, width, channels]

`config` is static under `jax.jit`: an `AugmentConfig` is a frozen (hashable)
dataclass, and a preset name is a string; each distinct config compiles once.
"""

import dataclasses
import functools
import math
from typing import Dict, Union

import jax
import jax.numpy as jnp

from jmed.errors import ConfigError

FILL_MODES = ('constant', 'nearest')


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Random augmentations; every field's default disables that augmentation.

  Attributes:
    flip_horizontal: mirror left <-> right with probability 1/2.
    flip_vertical: mirror top <-> bottom with probability 1/2.
    rotate90: rotate by a uniform random multiple of 90 degrees (counter-
      clockwise, like `np.rot90`). On non-square images the rotated content is
      cropped / filled to keep the shape.
    rotate_degrees: extra rotation, uniform in [-d, d] degrees.
    translate_pixels: shift, uniform in [-t, t] pixels on each axis
      independently (a continuous random crop of a padded image).
    scale: zoom factor uniform in [1 - s, 1 + s] (> 1 magnifies); s < 1.
    brightness: additive delta uniform in [-b, b].
    contrast: factor uniform in [1 - c, 1 + c] applied around each image's
      mean (over height, width and channels); c < 1.
    gamma: x -> x ** exp(uniform(-g, g)).
    noise_std: standard deviation of additive Gaussian noise.
    fill_mode: value for pixels mapped from outside the image: 'constant'
      (0, black) or 'nearest' (replicate the edge).
  """

  flip_horizontal: bool = False
  flip_vertical: bool = False
  rotate90: bool = False
  rotate_degrees: float = 0.
  translate_pixels: float = 0.
  scale: float = 0.
  brightness: float = 0.
  contrast: float = 0.
  gamma: float = 0.
  noise_std: float = 0.
  fill_mode: str = 'constant'

  def __post_init__(self):
    for field in ('rotate_degrees', 'translate_pixels', 'scale', 'brightness',
                  'contrast', 'gamma', 'noise_std'):
      value = getattr(self, field)
      if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
        raise ConfigError(f'AugmentConfig.{field} must be a finite number '
                          f'>= 0, got {value!r}')
    for field in ('scale', 'contrast'):
      if getattr(self, field) >= 1:
        raise ConfigError(f'AugmentConfig.{field} must be < 1, got '
                          f'{getattr(self, field)!r}')
    if self.fill_mode not in FILL_MODES:
      raise ConfigError(f'AugmentConfig.fill_mode must be one of {FILL_MODES}, '
                        f'got {self.fill_mode!r}')

  @property
  def is_geometric(self) -> bool:
    """Whether any geometric (warp) augmentation is enabled."""
    return bool(self.flip_horizontal or self.flip_vertical or self.rotate90
                or self.rotate_degrees or self.translate_pixels or self.scale)

  @property
  def is_intensity(self) -> bool:
    """Whether any intensity augmentation is enabled."""
    return bool(self.brightness or self.contrast or self.gamma
                or self.noise_std)

  @property
  def is_identity(self) -> bool:
    """Whether this config leaves every image unchanged."""
    return not (self.is_geometric or self.is_intensity)


# Per-modality presets. Translations are in pixels for 28x28 MedMNIST / MNIST
# images; scale them with the resolution for larger inputs.
PRESETS: Dict[str, AugmentConfig] = {
    # Identity: evaluation, or a baseline without augmentation.
    'none': AugmentConfig(),
    # Chest X-ray: NO flips and NO rot90. Laterality is anatomy (heart and
    # aortic knob on the patient's left, gastric bubble under the left
    # hemidiaphragm); a mirrored film shows dextrocardia / situs inversus, not
    # a plausible normal patient. Films are taken upright, so only small
    # positioning variation: ~10 degrees of tilt, 2 px (~7%) of shift, 10%
    # zoom (patient size, distance to detector). Mild brightness/contrast for
    # exposure and windowing differences between machines. Black (0) fill
    # matches the collimated border of a radiograph.
    'chest_xray': AugmentConfig(
        rotate_degrees=10., translate_pixels=2., scale=0.1,
        brightness=0.1, contrast=0.1),
    # Dermoscopy: a skin lesion seen from above has no canonical orientation,
    # so all 8 flips/rot90s (the dihedral group, exact and lossless) are label
    # preserving. Small zoom for lens distance. Mild intensity and gamma for
    # lighting and camera differences; no hue shift (colour is diagnostic,
    # e.g. blue-white veil). 'nearest' fill avoids black corners that the
    # dark vignette of a dermatoscope would make look like lesion borders.
    'dermoscopy': AugmentConfig(
        flip_horizontal=True, flip_vertical=True, rotate90=True, scale=0.1,
        brightness=0.1, contrast=0.1, gamma=0.1, fill_mode='nearest'),
    # Pathology (H&E tiles): tissue on a slide has no orientation, so all 8
    # dihedral transforms are allowed and, with no continuous warp, they are
    # resampled exactly (no interpolation blur of cell detail). Mild
    # brightness/contrast/gamma for stain and scanner variation.
    'pathology': AugmentConfig(
        flip_horizontal=True, flip_vertical=True, rotate90=True,
        brightness=0.1, contrast=0.1, gamma=0.1),
    # Retina (fundus photographs): a left eye mirrored horizontally looks like
    # a right eye, so horizontal flips are label preserving for grading. NO
    # vertical flip / rot90: superior vs inferior anatomy (vascular arcades,
    # macula slightly below the disc) is consistent across images. Small
    # rotation for head tilt and small zoom for the field of view; brightness
    # /contrast/gamma for uneven illumination. Black fill matches the dark
    # surround of the circular fundus.
    'retina': AugmentConfig(
        flip_horizontal=True, rotate_degrees=15., scale=0.05,
        brightness=0.1, contrast=0.1, gamma=0.1),
    # Handwritten digits (MNIST): NO flips / rot90, they change the class
    # (6 <-> 9, mirrored 2 / 5 / 7 are not digits). Small rotation, shift and
    # zoom model handwriting variation; intensity left alone (binary-ish ink).
    'digits': AugmentConfig(
        rotate_degrees=10., translate_pixels=2., scale=0.1),
}


def get_augment(name_or_config: Union[str, AugmentConfig]) -> AugmentConfig:
  """Returns the `AugmentConfig` for a preset name, or `config` itself."""
  if isinstance(name_or_config, AugmentConfig):
    return name_or_config
  if isinstance(name_or_config, str):
    if name_or_config not in PRESETS:
      raise ConfigError(f'Unknown augmentation preset {name_or_config!r}; '
                        f'valid presets: {sorted(PRESETS)}')
    return PRESETS[name_or_config]
  raise TypeError('Expected an AugmentConfig or a preset name (str), got '
                  f'{type(name_or_config).__name__}')


def affine_warp(image: jax.Array, matrix: jax.Array,
                fill_mode: str = 'constant') -> jax.Array:
  """Resamples an image bilinearly under an affine map.

  Args:
    image: [height, width, channels].
    matrix: [2, 3] or [3, 3], maps an OUTPUT pixel index (row, col, 1) to the
      INPUT position (row, col) it is sampled from (pull-back). E.g.
      `[[1, 0, 0], [0, 1, -1]]` shifts the content right by one pixel.
    fill_mode: 'constant' (0) or 'nearest' for positions outside the image.

  Returns:
    [height, width, channels], float32.
  """
  if fill_mode not in FILL_MODES:
    raise ValueError(f'fill_mode must be one of {FILL_MODES}, got '
                     f'{fill_mode!r}')
  height, width, _ = image.shape
  matrix = jnp.asarray(matrix, jnp.float32)[:2]
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32),
                            indexing='ij')
  src_rows = matrix[0, 0] * rows + matrix[0, 1] * cols + matrix[0, 2]
  src_cols = matrix[1, 0] * rows + matrix[1, 1] * cols + matrix[1, 2]

  def warp_channel(channel):  # [height, width] -> [height, width]
    return jax.scipy.ndimage.map_coordinates(
        channel, (src_rows, src_cols), order=1, mode=fill_mode, cval=0.)

  return jax.vmap(warp_channel, in_axes=-1, out_axes=-1)(
      image.astype(jnp.float32))


# Indices into each image's vector of uniform[0, 1) draws.
_FLIP_V, _FLIP_H, _ROT90, _ANGLE, _ZOOM = range(5)
_SHIFT = 5  # Two draws: rows, cols.
_BRIGHTNESS, _CONTRAST, _GAMMA = 7, 8, 9
_NUM_UNIFORMS = 10


def _rotation(cos: jax.Array, sin: jax.Array) -> jax.Array:
  """[2, 2] counter-clockwise rotation in (row, col) coordinates."""
  return jnp.array([[cos, -sin], [sin, cos]])


def _symmetric(u: jax.Array, bound: float) -> jax.Array:
  """Maps u ~ uniform[0, 1) to uniform[-bound, bound)."""
  return bound * (2. * u - 1.)


def _sample_matrix(u: jax.Array, config: AugmentConfig, height: int,
                   width: int) -> jax.Array:
  """One image's [2, 3] pull-back matrix for `affine_warp`.

  The forward map, about the image centre, is: flip, rotate, zoom, shift:
  `out = scale * R @ F @ in + t`; this returns its inverse,
  `in = F @ R.T @ (out - t) / scale`. Disabled parts are exact identities, so
  flips and rot90 alone map pixel centres onto pixel centres exactly.

  Args:
    u: [_NUM_UNIFORMS] uniform[0, 1) draws for this image.
    config: the augmentation config.
    height: image height.
    width: image width.
  """
  flip = jnp.ones(2)
  if config.flip_vertical:
    flip = flip.at[0].set(jnp.where(u[_FLIP_V] < 0.5, -1., 1.))
  if config.flip_horizontal:
    flip = flip.at[1].set(jnp.where(u[_FLIP_H] < 0.5, -1., 1.))
  rotation = jnp.eye(2)
  if config.rotate90:  # Exact cos / sin of k * 90 degrees.
    k = jnp.minimum(jnp.floor(4. * u[_ROT90]).astype(jnp.int32), 3)
    rotation = _rotation(jnp.array([1., 0., -1., 0.])[k],
                         jnp.array([0., 1., 0., -1.])[k])
  if config.rotate_degrees:
    angle = jnp.deg2rad(_symmetric(u[_ANGLE], config.rotate_degrees))
    rotation = rotation @ _rotation(jnp.cos(angle), jnp.sin(angle))
  zoom = 1.
  if config.scale:
    zoom = 1. + _symmetric(u[_ZOOM], config.scale)
  shift = jnp.zeros(2)
  if config.translate_pixels:
    shift = _symmetric(u[_SHIFT:_SHIFT + 2], config.translate_pixels)
  linear = flip[:, None] * rotation.T / zoom  # F @ R.T / scale.
  center = jnp.array([(height - 1) / 2, (width - 1) / 2])
  offset = center - linear @ (center + shift)
  return jnp.concatenate([linear, offset[:, None]], axis=1)


def _adjust_intensity(u: jax.Array, noise: jax.Array, image: jax.Array,
                      config: AugmentConfig) -> jax.Array:
  """Brightness, contrast, gamma, noise on one float32 [h, w, c] image.

  Args:
    u: [_NUM_UNIFORMS] uniform[0, 1) draws for this image.
    noise: [h, w, c] standard normal draws, or None without noise.
    image: [h, w, c] float32.
    config: the augmentation config.
  """
  if config.brightness:
    image = image + _symmetric(u[_BRIGHTNESS], config.brightness)
  if config.contrast:
    factor = 1. + _symmetric(u[_CONTRAST], config.contrast)
    mean = jnp.mean(image)
    image = mean + factor * (image - mean)
  if config.gamma:
    exponent = jnp.exp(_symmetric(u[_GAMMA], config.gamma))
    image = jnp.clip(image, 0., 1.) ** exponent  # Clip: no NaN from x < 0.
  if config.noise_std:
    image = image + config.noise_std * noise
  return image


def _augment_image(key: jax.Array, image: jax.Array,
                   config: AugmentConfig) -> jax.Array:
  """Augments one float32 [height, width, channels] image."""
  # One draw for all scalar parameters (few RNG calls keep compiles fast);
  # a parameter's draw does not depend on which others are enabled.
  params_key, noise_key = jax.random.split(key)
  u = jax.random.uniform(params_key, (_NUM_UNIFORMS,))
  if config.is_geometric:
    height, width, _ = image.shape
    matrix = _sample_matrix(u, config, height, width)
    image = affine_warp(image, matrix, config.fill_mode)
  if config.is_intensity:
    noise = None
    if config.noise_std:
      noise = jax.random.normal(noise_key, image.shape)
    image = _adjust_intensity(u, noise, image, config)
  return jnp.clip(image, 0., 1.)


def augment_batch(rng: jax.Array, images: jax.Array,
                  config: Union[str, AugmentConfig]) -> jax.Array:
  """Randomly augments a batch of images, each with its own key.

  Deterministic given `rng`. Under `jax.jit`, pass `config` as a static
  argument: `jax.jit(augment_batch, static_argnames='config')`.

  Args:
    rng: PRNG key.
    images: [batch, height, width, channels] float (e.g. float32, bfloat16)
      in [0, 1].
    config: an `AugmentConfig` or a `PRESETS` name.

  Returns:
    [batch, height, width, channels], same dtype, in [0, 1]. An identity
    config returns `images` itself, untouched.
  """
  config = get_augment(config)
  if images.ndim != 4:
    raise ValueError('images must be [batch, height, width, channels], got '
                     f'shape {images.shape}')
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(f'images must be floating point in [0, 1], got '
                    f'{images.dtype}')
  if config.is_identity:
    return images
  return _augment_batch(rng, images, config)


@functools.partial(jax.jit, static_argnames='config')
def _augment_batch(rng: jax.Array, images: jax.Array,
                   config: AugmentConfig) -> jax.Array:
  """`augment_batch` for a non-identity config; jitted as a whole so that
  eager calls compile once instead of op by op (inlined under an outer jit).
  """
  keys = jax.random.split(rng, images.shape[0])
  augmented = jax.vmap(lambda key, image: _augment_image(key, image, config))(
      keys, images.astype(jnp.float32))
  return augmented.astype(images.dtype)
