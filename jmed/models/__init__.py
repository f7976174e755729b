"""jmed models: plain `flax.linen` modules, usable on their own in any JAX program."""

import functools

from jmed.models.cnn import SeedCNN
from jmed.models.layers import Conv, ValidConv, max_pool
from jmed.models.mlp import MLP
from jmed.models.resnet import ResNet, ResNet18, ResNet50
from jmed.models.unet import UNet

__all__ = ['Conv', 'MLP', 'MODELS', 'ResNet', 'ResNet18', 'ResNet50', 'SeedCNN', 'UNet',
           'ValidConv', 'get_model', 'max_pool']

# Classifiers that `fit` builds by name (UNet is a segmentation model: see jmed.segmentation).
MODELS = {
    'seed_cnn': SeedCNN,
    'resnet18': ResNet18,                                   # 'small' stem: MedMNIST's ResNet (28)
    'resnet50': ResNet50,
    'resnet18_imagenet': functools.partial(ResNet18, stem='imagenet'),  # ResNet (224)
    'resnet50_imagenet': functools.partial(ResNet50, stem='imagenet'),
    'mlp': MLP,  # feature vectors, e.g. molecular fingerprints
}


def get_model(name: str, **kwargs):
  """Builds the model registered as `name` with the given hyperparameters."""
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; valid models: {", ".join(sorted(MODELS))}.')
  return MODELS[name](**kwargs)
