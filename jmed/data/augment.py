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

Segmentation: `augment_batch(rng, images, config, labels=masks)` moves each int
mask [batch, height, width] through the SAME geometric map as its image
(resampled nearest-neighbour, so class ids stay class ids); intensity changes
touch the images alone. Elastic deformation (the U-Net paper's: random
displacements on a coarse grid, smoothly interpolated to every pixel) joins the
affine map in the same single resampling. `patch_size` crops one random window
per example from the (augmented) image and mask, computed only over the window.

3D: a `jmed.data.augment3d.VolumeAugmentConfig` (or one of its presets, merged
into `PRESETS`) dispatches to `jmed.data.augment3d.augment_batch` for volumes
[batch, depth, height, width, channels].

Usage:

  config = get_augment('chest_xray')
  augment = jax.jit(augment_batch, static_argnames='config')
  images = augment(rng, images, config)    # [batch, height, width, channels]
  images, masks = augment_batch(rng, images, 'em_segmentation', labels=masks)

`config` is static under `jax.jit`: an `AugmentConfig` is a frozen (hashable)
dataclass, and a preset name is a string; each distinct config compiles once.
"""

import dataclasses
import functools
import math
from typing import Dict

import jax
import jax.numpy as jnp

from jmed.data import augment3d
from jmed.errors import ConfigError

FILL_MODES = ('constant', 'nearest', 'reflect')


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
    elastic_sigma: elastic deformation (Ronneberger et al. 2015): standard
      deviation, in pixels, of random displacements drawn on an
      `elastic_grid` x `elastic_grid` grid spanning the image and interpolated
      bicubically to a smooth dense displacement field (0: off).
    elastic_grid: control points per side of the elastic grid (>= 2).
    fill_mode: value for pixels mapped from outside the image: 'constant'
      (0, black), 'nearest' (replicate the edge) or 'reflect' (mirror, as the
      U-Net paper extrapolates; masks are mirrored too).
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
  elastic_sigma: float = 0.
  elastic_grid: int = 3
  fill_mode: str = 'constant'

  def __post_init__(self):
    if not (isinstance(self.elastic_grid, int) and self.elastic_grid >= 2):
      raise ConfigError('AugmentConfig.elastic_grid must be an int >= 2, got '
                        f'{self.elastic_grid!r}')
    for field in ('rotate_degrees', 'translate_pixels', 'scale', 'brightness',
                  'contrast', 'gamma', 'noise_std', 'elastic_sigma'):
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
                or self.rotate_degrees or self.translate_pixels or self.scale
                or self.elastic_sigma)

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
    # Electron microscopy (ISBI 2012 membranes), the U-Net paper's recipe for
    # 30 training slices: a section has no orientation, so all 8 flips/rot90s;
    # elastic deformation (3x3 grid, 10 px std) models the tissue's plausible
    # deformations, the paper's key augmentation; mirrored borders as in the
    # paper. Small brightness/contrast for staining and exposure differences
    # between sections. For segmentation the masks follow the geometry.
    'em_segmentation': AugmentConfig(
        flip_horizontal=True, flip_vertical=True, rotate90=True,
        elastic_sigma=10., elastic_grid=3, brightness=0.05, contrast=0.1,
        fill_mode='reflect'),
}
PRESETS.update(augment3d.PRESETS)  # 3D presets: `VolumeAugmentConfig`s


def get_augment(name_or_config):
  """Returns the config (`AugmentConfig`, or a 3D `VolumeAugmentConfig`) of a
  preset name, or `config` itself."""
  if isinstance(name_or_config, (AugmentConfig, augment3d.VolumeAugmentConfig)):
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
    fill_mode: one of `FILL_MODES` for positions outside the image.

  Returns:
    [height, width, channels], float32.
  """
  if fill_mode not in FILL_MODES:
    raise ValueError(f'fill_mode must be one of {FILL_MODES}, got '
                     f'{fill_mode!r}')
  height, width, _ = image.shape
  rows, cols = _grid(jnp.zeros(2), height, width)
  coords = _apply_affine(matrix, rows, cols)
  return resample(image, coords, order=1, fill_mode=fill_mode)


def _grid(offset: jax.Array, height: int, width: int):
  """Row and column indices [height, width] of a window starting at `offset`."""
  return jnp.meshgrid(offset[0] + jnp.arange(height, dtype=jnp.float32),
                      offset[1] + jnp.arange(width, dtype=jnp.float32),
                      indexing='ij')


def _apply_affine(matrix: jax.Array, rows: jax.Array, cols: jax.Array):
  """The source (rows, cols) of output pixels under a [2, 3] pull-back."""
  matrix = jnp.asarray(matrix, jnp.float32)[:2]
  return (matrix[0, 0] * rows + matrix[0, 1] * cols + matrix[0, 2],
          matrix[1, 0] * rows + matrix[1, 1] * cols + matrix[1, 2])


def resample(image: jax.Array, coords, order: int = 1,
             fill_mode: str = 'constant') -> jax.Array:
  """Samples image [h, w, channels] at source positions `coords` (rows, cols,
  each [out_h, out_w]); order 1 bilinear, 0 nearest. Returns float32
  [out_h, out_w, channels]."""
  def one_channel(channel):
    return jax.scipy.ndimage.map_coordinates(
        channel, coords, order=order, mode=fill_mode, cval=0.)
  return jax.vmap(one_channel, in_axes=-1, out_axes=-1)(
      image.astype(jnp.float32))


def elastic_displacement(key: jax.Array, height: int, width: int,
                         sigma: float, grid: int = 3) -> jax.Array:
  """A smooth random displacement field [2, height, width] in pixels.

  The U-Net paper's elastic deformation: displacements of standard deviation
  `sigma` on a coarse `grid` x `grid` lattice spanning the image, interpolated
  bicubically (`jax.image.resize`) to every pixel. Zero for sigma 0.
  """
  coarse = sigma * jax.random.normal(key, (2, grid, grid))
  return jax.image.resize(coarse, (2, height, width), 'cubic')


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




def _source_coords(key: jax.Array, u: jax.Array, config: AugmentConfig,
                   shape, offset: jax.Array, out_shape):
  """Where each output pixel of the window at `offset` (size `out_shape`) is
  sampled from: the affine pull-back plus the elastic displacement."""
  height, width = shape
  rows, cols = _grid(offset, *out_shape)
  rows, cols = _apply_affine(_sample_matrix(u, config, height, width),
                             rows, cols)
  if config.elastic_sigma:
    field = elastic_displacement(key, height, width, config.elastic_sigma,
                                 config.elastic_grid)
    field = jax.lax.dynamic_slice(
        field, (0, offset[0].astype(jnp.int32), offset[1].astype(jnp.int32)),
        (2,) + tuple(out_shape))
    rows, cols = rows + field[0], cols + field[1]
  return rows, cols


def _augment_example(key: jax.Array, image: jax.Array, mask, config,
                     patch_size: int):
  """Augments one float32 [h, w, c] image (and its [h, w] mask, or None),
  returning the [patch_size, patch_size] window when patch_size > 0."""
  # One draw for all scalar parameters (few RNG calls keep compiles fast);
  # a parameter's draw does not depend on which others are enabled.
  params_key, noise_key = jax.random.split(key)
  u = jax.random.uniform(params_key, (_NUM_UNIFORMS,))
  height, width, _ = image.shape
  out_shape, offset = (height, width), jnp.zeros(2, jnp.int32)
  if patch_size:
    out_shape = (patch_size, patch_size)
    offset = jax.random.randint(jax.random.fold_in(key, 1), (2,), 0,
                                jnp.array([height, width]) - patch_size + 1)
  if config.is_geometric:
    coords = _source_coords(jax.random.fold_in(key, 2), u, config,
                            (height, width), offset.astype(jnp.float32),
                            out_shape)
    image = resample(image, coords, 1, config.fill_mode)
    if mask is not None:
      mask = resample(mask[..., None].astype(jnp.float32), coords, 0,
                      config.fill_mode)[..., 0]
  elif patch_size:
    image = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0),
                                  out_shape + image.shape[-1:])
    if mask is not None:
      mask = jax.lax.dynamic_slice(mask, tuple(offset), out_shape)
  if config.is_intensity:
    noise = None
    if config.noise_std:
      noise = jax.random.normal(noise_key, image.shape)
    image = _adjust_intensity(u, noise, image, config)
  return jnp.clip(image, 0., 1.), mask


def augment_batch(rng: jax.Array, images: jax.Array, config, labels=None, *,
                  patch_size: int = 0):
  """Randomly augments a batch of images (and masks), each with its own key.

  Deterministic given `rng`. Under `jax.jit`, pass `config` and `patch_size`
  as static arguments: `jax.jit(augment_batch, static_argnames='config')`.

  Args:
    rng: PRNG key.
    images: [batch, height, width, channels] float (e.g. float32, bfloat16)
      in [0, 1]; volumes [batch, depth, height, width, channels] for a 3D
      `VolumeAugmentConfig` (handled by `jmed.data.augment3d.augment_batch`).
    config: an `AugmentConfig`, a `VolumeAugmentConfig` or a `PRESETS` name.
    labels: optional int masks [batch, height, width] (segmentation): moved by
      the same geometric map as their image, resampled nearest-neighbour (with
      fill_mode 'constant', pixels from outside the image get class 0);
      intensity changes do not touch them.
    patch_size: > 0: return one random patch_size x patch_size window of each
      augmented image (and of its mask at the same place); 2D only.

  Returns:
    images [batch, height, width, channels] (or [batch, patch, patch,
    channels]), same dtype, in [0, 1]; with `labels`, (images, labels) with
    labels in their own dtype. An identity config without patches returns
    its inputs themselves, untouched.
  """
  config = get_augment(config)
  if isinstance(config, augment3d.VolumeAugmentConfig):
    if patch_size:
      raise ConfigError('patch_size applies to 2D images, not to volumes.')
    return augment3d.augment_batch(rng, images, config, labels)
  if images.ndim != 4:
    raise ValueError('images must be [batch, height, width, channels], got '
                     f'shape {images.shape}')
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(f'images must be floating point in [0, 1], got '
                    f'{images.dtype}')
  _check_patch(patch_size, images.shape)
  if labels is not None and labels.shape != images.shape[:3]:
    raise ValueError(f'labels must be masks [batch, height, width] of the '
                     f'images {images.shape}, got shape {labels.shape}')
  if config.is_identity and not patch_size:
    return images if labels is None else (images, labels)
  out, masks = _augment_batch(rng, images, labels, config, patch_size)
  return out if labels is None else (out, masks)


def _check_patch(patch_size: int, shape) -> None:
  if patch_size < 0 or patch_size > min(shape[1:3]):
    raise ConfigError(f'patch_size must be in [0, {min(shape[1:3])}] for '
                      f'images {tuple(shape)}, got {patch_size}')


@functools.partial(jax.jit, static_argnames=('config', 'patch_size'))
def _augment_batch(rng: jax.Array, images: jax.Array, labels,
                   config: AugmentConfig, patch_size: int):
  """`augment_batch` for a non-identity config or patches; jitted as a whole
  so that eager calls compile once instead of op by op (inlined under an outer
  jit)."""
  keys = jax.random.split(rng, images.shape[0])
  augment = functools.partial(_augment_example, config=config,
                              patch_size=patch_size)
  out, masks = jax.vmap(augment)(keys, images.astype(jnp.float32), labels)
  if labels is not None:
    masks = jnp.round(masks).astype(labels.dtype)
  return out.astype(images.dtype), masks
