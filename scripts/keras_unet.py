#!/usr/bin/env python
"""The widely used Keras U-Net for ISBI 2012 membranes: the peer of jmed's segmentation recipe.

The architecture, loss, optimizer and augmentation are those of the popular `unet` Keras
repository (github.com/zhixuhao/unet, MIT; `model.py` for the network, `main.py` and `data.py`
for the augmentation and the 0/1 masks; read at commit 3951284 / 20c5aa4), written anew here for
Keras 3:

- 4 down blocks of two 3x3 'same' ReLU convolutions (he_normal) and a 2x2 max pool, with 64,
  128, 256 and 512 filters; dropout 0.5 after the 4th block and after the 1024-filter
  bottleneck; 4 up blocks of 2x2 upsampling + a 2x2 ReLU convolution, concatenation with the
  skip connection and two 3x3 convolutions; a 2-filter 3x3 ReLU convolution, then a 1x1 sigmoid
  convolution: P(cell) per pixel.
- Adam (learning rate 1e-4) on binary cross-entropy; mask 1 = cell interior, 0 = membrane.
- The repository's `ImageDataGenerator` augmentation, applied with the same geometry to image and
  mask: rotation +-0.2 degrees, width and height shifts +-5 %, shear +-0.05 degrees, zoom +-5 %,
  horizontal flips, 'nearest' fill (scipy's affine transform, as Keras' generator uses; linear
  interpolation for images, nearest for masks).

What differs from the repository, so that the comparison with jmed is like for like: the data
are jmed's ISBI split (`jmed.data.isbi.SPLIT`, loaded by `jmed.data.isbi.load`), training
examples are random patches of jmed's recipe's patch size and count (the repository trains on
whole images resized to 256x256, batch 2, 300 steps), and the checkpoint is the one with the
best validation Dice at the end of an epoch (the repository keeps the lowest training loss).
Prediction runs on whole 512x512 images (the network is fully convolutional and 512 is
divisible by 16) and thresholds P(cell) at 0.5.

Needs TensorFlow (`pip install -e .[bench]`):

  python scripts/keras_unet.py --data-dir ../shared/data --seed 0
"""

import argparse
import json
import os
import sys
import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

FILTERS = (64, 128, 256, 512)
BOTTLENECK = 1024
# zhixuhao/unet main.py's ImageDataGenerator arguments (rotation and shear in degrees, shifts
# and zoom as fractions of the image size).
AUGMENT = dict(rotation=0.2, width_shift=0.05, height_shift=0.05, shear=0.05, zoom=0.05,
               horizontal_flip=True)


# ---------------------------------------------------------------- the model


def _conv(filters: int, kernel: int, activation: Optional[str] = 'relu'):
  import keras
  return keras.layers.Conv2D(filters, kernel, activation=activation, padding='same',
                             kernel_initializer='he_normal')


def _double_conv(x, filters: int):
  """Two 3x3 'same' ReLU convolutions: [b, h, w, c] -> [b, h, w, filters]."""
  return _conv(filters, 3)(_conv(filters, 3)(x))


def build_model(input_shape: Tuple = (None, None, 1), learning_rate: float = 1e-4):
  """The compiled U-Net: images [batch, height, width, 1] -> P(cell) [batch, height, width, 1].

  Args:
    input_shape: (height, width, channels); None sizes train on patches and predict on whole
      images with one model (height and width must be divisible by 16).
    learning_rate: Adam's.
  """
  import keras
  inputs = keras.Input(input_shape)
  x, skips = inputs, []
  for i, filters in enumerate(FILTERS):
    x = _double_conv(x, filters)
    if i == len(FILTERS) - 1:
      x = keras.layers.Dropout(0.5)(x)
    skips.append(x)
    x = keras.layers.MaxPooling2D(2)(x)
  x = keras.layers.Dropout(0.5)(_double_conv(x, BOTTLENECK))
  for filters, skip in zip(reversed(FILTERS), reversed(skips)):
    x = _conv(filters, 2)(keras.layers.UpSampling2D(2)(x))
    x = _double_conv(keras.layers.Concatenate(axis=-1)([skip, x]), filters)
  x = _conv(2, 3)(x)
  outputs = keras.layers.Conv2D(1, 1, activation='sigmoid')(x)
  model = keras.Model(inputs, outputs, name='zhixuhao_unet')
  model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss='binary_crossentropy')
  return model


# ---------------------------------------------------------------- data


def _affine(rng: np.random.Generator, height: int, width: int, cfg: dict):
  """One random ImageDataGenerator-style transform: (matrix [2, 2], offset [2], flip) mapping
  output pixel (row, col) to input pixel matrix @ (row, col) + offset, about the centre."""
  theta = np.deg2rad(rng.uniform(-cfg['rotation'], cfg['rotation']))
  shear = np.deg2rad(rng.uniform(-cfg['shear'], cfg['shear']))
  zoom_r, zoom_c = rng.uniform(1 - cfg['zoom'], 1 + cfg['zoom'], 2)
  shift = np.array([rng.uniform(-cfg['height_shift'], cfg['height_shift']) * height,
                    rng.uniform(-cfg['width_shift'], cfg['width_shift']) * width])
  rotate = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
  shear_m = np.array([[1.0, -np.sin(shear)], [0.0, np.cos(shear)]])
  matrix = rotate @ shear_m @ np.diag([zoom_r, zoom_c])
  centre = np.array([height - 1, width - 1]) / 2.0
  offset = centre + shift - matrix @ centre
  flip = cfg['horizontal_flip'] and rng.random() < 0.5
  return matrix, offset, flip


def augment(rng: np.random.Generator, images: np.ndarray, masks: np.ndarray,
            cfg: Optional[dict] = None) -> Tuple[np.ndarray, np.ndarray]:
  """The repository's augmentation, one transform per example, shared by image and mask.

  Args:
    rng: NumPy generator.
    images: float32 [batch, height, width, 1].
    masks: [batch, height, width] 0/1.
    cfg: ranges (default `AUGMENT`).

  Returns:
    (images float32 [batch, height, width, 1], masks float32 [batch, height, width, 1]).
  """
  cfg = AUGMENT if cfg is None else cfg
  out_x = np.empty(images.shape, np.float32)
  out_y = np.empty(images.shape, np.float32)
  for i in range(len(images)):
    matrix, offset, flip = _affine(rng, images.shape[1], images.shape[2], cfg)
    x = ndimage.affine_transform(images[i, ..., 0], matrix, offset, order=1, mode='nearest')
    y = ndimage.affine_transform(masks[i].astype(np.float32), matrix, offset, order=0,
                                 mode='nearest')
    if flip:
      x, y = x[:, ::-1], y[:, ::-1]
    out_x[i, ..., 0], out_y[i, ..., 0] = x, y
  return out_x, out_y


def random_patches(rng: np.random.Generator, images: np.ndarray, masks: np.ndarray,
                   patch_size: int) -> Tuple[np.ndarray, np.ndarray]:
  """One patch at a uniform random position of each example: images [b, H, W, 1] and masks
  [b, H, W, 1] -> ([b, p, p, 1], [b, p, p, 1])."""
  b, height, width = images.shape[:3]
  rows = rng.integers(0, height - patch_size + 1, b)
  cols = rng.integers(0, width - patch_size + 1, b)
  pick = lambda a: np.stack([a[i, r:r + patch_size, c:c + patch_size]
                             for i, (r, c) in enumerate(zip(rows, cols))])
  return pick(images), pick(masks)


def batches(rng: np.random.Generator, images, masks, patch_size: int, batch_size: int):
  """Endless training batches ([batch, p, p, 1] float32, [batch, p, p, 1] float32), as jmed's
  recipe draws them: each pass over the training images in a new random order (the last
  partial batch of a pass dropped), each whole image augmented together with its mask, then
  one random patch of it."""
  while True:
    order = rng.permutation(len(images))
    for start in range(0, len(order) - batch_size + 1, batch_size):
      which = np.sort(order[start:start + batch_size])
      x, y = augment(rng, images[which], masks[which])
      yield random_patches(rng, x, y, patch_size)


# ---------------------------------------------------------------- training and evaluation


def predict(model, images: np.ndarray) -> np.ndarray:
  """Class maps int32 [n, H, W] (1 = cell where P(cell) > 0.5) of whole images [n, H, W, 1]."""
  probs = model.predict(images, batch_size=1, verbose=0)
  return (probs[..., 0] > 0.5).astype(np.int32)


def scores(pred: np.ndarray, masks: np.ndarray) -> Dict:
  """jmed's segmentation metrics of class maps [n, H, W] (`jmed.metrics.segmentation_metrics`,
  what jmed's Segmentation task reports): 'dice' and 'iou' of the cell class (class 1) counted
  over all pixels of the split, 'membrane_dice' (class 0) and 'pixel_accuracy'."""
  from jmed import metrics
  out = metrics.segmentation_metrics(pred, masks, 2)
  return {'dice': out['dice'], 'iou': out['iou'], 'membrane_dice': out['dice_per_class'][0],
          'pixel_accuracy': out['pixel_accuracy']}


def _clock(validation, epochs: int, eval_every: int):
  """A Keras callback that adds up training seconds after the very first batch (tracing) with
  validation excluded, and keeps the weights of the epoch with the best validation Dice.

  Args:
    validation: (images [n, H, W, 1], masks [n, H, W]) or None (no selection).
    epochs: the run's epochs (the last one is always validated).
    eval_every: validate after every this many epochs.
  """
  import keras

  class Clock(keras.callbacks.Callback):
    """Attributes: seconds, best (validation Dice), best_weights, history (per epoch)."""

    def __init__(self):
      super().__init__()
      self.seconds, self.started = 0.0, None
      self.best, self.best_weights, self.history = -1.0, None, []

    def on_train_batch_end(self, batch, logs=None):
      if self.started is None:  # the end of the first batch: compiled from here on
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
      if epoch > 0:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      self.seconds += time.perf_counter() - self.started
      if validation is None or ((epoch + 1) % eval_every and epoch + 1 != epochs):
        return
      dice = scores(predict(self.model, validation[0]), validation[1])['dice']
      self.history.append({'epoch': epoch + 1, 'loss': float(logs['loss']), 'val_dice': dice})
      if dice > self.best:
        self.best, self.best_weights = dice, self.model.get_weights()

  return Clock()


def train(splits: Dict, *, patch_size: int, batch_size: int, steps: int, epochs: int = 1,
          seed: int = 0, eval_every: int = 1, verbose: int = 0):
  """Trains the U-Net on `steps` batches of augmented random training patches.

  Args:
    splits: {'train': (images [n, H, W, 1], masks [n, H, W]), 'validation': (...)}, as
      `jmed.data.isbi.load` returns; without 'validation' the last weights are kept.
    patch_size: patch height and width (divisible by 16).
    batch_size: patches per step.
    steps: training steps in all (steps * batch_size patches: the budget).
    epochs: the steps are split into this many epochs; validation Dice after each picks the
      weights kept.
    seed: Keras' and the patch sampler's seed.
    eval_every: validate after every this many epochs (and after the last); jmed validates
      after every epoch; a validation pass of this network over 5 whole images takes as long
      as some 25-50 training patches on 2 CPU cores.
    verbose: model.fit's.

  Returns:
    (model, train images/s after the first batch, validation excluded, info dict).
  """
  import keras
  keras.utils.set_random_seed(seed)
  epochs = max(1, min(epochs, steps))
  per_epoch = steps // epochs
  model = build_model()
  clock = _clock(splits.get('validation'), epochs, eval_every)
  rng = np.random.default_rng(seed)
  images, masks = splits['train']
  start = time.perf_counter()
  model.fit(batches(rng, images, masks, patch_size, batch_size), steps_per_epoch=per_epoch,
            epochs=epochs, callbacks=[clock], verbose=verbose)
  wall = time.perf_counter() - start
  if clock.best_weights is not None:
    model.set_weights(clock.best_weights)
  timed = per_epoch * epochs * batch_size - batch_size  # the first batch is not timed
  rate = timed / clock.seconds if clock.seconds > 0 and timed > 0 else float('nan')
  info = {'steps': per_epoch * epochs, 'epochs': epochs, 'batch_size': batch_size,
          'patch_size': patch_size, 'train_seconds': wall, 'best_val_dice': clock.best,
          'history': clock.history}
  return model, rate, info


def evaluate(model, images: np.ndarray, masks: np.ndarray) -> Dict:
  """Test metrics on whole images [n, H, W, 1] / masks [n, H, W] and inference images/s.

  Returns:
    `scores` and 'images_per_sec' (batch 1, timed after a warm-up prediction).
  """
  predict(model, images[:1])  # warm-up: tracing
  start = time.perf_counter()
  pred = predict(model, images)
  seconds = time.perf_counter() - start
  return {**scores(pred, masks), 'images_per_sec': len(images) / seconds}


# ---------------------------------------------------------------- the recipe's budget


def recipe_budget(recipe) -> Dict:
  """Patch size, batch size, epochs and max_steps (None: unset) of jmed's segmentation recipe
  (a TrainConfig); `compare_segmentation.py` gives the peer the steps jmed actually ran."""
  return {'patch_size': recipe.patch_size, 'batch_size': recipe.batch_size,
          'epochs': recipe.epochs, 'steps': recipe.max_steps or None}


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=None)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--patch-size', type=int, default=0, help="0: the recipe's")
  parser.add_argument('--batch-size', type=int, default=0, help="0: the recipe's")
  parser.add_argument('--epochs', type=int, default=0, help="0: the recipe's")
  parser.add_argument('--steps', type=int, default=0,
                      help="training steps in all (0: the recipe's max_steps, else its epochs "
                           "of len(train) // batch steps, as jmed's fit runs them)")
  parser.add_argument('--max-steps', type=int, default=0, help='cap on --steps (smoke runs)')
  parser.add_argument('--eval-every', type=int, default=1,
                      help='validate (and keep the best weights) every this many epochs')
  parser.add_argument('--verbose', type=int, default=2)
  args = parser.parse_args(argv)

  from jmed.data import datasets, isbi
  splits = isbi.load(os.path.join(datasets.resolve_data_dir(args.data_dir), 'segmentation',
                                  'isbi2012'))
  budget = {'patch_size': args.patch_size, 'batch_size': args.batch_size,
            'epochs': args.epochs, 'steps': args.steps}
  if not all(budget.values()):
    from jmed import configs
    recipe = recipe_budget(configs.SEGMENTATION_RECIPES['isbi2012'])
    recipe['steps'] = recipe['steps'] or recipe['epochs'] * max(
        1, len(splits['train'][0]) // recipe['batch_size'])
    budget = {k: v or recipe[k] for k, v in budget.items()}
  if args.max_steps:
    budget['steps'] = min(budget['steps'], args.max_steps)
  model, rate, info = train(splits, seed=args.seed, eval_every=args.eval_every,
                            verbose=args.verbose, **budget)
  test = evaluate(model, *splits['test'])
  import keras
  print(json.dumps({'peer': 'keras_unet', 'backend': keras.backend.backend(), 'seed': args.seed,
                    **{f'test_{k}': v for k, v in test.items() if k != 'images_per_sec'},
                    'train_images_per_sec': rate,
                    'inference_images_per_sec': test['images_per_sec'], **info}, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())
