"""Segmentation pieces: soft Dice and Dice/IoU metrics against NumPy, sliding-window inference,
joint image + mask augmentation (elastic deformation included) and on-device patch sampling."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmed import metrics as jmetrics
from jmed import segmentation as seg
from jmed.data import augment
from jmed.data import augment3d
from jmed.data.augment import AugmentConfig

RNG = jax.random.key(0)
GEOMETRY = AugmentConfig(flip_horizontal=True, flip_vertical=True, rotate90=True,
                         rotate_degrees=15., scale=0.1, translate_pixels=2., elastic_sigma=3.,
                         fill_mode='reflect')


def _blocks(batch=6, size=32, block=4, seed=0):
  """Piecewise-constant images [batch, size, size, 1] (block x block tiles of random grey
  levels away from 0.5) and their masks: 1 where brighter than 0.5."""
  rng = np.random.default_rng(seed)
  tiles = rng.choice([0.15, 0.3, 0.7, 0.85], size=(batch, size // block, size // block))
  images = np.kron(tiles, np.ones((block, block)))[..., None].astype(np.float32)
  return images, (images[..., 0] > 0.5).astype(np.int32)


# --- Dice against NumPy. ---


def _numpy_soft_dice_loss(logits, masks, smooth=1.0):
  e = np.exp(logits - logits.max(-1, keepdims=True))
  p = e / e.sum(-1, keepdims=True)
  t = np.eye(logits.shape[-1])[masks]
  inter = (p * t).sum((1, 2))
  dice = (2 * inter + smooth) / (p.sum((1, 2)) + t.sum((1, 2)) + smooth)
  return 1 - dice.mean(-1)


def test_soft_dice_and_split_metrics_match_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 9, 7, 4)).astype(np.float32) * 3
  masks = rng.integers(0, 4, size=(3, 9, 7))
  np.testing.assert_allclose(seg.dice_loss(logits, masks), _numpy_soft_dice_loss(logits, masks),
                             rtol=1e-5)
  pred = logits.argmax(-1)
  got = jmetrics.segmentation_metrics(pred, masks, 4)
  dice, iou = [], []
  for k in range(1, 4):
    p, t = pred == k, masks == k
    dice.append(2 * np.sum(p & t) / (p.sum() + t.sum()))
    iou.append(np.sum(p & t) / np.sum(p | t))
  assert got['dice'] == pytest.approx(np.mean(dice))
  assert got['iou'] == pytest.approx(np.mean(iou))
  assert got['dice_per_class'][1:] == pytest.approx(dice)
  assert got['pixel_accuracy'] == pytest.approx(np.mean(pred == masks))


# --- Sliding-window inference. ---


def _pointwise(x):  # translation-equivariant, receptive field 1: windows cannot change it
  return jnp.concatenate([2 * x - 1, jnp.sin(3 * x)], -1)


@pytest.mark.parametrize('shape, window, stride, weighting', [
    ((2, 40, 33, 1), 16, 8, 'gaussian'),
    ((2, 40, 33, 1), 16, 5, 'flat'),
    ((1, 12, 20, 1), 16, 0, 'gaussian'),  # smaller than the window: padded, cropped back
])
def test_sliding_window_equals_whole_image_for_a_pointwise_model(shape, window, stride,
                                                                 weighting):
  x = jax.random.uniform(RNG, shape)
  out = jax.jit(seg.sliding_window, static_argnums=(0, 2, 3, 4))(_pointwise, x, window, stride,
                                                                  weighting)
  assert out.shape == shape[:3] + (2,)
  np.testing.assert_allclose(out, _pointwise(x), atol=1e-5)


def test_sliding_window_with_one_window_is_the_model_on_the_whole_image():
  from jmed.models.unet import UNet  # pylint: disable=g-import-not-at-top
  model = UNet(num_classes=2, features=(4,))
  x = jax.random.uniform(RNG, (2, 16, 16, 1))
  variables = model.init(RNG, x)
  apply_fn = lambda images: model.apply(variables, images)
  np.testing.assert_allclose(seg.sliding_window(apply_fn, x, 16, 8), apply_fn(x), atol=1e-6)


def test_sliding_window_averages_overlaps_with_their_weights():
  """A model that is NOT translation equivariant (it adds each tile's own row ramp): every
  pixel must be the weighted mean of the tiles covering it (NumPy reference)."""
  window, stride = 8, 3
  x = np.asarray(jax.random.uniform(RNG, (1, 14, 10, 1)))
  ramp = np.arange(window, dtype=np.float32)[:, None, None]
  fn = lambda tiles: tiles + ramp
  out = np.asarray(seg.sliding_window(fn, jnp.asarray(x), window, stride))
  weight = np.asarray(seg.window_weights(window))
  total, norm = np.zeros((14, 10, 1)), np.zeros((14, 10, 1))
  assert seg.window_starts(14, 8, 3) == [0, 3, 6] and seg.window_starts(10, 8, 3) == [0, 2]
  assert seg.num_windows(14, 10, 8, 3) == 6
  for r in (0, 3, 6):
    for c in (0, 2):
      w = weight[:, :, None]
      total[r:r + 8, c:c + 8] += w * (x[0, r:r + 8, c:c + 8] + ramp)
      norm[r:r + 8, c:c + 8] += w
  np.testing.assert_allclose(out[0], total / norm, rtol=1e-5)
  assert not np.allclose(out[0], x[0] + np.arange(14)[:, None, None] % 8)  # really averaged


# --- Joint augmentation. ---


def test_dihedral_maps_move_masks_exactly_with_images():
  images, masks = _blocks()
  config = AugmentConfig(flip_horizontal=True, flip_vertical=True, rotate90=True)
  out, out_masks = augment.augment_batch(RNG, jnp.asarray(images), config, jnp.asarray(masks))
  assert out_masks.dtype == jnp.int32 and out_masks.shape == masks.shape
  np.testing.assert_array_equal(out_masks, np.asarray(out)[..., 0] > 0.5)
  assert not np.array_equal(out_masks, masks)  # something moved


def test_warps_keep_masks_aligned_and_intensity_leaves_masks_alone():
  images, masks = _blocks()
  config = dataclasses.replace(GEOMETRY, brightness=0.1, contrast=0.1)
  out, out_masks = augment.augment_batch(RNG, jnp.asarray(images), config, jnp.asarray(masks))
  # Bilinear images and nearest masks agree except on a thin band along tile edges.
  agree = np.mean(np.asarray(out_masks) == (np.asarray(out)[..., 0] > 0.5))
  assert agree > 0.93, agree
  assert set(np.unique(out_masks)) <= {0, 1}
  intensity = AugmentConfig(brightness=0.3, contrast=0.3)
  bright, same = augment.augment_batch(RNG, jnp.asarray(images), intensity, jnp.asarray(masks))
  assert not np.allclose(bright, images)
  np.testing.assert_array_equal(same, masks)


def test_elastic_deformation_is_deterministic_smooth_and_identity_at_zero_strength():
  images, masks = _blocks()
  config = AugmentConfig(elastic_sigma=4.)
  first = augment.augment_batch(RNG, jnp.asarray(images), config, jnp.asarray(masks))
  again = augment.augment_batch(RNG, jnp.asarray(images), config, jnp.asarray(masks))
  other = augment.augment_batch(jax.random.key(1), jnp.asarray(images), config,
                                jnp.asarray(masks))
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert not np.allclose(first[0], other[0]) and not np.allclose(first[0], images)
  tiny = augment.augment_batch(RNG, jnp.asarray(images), AugmentConfig(elastic_sigma=1e-5))
  np.testing.assert_allclose(tiny, images, atol=1e-3)
  np.testing.assert_array_equal(augment.elastic_displacement(RNG, 32, 32, 0.), 0.)
  field = np.asarray(augment.elastic_displacement(RNG, 64, 64, 10.))
  assert field.shape == (2, 64, 64)
  assert 3 < field.std() < 20  # displacements of ~sigma pixels ...
  assert np.abs(np.diff(field, axis=1)).max() < 3  # ... that vary smoothly (noise: ~14)
  assert augment.PRESETS['em_segmentation'].elastic_sigma > 0
  with pytest.raises(ValueError, match='elastic_grid'):
    AugmentConfig(elastic_grid=1)


# --- Patches. ---


def _coordinate_images(batch=4, size=24):
  """Images whose two channels are each pixel's row and column / size, masks its flat index."""
  rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing='ij')
  images = np.stack([rows, cols], -1)[None].repeat(batch, 0).astype(np.float32) / size
  return images, (rows * size + cols)[None].repeat(batch, 0).astype(np.int32)


@pytest.mark.parametrize('config', ['none', AugmentConfig(flip_horizontal=True, rotate90=True)])
def test_patches_are_aligned_windows_of_image_and_mask(config):
  size, patch = 24, 8
  images, masks = _coordinate_images(size=size)
  out, out_masks = augment.augment_batch(RNG, jnp.asarray(images), config, jnp.asarray(masks),
                                         patch_size=patch)
  assert out.shape == (4, patch, patch, 2) and out_masks.shape == (4, patch, patch)
  out, out_masks = np.asarray(out), np.asarray(out_masks)
  # The mask names the source pixel; the image there carries the same coordinates.
  np.testing.assert_allclose(out[..., 0] * size, out_masks // size, atol=1e-4)
  np.testing.assert_allclose(out[..., 1] * size, out_masks % size, atol=1e-4)
  # One contiguous window (rotated / mirrored) per example, at different places.
  for m in out_masks:
    rows, cols = m // size, m % size
    assert np.ptp(rows) == np.ptp(cols) == patch - 1 and len(np.unique(m)) == patch ** 2
  assert len({int(m.min()) for m in out_masks}) > 1
  with pytest.raises(ValueError, match='patch_size'):
    augment.augment_batch(RNG, jnp.asarray(images), 'none', patch_size=size + 1)


def test_volume_configs_dispatch_to_augment3d(monkeypatch):
  config = augment.get_augment('shape_volume')
  assert isinstance(config, augment3d.VolumeAugmentConfig)
  calls = []
  monkeypatch.setattr(augment3d, 'augment_batch', lambda *args: calls.append(args) or 'out')
  volumes, labels = jnp.zeros((2, 4, 6, 6, 1)), jnp.zeros((2, 4, 6, 6), jnp.int32)
  assert augment.augment_batch(RNG, volumes, 'shape_volume', labels) == 'out'
  assert calls == [(RNG, volumes, config, labels)]
  with pytest.raises(ValueError, match='patch_size'):
    augment.augment_batch(RNG, volumes, config, patch_size=4)
