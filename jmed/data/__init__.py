"""jmed.data: datasets (MNIST, MedMNIST, MoleculeNet, ...), a NumPy input pipeline, augmentation."""

from jmed.data import augment
from jmed.data.datasets import Dataset
from jmed.data.datasets import load_dataset
from jmed.data.datasets import NAMES as DATASET_NAMES
from jmed.data.errors import DataError
from jmed.data.errors import MissingDataError
from jmed.data.pipeline import epoch_permutation
from jmed.data.pipeline import eval_batches
from jmed.data.pipeline import prefetch
from jmed.data.pipeline import train_batches

__all__ = [
    'DATASET_NAMES',
    'DataError',
    'Dataset',
    'MissingDataError',
    'augment',
    'epoch_permutation',
    'eval_batches',
    'load_dataset',
    'prefetch',
    'train_batches',
]
