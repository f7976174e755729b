"""scripts/keras_unet.py, the Keras peer of the segmentation comparison: its training data
(NumPy, always run) and its network (skipped without TensorFlow, which CI does not install)."""

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'scripts'))
import compare_segmentation  # noqa: E402  (scripts/compare_segmentation.py)
import keras_unet  # noqa: E402  (scripts/keras_unet.py)

NO_CHANGE = dict(rotation=0.0, width_shift=0.0, height_shift=0.0, shear=0.0, zoom=0.0,
                 horizontal_flip=False)
# zhixuhao/unet's Conv2D filters in order: 4 down blocks, the bottleneck, 4 up blocks (the 2x2
# convolution after upsampling, then two 3x3), the 2-filter 3x3 and the 1x1 sigmoid.
CONV_FILTERS = [64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024,
                512, 512, 512, 256, 256, 256, 128, 128, 128, 64, 64, 64, 2, 1]


def _images(n=3, size=64, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.random((n, size, size, 1), np.float32),
          (rng.random((n, size, size)) > 0.5).astype(np.int32))


def test_augment_without_ranges_is_the_identity():
  images, masks = _images()
  x, y = keras_unet.augment(np.random.default_rng(0), images, masks, NO_CHANGE)
  np.testing.assert_allclose(x, images, atol=1e-6)
  np.testing.assert_array_equal(y[..., 0], masks)


def test_augment_moves_image_and_mask_together():
  """The mask drawn as the image: after the same transform the image, rounded, is the mask."""
  _, masks = _images(n=8)
  images = masks[..., None].astype(np.float32)
  cfg = dict(keras_unet.AUGMENT, rotation=20.0, shear=10.0, zoom=0.2)
  x, y = keras_unet.augment(np.random.default_rng(1), images, masks, cfg)
  assert set(np.unique(y)) <= {0.0, 1.0}
  agree = np.mean(np.round(x) == y)
  assert agree > 0.7, agree  # linear vs nearest interpolation differ on random masks only
  flips = dict(NO_CHANGE, horizontal_flip=True)
  x, y = keras_unet.augment(np.random.default_rng(2), images, masks, flips)
  np.testing.assert_array_equal(x[..., 0], y[..., 0])
  assert any((y[i, ..., 0] != masks[i]).any() for i in range(len(masks)))  # some flipped


def test_batches_are_patches_of_each_image_once_per_pass():
  images, masks = _images(n=5, size=64)
  images[...] = np.arange(5, dtype=np.float32)[:, None, None, None]  # image i is all i
  gen = keras_unet.batches(np.random.default_rng(0), images, masks, 32, 2)
  seen = []
  for _ in range(2):  # one pass: 5 images, batch 2, the last partial batch dropped
    x, y = next(gen)
    assert x.shape == (2, 32, 32, 1) and y.shape == (2, 32, 32, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    seen += [float(np.round(v)) for v in x.mean(axis=(1, 2, 3))]
  assert len(set(seen)) == 4


def test_table_has_one_row_per_model():
  runs = [{'model': m, 'dice': d, 'iou': 0.5, 'pixel_accuracy': 0.9, 'membrane_dice': 0.7,
           'train_images_per_sec': 10.0, 'inference_images_per_sec': 2.0}
          for m, d in (('a', 0.9), ('a', 0.8), ('b', 0.7))]
  lines = compare_segmentation.table(runs).splitlines()
  assert len(lines) == 4 and lines[2].startswith('| a | 0.850 ± 0.071')


def test_model_architecture():
  pytest.importorskip('tensorflow')
  import keras
  model = keras_unet.build_model()
  convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
  assert [l.filters for l in convs] == CONV_FILTERS
  assert [l.kernel_size for l in convs] == [(3, 3)] * 10 + [(2, 2), (3, 3), (3, 3)] * 4 + [
      (3, 3), (1, 1)]
  assert sum(isinstance(l, keras.layers.Dropout) for l in model.layers) == 2
  assert sum(isinstance(l, keras.layers.MaxPooling2D) for l in model.layers) == 4
  assert sum(isinstance(l, keras.layers.UpSampling2D) for l in model.layers) == 4
  assert model.count_params() == 31_031_685  # zhixuhao/unet's model.summary()
  probs = model.predict(np.zeros((2, 64, 64, 1), np.float32), verbose=0)
  assert probs.shape == (2, 64, 64, 1)
  assert np.all((probs >= 0) & (probs <= 1))
