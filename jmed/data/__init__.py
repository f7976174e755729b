"""jmed.data: datasets (MNIST, MedMNIST, MoleculeNet, ...), a NumPy input pipeline, augmentation.

Submodules load when first used, so `import jmed.data.pipeline` (or `jmed.data.augment`) does
not import the loaders' libraries (tensorflow-datasets, RDKit, h5py, tokenizers).
"""

import importlib

from jmed.errors import DataError
from jmed.errors import MissingDataError

# Public name -> (module, attribute or None for the module itself).
_LAZY = {
    'Dataset': ('jmed.data.datasets', 'Dataset'),
    'load_dataset': ('jmed.data.datasets', 'load_dataset'),
    'DATASET_NAMES': ('jmed.data.datasets', 'NAMES'),
    'epoch_permutation': ('jmed.data.pipeline', 'epoch_permutation'),
    'eval_batches': ('jmed.data.pipeline', 'eval_batches'),
    'prefetch': ('jmed.data.pipeline', 'prefetch'),
    'train_batches': ('jmed.data.pipeline', 'train_batches'),
    'augment': ('jmed.data.augment', None),
}


def __getattr__(name):
  if name not in _LAZY:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  module, attribute = _LAZY[name]
  value = importlib.import_module(module)
  return value if attribute is None else getattr(value, attribute)


__all__ = ['DataError', 'MissingDataError', *_LAZY]
