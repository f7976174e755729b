"""The ISBI 2012 EM segmentation set (the U-Net paper's data): 30 slices with membrane masks.

Files (`<data_dir>/segmentation/isbi2012/`, as in zhixuhao/unet's `data/membrane/train`):
`image/0.png` ... `image/29.png` (8-bit grey, 512x512) and `label/0.png` ... `label/29.png`
(0 = membrane, 255 = cell interior; about 78 % of pixels are cell). They are 30 consecutive
serial-section TEM slices of one Drosophila larva ventral nerve cord (Cardona et al. 2010); the
challenge's test slices have no public labels, so the split is carved from these 30.

The split is fixed and contiguous (`SPLIT`): slices 0-19 train, 20-24 validation, 25-29 test.
Neighbouring slices are correlated, so a random split would leak near-copies of training
slices into the test set; contiguous blocks keep the held-out slices apart (only one boundary
slice on each side touches the block before it).
"""

import os
from typing import Dict, Tuple

import numpy as np

from jmed.errors import DataError, MissingDataError

SUBDIR = os.path.join('segmentation', 'isbi2012')
NUM_SLICES = 30
SIZE = 512
SPLIT = {'train': range(0, 20), 'validation': range(20, 25), 'test': range(25, 30)}
NUM_CLASSES = 2  # 0 membrane, 1 cell interior


def load(folder: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
  """Reads the 30 slices and their masks, split by `SPLIT`.

  Args:
    folder: the folder holding `image/` and `label/` (`<data_dir>/segmentation/isbi2012`).

  Returns:
    {split: (images float32 [n, 512, 512, 1] in [0, 1], masks int32 [n, 512, 512])}, mask 1 =
    cell interior (label 255), 0 = membrane (label 0).

  Raises:
    MissingDataError: a file is missing (named).
    DataError: a file is not a 512x512 grey image, or a label holds values other than 0 / 255.
  """
  images, masks = [], []
  for i in range(NUM_SLICES):
    images.append(_read(os.path.join(folder, 'image', f'{i}.png')).astype(np.float32) / 255.0)
    masks.append(_mask(os.path.join(folder, 'label', f'{i}.png')))
  images, masks = np.stack(images)[..., None], np.stack(masks)
  return {split: (images[list(rows)], masks[list(rows)]) for split, rows in SPLIT.items()}


def _read(path: str) -> np.ndarray:
  """A grey 8-bit PNG as uint8 [512, 512]."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise MissingDataError(f'ISBI 2012: missing {path} (expected image/0.png ... image/29.png '
                           'and label/0.png ... label/29.png).')
  try:
    with Image.open(path) as image:
      array = np.asarray(image.convert('L'))
  except OSError as e:
    raise DataError(f'ISBI 2012: cannot read {path}: {e}') from None
  if array.shape != (SIZE, SIZE):
    raise DataError(f'ISBI 2012: {path} is {array.shape}, expected ({SIZE}, {SIZE}).')
  return array


def _mask(path: str) -> np.ndarray:
  """int32 [512, 512]: 1 where the label is 255 (cell), 0 where it is 0 (membrane)."""
  label = _read(path)
  bad = (label != 0) & (label != 255)
  if bad.any():
    row, col = np.argwhere(bad)[0]
    raise DataError(f'ISBI 2012: {path} holds value {label[row, col]} at row {row}, column '
                    f'{col}; labels must be 0 (membrane) or 255 (cell).')
  return (label == 255).astype(np.int32)
