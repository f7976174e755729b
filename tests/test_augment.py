"""Tests of jmed.data.augment: on-device, jit-able image augmentation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmed.data import augment
from jmed.data.augment import AugmentConfig

RNG = jax.random.PRNGKey(0)
FULL = AugmentConfig(
    flip_horizontal=True, flip_vertical=True, rotate90=True,
    rotate_degrees=20., translate_pixels=3., scale=0.2, brightness=0.2,
    contrast=0.3, gamma=0.3, noise_std=0.05)


def _images(batch=8, height=12, width=12, channels=1, seed=0):
  """Distinct random images in [0, 1]: [batch, height, width, channels]."""
  rng = np.random.default_rng(seed)
  return rng.uniform(size=(batch, height, width, channels)).astype(np.float32)


@pytest.mark.parametrize('config', [FULL, 'chest_xray', 'dermoscopy',
                                    'pathology', 'retina', 'digits'])
def test_shape_dtype_range(config):
  images = jnp.asarray(_images(channels=3, height=10, width=14))
  out = augment.augment_batch(RNG, images, config)
  assert out.shape == images.shape and out.dtype == images.dtype
  assert np.all(np.isfinite(out))
  assert out.min() >= 0. and out.max() <= 1.


def test_deterministic_per_key():
  images = jnp.asarray(_images())
  first = augment.augment_batch(RNG, images, FULL)
  again = augment.augment_batch(RNG, images, FULL)
  other = augment.augment_batch(jax.random.PRNGKey(1), images, FULL)
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, other)


def test_examples_get_different_draws():
  image = _images(batch=1)
  images = jnp.asarray(np.repeat(image, 8, axis=0))
  out = np.asarray(augment.augment_batch(RNG, images, FULL))
  assert not np.allclose(out[0], out[1])


@pytest.mark.parametrize('config', ['none', AugmentConfig(),
                                    AugmentConfig(fill_mode='nearest')])
def test_identity_returns_input(config):
  images = jnp.asarray(_images())
  out = augment.augment_batch(RNG, images, config)
  assert out is images


def test_flip_horizontal():
  images = _images(batch=16)
  out = np.asarray(augment.augment_batch(
      RNG, jnp.asarray(images), AugmentConfig(flip_horizontal=True)))
  flipped = []
  for image, result in zip(images, out):
    if np.array_equal(result, image):
      flipped.append(False)
    else:
      np.testing.assert_array_equal(result, image[:, ::-1])
      flipped.append(True)
  assert any(flipped) and not all(flipped)


def test_rotate90():
  images = _images(batch=32)
  out = np.asarray(augment.augment_batch(
      RNG, jnp.asarray(images), AugmentConfig(rotate90=True)))
  seen = set()
  for image, result in zip(images, out):
    matches = [k for k in range(4)
               if np.array_equal(result, np.rot90(image, k, axes=(0, 1)))]
    assert len(matches) == 1
    seen.add(matches[0])
  assert seen == {0, 1, 2, 3}


def test_dihedral_is_exact():
  images = _images(batch=16, channels=3)
  config = AugmentConfig(flip_horizontal=True, flip_vertical=True,
                         rotate90=True)
  out = np.asarray(augment.augment_batch(RNG, jnp.asarray(images), config))
  for image, result in zip(images, out):
    versions = [np.rot90(flipped, k, axes=(0, 1))
                for flipped in (image, image[:, ::-1])
                for k in range(4)]
    assert any(np.array_equal(result, v) for v in versions)


def test_affine_warp_translation():
  image = _images(batch=1, height=6, width=7, channels=2)[0]
  right = np.zeros_like(image)
  right[:, 1:] = image[:, :-1]
  out = augment.affine_warp(image, jnp.array([[1., 0., 0.], [0., 1., -1.]]))
  np.testing.assert_array_equal(out, right)
  down = np.zeros_like(image)
  down[1:] = image[:-1]
  out = augment.affine_warp(image, jnp.array([[1., 0., -1.], [0., 1., 0.],
                                              [0., 0., 1.]]))
  np.testing.assert_array_equal(out, down)


def test_affine_warp_nearest_fill():
  image = _images(batch=1, height=5, width=5)[0]
  out = augment.affine_warp(image, jnp.array([[1., 0., 0.], [0., 1., -1.]]),
                            fill_mode='nearest')
  np.testing.assert_array_equal(out[:, 1:], image[:, :-1])
  np.testing.assert_array_equal(out[:, 0], image[:, 0])


def test_affine_warp_rotate90():
  image = _images(batch=1, height=9, width=9, channels=3)[0]
  n = image.shape[0]
  # Pull-back of np.rot90: out[i, j] = in[j, n - 1 - i].
  matrix = jnp.array([[0., 1., 0.], [-1., 0., n - 1.]])
  out = augment.affine_warp(image, matrix)
  np.testing.assert_array_equal(out, np.rot90(image, axes=(0, 1)))


def test_affine_warp_half_pixel_is_bilinear():
  image = _images(batch=1, height=4, width=4)[0]
  out = np.asarray(augment.affine_warp(
      image, jnp.array([[1., 0., 0.], [0., 1., 0.5]])))
  np.testing.assert_allclose(out[:, :-1], (image[:, :-1] + image[:, 1:]) / 2,
                             rtol=1e-6)


def test_small_rotation_changes_little():
  # A smooth image barely changes under a 1-degree rotation.
  x = np.linspace(0., 1., 16, dtype=np.float32)
  image = np.broadcast_to(x[None, :, None] * x[:, None, None], (16, 16, 1))
  images = jnp.asarray(np.stack([image] * 4))
  out = augment.augment_batch(RNG, images, AugmentConfig(rotate_degrees=1.))
  assert np.abs(np.asarray(out) - images)[:, 2:-2, 2:-2].max() < 0.05


def test_intensity_in_range():
  images = jnp.asarray(_images())
  config = AugmentConfig(brightness=0.5, contrast=0.9, gamma=1.,
                         noise_std=0.5)
  out = np.asarray(augment.augment_batch(RNG, images, config))
  assert out.min() >= 0. and out.max() <= 1.
  assert np.all(np.isfinite(out))
  assert not np.allclose(out, images)


def test_brightness_is_per_image_constant():
  images = jnp.asarray(_images() * 0.5 + 0.25)  # In [0.25, 0.75].
  out = np.asarray(augment.augment_batch(
      RNG, images, AugmentConfig(brightness=0.2)))
  delta = out - np.asarray(images)
  np.testing.assert_allclose(delta, delta[:, :1, :1, :1] + 0 * delta,
                             atol=1e-6)
  assert np.abs(delta).max() <= 0.2 + 1e-6


def test_jit():
  images = jnp.asarray(_images())
  jitted = jax.jit(augment.augment_batch, static_argnames='config')
  np.testing.assert_allclose(jitted(RNG, images, FULL),
                             augment.augment_batch(RNG, images, FULL),
                             atol=1e-5)
  out = jitted(RNG, images, 'chest_xray')
  assert out.shape == images.shape
  np.testing.assert_array_equal(jitted(RNG, images, 'none'), images)


def test_bfloat16():
  images = jnp.asarray(_images(), jnp.bfloat16)
  out = jax.jit(augment.augment_batch, static_argnames='config')(
      RNG, images, FULL)
  assert out.dtype == jnp.bfloat16 and out.shape == images.shape
  out = np.asarray(out, np.float32)
  assert out.min() >= 0. and out.max() <= 1.
  flipped = augment.augment_batch(RNG, images,
                                  AugmentConfig(flip_horizontal=True))
  for image, result in zip(np.asarray(images, np.float32),
                           np.asarray(flipped, np.float32)):
    assert (np.array_equal(result, image)
            or np.array_equal(result, image[:, ::-1]))


def test_get_augment():
  assert augment.get_augment('chest_xray') is augment.PRESETS['chest_xray']
  assert augment.get_augment(FULL) is FULL
  assert augment.get_augment('none').is_identity
  with pytest.raises(ValueError, match='chest_xray'):
    augment.get_augment('ct_scan')
  with pytest.raises(ValueError, match='valid presets'):
    augment.augment_batch(RNG, jnp.asarray(_images()), 'ct_scan')


def test_presets_respect_anatomy():
  chest = augment.PRESETS['chest_xray']
  assert not (chest.flip_horizontal or chest.flip_vertical or chest.rotate90)
  digits = augment.PRESETS['digits']
  assert not (digits.flip_horizontal or digits.flip_vertical
              or digits.rotate90)
  assert not augment.PRESETS['retina'].flip_vertical
  for name in ('dermoscopy', 'pathology'):
    preset = augment.PRESETS[name]
    assert preset.flip_horizontal and preset.flip_vertical and preset.rotate90
  for name, preset in augment.PRESETS.items():
    hash(preset)  # Usable as a static jit argument (3D presets too).
    if isinstance(preset, AugmentConfig):  # 3D presets: tests/ of augment3d
      assert preset.is_identity == (name == 'none')


def test_config_validation():
  with pytest.raises(ValueError, match='fill_mode'):
    AugmentConfig(fill_mode='wrap')
  with pytest.raises(ValueError, match='rotate_degrees'):
    AugmentConfig(rotate_degrees=-1.)
  with pytest.raises(ValueError, match='scale'):
    AugmentConfig(scale=1.)
  with pytest.raises(ValueError, match='shape'):
    augment.augment_batch(RNG, jnp.zeros((4, 4, 1)), FULL)
  with pytest.raises(TypeError):
    augment.augment_batch(RNG, jnp.zeros((1, 4, 4, 1), jnp.uint8), FULL)
  assert dataclasses.replace(FULL, noise_std=0.) != FULL


def test_jitted_batch_compiles_once_for_every_key():
  """Under jit, with the config static, new keys reuse one compiled program; the outputs keep
  shape, dtype and range, differ across keys and repeat for the same key."""
  images = jnp.asarray(_images(batch=16, height=28, width=28))
  jitted = jax.jit(augment.augment_batch, static_argnames='config')
  # jit wrappers of one function share their cache: count the programs this test adds.
  cache_size = jitted._cache_size  # pylint: disable=protected-access
  before = cache_size()
  outs = [jitted(jax.random.PRNGKey(i), images, 'chest_xray') for i in range(5)]
  assert cache_size() == before + 1
  for out in outs:
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0. and out.max() <= 1.
    assert not np.allclose(out, images)
  for a in range(5):
    for b in range(a + 1, 5):
      assert not np.allclose(outs[a], outs[b]), (a, b)
  np.testing.assert_array_equal(jitted(jax.random.PRNGKey(3), images, 'chest_xray'), outs[3])
  assert cache_size() == before + 1
  jitted(RNG, images, 'none')  # another config is another (here trivial) program
  assert cache_size() == before + 2
