"""jmed models: plain `flax.linen` modules, usable on their own in any JAX program."""

import functools

from jmed.errors import ConfigError

from jmed.models.causal import Dragonnet, TARNet
from jmed.models.cnn import SeedCNN
from jmed.models.crf import CRF
from jmed.models.dmpnn import DMPNN
from jmed.models.grud import GRUDCell, GRUDClassifier
from jmed.models.heads import DiscreteTimeHead
from jmed.models.layers import Conv, Conv3D, ValidConv, max_pool
from jmed.models.mlm import MaskedLM
from jmed.models.mlp import MLP
from jmed.models.recurrent import RNNClassifier, RNNEncoder
from jmed.models.resnet import ResNet, ResNet18, ResNet18_3D, ResNet50, ResNet50_3D
from jmed.models.skipgram import SkipGram
from jmed.models.tagger import CharCNN, SequenceTagger
from jmed.models.text_cnn import TextCNN
from jmed.models.transformer import EncoderBlock, TransformerClassifier, TransformerEncoder
from jmed.models.unet import UNet

__all__ = ['CRF', 'CharCNN', 'Conv', 'Conv3D', 'DMPNN', 'DiscreteTimeHead', 'Dragonnet',
           'EncoderBlock', 'GRUDCell', 'GRUDClassifier', 'MLP', 'MODELS', 'MaskedLM',
           'RNNClassifier', 'RNNEncoder', 'ResNet', 'ResNet18', 'ResNet18_3D', 'ResNet50',
           'ResNet50_3D', 'SeedCNN', 'SequenceTagger', 'SkipGram', 'TARNet', 'TextCNN',
           'TransformerClassifier', 'TransformerEncoder', 'UNet', 'ValidConv', 'get_model',
           'inspect', 'max_pool']

# Models that `fit` builds by name.
MODELS = {
    'seed_cnn': SeedCNN,
    'resnet18': ResNet18,                                   # 'small' stem: MedMNIST's ResNet (28)
    'resnet50': ResNet50,
    'resnet18_imagenet': functools.partial(ResNet18, stem='imagenet'),  # ResNet (224)
    'resnet50_imagenet': functools.partial(ResNet50, stem='imagenet'),
    'resnet18_3d': ResNet18_3D,  # volumes [batch, d, h, w, c]: MedMNIST's ResNet-18 + 3D
    'resnet50_3d': ResNet50_3D,
    'mlp': MLP,  # feature vectors: fingerprints, covariates (a Cox risk model with 1 output)
    'gru': functools.partial(RNNClassifier, cell='gru'),    # token ids [batch, length]
    'lstm': functools.partial(RNNClassifier, cell='lstm'),
    'transformer': TransformerClassifier,
    'text_cnn': TextCNN,
    'grud': GRUDClassifier,  # packed irregular series, see jmed.data.timeseries
    'dmpnn': DMPNN,  # packed molecular graphs, see jmed.data.graphs
    'unet': UNet,  # images to per-pixel logits (task 'segmentation')
    'tarnet': TARNet,  # covariates to potential outcomes (task 'treatment_effect'; + IPM: CFR)
    'dragonnet': Dragonnet,  # TARNet-like, with a propensity head and targeted regularisation
    # token tagging (task 'tagging', inputs from jmed.data.conll): encoder + linear-chain CRF
    'lstm_tagger': functools.partial(SequenceTagger, encoder='lstm'),
    'gru_tagger': functools.partial(SequenceTagger, encoder='gru'),
    'transformer_tagger': functools.partial(SequenceTagger, encoder='transformer'),
    'masked_lm': MaskedLM,  # Transformer encoder pretraining (task 'masked_lm')
    'skipgram': SkipGram,  # word2vec embedding pretraining (task 'skipgram')
}


def get_model(name: str, **kwargs):
  """Builds the model registered as `name` with the given hyperparameters."""
  if name not in MODELS:
    raise ConfigError(f'Unknown model {name!r}; valid models: {", ".join(sorted(MODELS))}.')
  return MODELS[name](**kwargs)


def inspect(model, variables, inputs):
  """Runs `model` in evaluation mode; returns (outputs, the 'intermediates' it sowed).

  Intermediates are attention weights ([batch, heads, queries, keys] per layer), hidden states
  or feature maps, each a tuple (one entry per call) under the sowing module's path.
  """
  outputs, state = model.apply(variables, inputs, train=False, mutable=['intermediates'])
  return outputs, state.get('intermediates', {})
