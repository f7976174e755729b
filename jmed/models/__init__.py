"""jmed models: plain `flax.linen` modules, usable on their own in any JAX program."""

from jmed.models.cnn import SeedCNN
from jmed.models.layers import ValidConv, max_pool

__all__ = ['MODELS', 'SeedCNN', 'ValidConv', 'get_model', 'max_pool']

MODELS = {
    'seed_cnn': SeedCNN,
}


def get_model(name: str, **kwargs):
  """Builds the model registered as `name` with the given hyperparameters."""
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; valid models: {", ".join(sorted(MODELS))}.')
  return MODELS[name](**kwargs)
