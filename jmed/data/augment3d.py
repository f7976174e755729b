"""On-device augmentation of volumes [batch, depth, height, width, channels] (CT, MRI, shape
masks), jit-able, one key per example.

Geometry: flips per axis and 90-degree rotations in chosen planes (exact index operations),
then one resampling for shifts, small rotations and scaling (trilinear for volumes, nearest for
label masks, zeros outside). Intensity (brightness, contrast, noise) only changes volumes,
never labels. The config is static (a frozen dataclass, hashable), so each preset compiles once.

`jmed.data.augment` dispatches here for a `VolumeAugmentConfig`; this module does not import it.
"""

import dataclasses
import math
from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from jmed.errors import ConfigError

AXES = ('depth', 'height', 'width')  # spatial axis i of a volume [d, h, w, c]


@dataclasses.dataclass(frozen=True)
class VolumeAugmentConfig:
  """A 3D augmentation (all off by default).

  Attributes:
    flip_axes: spatial axes (0 depth, 1 height, 2 width) each flipped with probability 1/2.
    rot90_planes: planes (pairs of spatial axes of equal size) each rotated by k * 90 degrees,
      k uniform in {0, 1, 2, 3}.
    shift: largest translation per axis, a fraction of that axis' size (uniform).
    rotate_degrees: largest rotation about each spatial axis (uniform, degrees).
    scale: largest relative zoom, uniform in [1 - scale, 1 + scale] (isotropic).
    brightness: largest additive intensity change (uniform, volumes in [0, 1]).
    contrast: largest relative contrast change about the volume's mean (uniform).
    noise_std: standard deviation of additive Gaussian noise.
    clip: clip volumes to [0, 1] after the intensity changes.
  """

  flip_axes: Tuple[int, ...] = ()
  rot90_planes: Tuple[Tuple[int, int], ...] = ()
  shift: float = 0.0
  rotate_degrees: float = 0.0
  scale: float = 0.0
  brightness: float = 0.0
  contrast: float = 0.0
  noise_std: float = 0.0
  clip: bool = True

  def __post_init__(self):
    if any(a not in (0, 1, 2) for a in self.flip_axes):
      raise ConfigError(f'flip_axes must be spatial axes 0, 1 or 2, got {self.flip_axes}.')
    for plane in self.rot90_planes:
      if len(plane) != 2 or plane[0] == plane[1] or any(a not in (0, 1, 2) for a in plane):
        raise ConfigError(f'rot90_planes: each plane is two different axes of 0, 1, 2, got '
                          f'{self.rot90_planes}.')
    for name in ('shift', 'rotate_degrees', 'scale', 'brightness', 'contrast', 'noise_std'):
      if getattr(self, name) < 0:
        raise ConfigError(f'{name} must be >= 0, got {getattr(self, name)}.')

  @property
  def resamples(self) -> bool:
    return bool(self.shift or self.rotate_degrees or self.scale)


PRESETS: Dict[str, VolumeAugmentConfig] = {
    # Binary shape masks (AdrenalMNIST3D, VesselMNIST3D): exact flips, in-plane quarter turns,
    # small shifts; no intensity change (the values are the shape).
    'shape_volume': VolumeAugmentConfig(flip_axes=(0, 1, 2), rot90_planes=((1, 2),),
                                        shift=0.08),
    # CT / MRI intensities (NoduleMNIST3D, OrganMNIST3D, FractureMNIST3D): left-right flips,
    # shifts, small rotations and zoom, brightness / contrast / noise.
    'ct_volume': VolumeAugmentConfig(flip_axes=(2,), shift=0.08, rotate_degrees=10.0,
                                     scale=0.1, brightness=0.1, contrast=0.15, noise_std=0.02),
}


def augment_batch(rng: jax.Array, volumes: jax.Array, config, labels: Optional[jax.Array] = None):
  """Augments each volume (and its label mask) with its own key.

  Args:
    rng: a PRNG key; split into one key per example.
    volumes: [batch, depth, height, width, channels] float.
    config: a `VolumeAugmentConfig` or a `PRESETS` name (static).
    labels: optional int masks [batch, depth, height, width], transformed with the same
      geometry (nearest neighbour, 0 outside).

  Returns:
    volumes of the same shape and dtype, or (volumes, labels) when labels are given.
  """
  config = get_config(config)
  if volumes.ndim != 5:
    raise ValueError(f'augment3d expects [batch, depth, height, width, channels], got '
                     f'{volumes.shape}.')
  _check_planes(config, volumes.shape[1:4])
  keys = jax.random.split(rng, volumes.shape[0])
  if labels is None:
    return jax.vmap(lambda k, v: _one(k, v, None, config)[0])(keys, volumes)
  if labels.shape != volumes.shape[:4]:
    raise ValueError(f'labels {labels.shape} do not match volumes {volumes.shape}.')
  return jax.vmap(lambda k, v, y: _one(k, v, y, config))(keys, volumes, labels)


def get_config(name_or_config) -> VolumeAugmentConfig:
  """A `VolumeAugmentConfig` from itself or a `PRESETS` name."""
  if isinstance(name_or_config, VolumeAugmentConfig):
    return name_or_config
  if name_or_config not in PRESETS:
    raise ConfigError(f'Unknown 3D augmentation {name_or_config!r}; presets: {sorted(PRESETS)}.')
  return PRESETS[name_or_config]


def _check_planes(config, spatial):
  for a, b in config.rot90_planes:
    if spatial[a] != spatial[b]:
      raise ConfigError(f'rot90_planes ({a}, {b}): axes {AXES[a]} and {AXES[b]} differ in size '
                        f'({spatial}); quarter turns need a square plane.')


def _one(key, volume, labels, config):
  """One example: volume [d, h, w, c], labels [d, h, w] or None."""
  k_flip, k_rot, k_affine, k_int = jax.random.split(key, 4)
  volume = _exact_geometry(k_flip, k_rot, volume, config)
  if labels is not None:
    labels = _exact_geometry(k_flip, k_rot, labels[..., None], config)[..., 0]
  if config.resamples:
    matrix, offset = _affine(k_affine, volume.shape[:3], config)
    volume = _resample(volume, matrix, offset, order=1)
    if labels is not None:
      labels = _resample(labels[..., None], matrix, offset, order=0)[..., 0]
  return _intensity(k_int, volume, config), labels


def _exact_geometry(k_flip, k_rot, x, config):
  """Flips and quarter turns of x [d, h, w, c] (same keys -> same geometry)."""
  flips = jax.random.bernoulli(k_flip, 0.5, (len(config.flip_axes),))
  for i, axis in enumerate(config.flip_axes):
    x = jnp.where(flips[i], jnp.flip(x, axis), x)
  turns = jax.random.randint(k_rot, (len(config.rot90_planes),), 0, 4)
  for i, plane in enumerate(config.rot90_planes):
    x = jax.lax.switch(turns[i], [lambda v, k=k: jnp.rot90(v, k, axes=plane) for k in range(4)],
                       x)
  return x


def _affine(key, spatial, config):
  """(matrix [3, 3], offset [3]): output voxel p reads input `matrix @ p + offset`."""
  k_angle, k_scale, k_shift = jax.random.split(key, 3)
  angles = jax.random.uniform(k_angle, (3,), minval=-1, maxval=1) * math.radians(
      config.rotate_degrees)
  zoom = 1 + jax.random.uniform(k_scale, (), minval=-1, maxval=1) * config.scale
  shift = (jax.random.uniform(k_shift, (3,), minval=-1, maxval=1) * config.shift
           * jnp.asarray(spatial, jnp.float32))
  matrix = _rotation(angles) / zoom  # inverse map: rotate back and unzoom
  centre = (jnp.asarray(spatial, jnp.float32) - 1) / 2
  offset = centre - matrix @ (centre + shift)
  return matrix, offset


def _rotation(angles):
  """Rotation matrix [3, 3] about the depth, height and width axes by `angles` (radians)."""
  def plane(i, j, t):
    m = jnp.eye(3)
    c, s = jnp.cos(t), jnp.sin(t)
    return m.at[i, i].set(c).at[j, j].set(c).at[i, j].set(-s).at[j, i].set(s)
  return plane(1, 2, angles[0]) @ plane(0, 2, angles[1]) @ plane(0, 1, angles[2])


def _resample(x, matrix, offset, order):
  """x [d, h, w, c] sampled at `matrix @ p + offset` for every voxel p (zeros outside)."""
  grid = jnp.stack(jnp.meshgrid(*[jnp.arange(n, dtype=jnp.float32) for n in x.shape[:3]],
                                indexing='ij'))
  coords = jnp.einsum('ij,j...->i...', matrix, grid) + offset[:, None, None, None]
  sample = lambda channel: jax.scipy.ndimage.map_coordinates(
      channel.astype(jnp.float32), list(coords), order=order, mode='constant', cval=0)
  out = jax.vmap(sample, in_axes=-1, out_axes=-1)(x)
  return out.astype(x.dtype) if order else jnp.round(out).astype(x.dtype)


def _intensity(key, volume, config):
  """Brightness, contrast and noise of volume [d, h, w, c] (unchanged when all are 0)."""
  if not (config.brightness or config.contrast or config.noise_std):
    return volume
  k_b, k_c, k_n = jax.random.split(key, 3)
  mean = volume.mean()
  factor = 1 + jax.random.uniform(k_c, (), minval=-1, maxval=1) * config.contrast
  delta = jax.random.uniform(k_b, (), minval=-1, maxval=1) * config.brightness
  out = (volume - mean) * factor + mean + delta
  if config.noise_std:
    out = out + config.noise_std * jax.random.normal(k_n, volume.shape)
  if config.clip:
    out = jnp.clip(out, 0, 1)
  return out.astype(volume.dtype)
