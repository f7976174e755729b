"""Plain-Python configs for jmed's training: every knob of a run lives here."""

import dataclasses
import json
import logging
import os
from typing import Optional


@dataclasses.dataclass
class OptimizerConfig:
  """Which optax optimizer, its schedule, clipping and weight penalties.

  Attributes:
    name: 'sgd' | 'adam' | 'rmsprop' | 'adamw' | 'amsgrad'.
    learning_rate: peak learning rate.
    momentum: SGD/RMSprop momentum (0 = none).
    nesterov: Nesterov momentum for SGD.
    b1, b2, eps: Adam-family moments and epsilon.
    rms_decay: RMSprop's squared-gradient decay.
    weight_decay: AdamW's decoupled weight decay.
    schedule: 'constant' | 'cosine' | 'warmup_cosine' | 'warmup_constant'.
    warmup_steps: linear warm-up length for the warmup_* schedules.
    decay_steps: cosine length; 0 means the whole run (set by the train loop).
    clip_norm: clip gradients to this global norm; 0 disables clipping.
    l1, l2: penalties l1 * |w| and 0.5 * l2 * w**2 on kernels (parameters of rank >= 2), added to
      the gradient before the optimizer (coupled, as in Keras' regularizers).
    freeze: comma-separated parameter path prefixes ('/'-joined, e.g. 'Embed_0' or
      'TransformerEncoder_0/block0') left unchanged by training, e.g. pretrained word
      embeddings under `init_from`; '' trains everything.
  """

  name: str = 'sgd'
  learning_rate: float = 0.01
  momentum: float = 0.0
  nesterov: bool = False
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  rms_decay: float = 0.9
  weight_decay: float = 1e-4
  schedule: str = 'constant'
  warmup_steps: int = 0
  decay_steps: int = 0
  clip_norm: float = 0.0
  l1: float = 0.0
  l2: float = 0.0
  freeze: str = ''


@dataclasses.dataclass
class TextConfig:
  """How a text dataset becomes token ids (see `jmed.text`).

  Attributes:
    tokenizer: 'word' (whole words) or 'wordpiece' (sub-words), learned from the training split.
    vocab_size: most tokens the vocabulary keeps, [PAD] and [UNK] included.
    min_frequency: tokens rarer than this in the training split map to [UNK] (word) or are not
      merged (wordpiece).
    max_length: tokens per document: longer ones are truncated, shorter ones padded, so every
      batch has one shape and compiles once. Tagging: the longest sentence kept whole (longer
      ones are cut into pieces of this length).
    tokenizer_path: a saved tokenizer.json to encode with instead of learning one from the
      training split (a pretrained run's; `TrainConfig.init_from` sets it).
    char_length: tagging: characters kept per token for the character features (0: none).
  """

  tokenizer: str = 'word'
  vocab_size: int = 20000
  min_frequency: int = 2
  max_length: int = 256
  tokenizer_path: str = ''
  char_length: int = 20


@dataclasses.dataclass
class MoleculeConfig:
  """How molecules become model inputs: the MoleculeNet presets ('esol', 'bbbp', 'tox21',
  'sider', 'clintox') and a SMILES file of the user's (see `jmed.data.moleculenet` and
  `jmed.text.smiles`); `split` and `split_seed` apply to the presets, a user's file is split by
  `DataConfig`.

  Attributes:
    features: 'smiles' (atom-level SMILES token ids, for sequence models), 'fingerprint'
      (Morgan fingerprints, radius 2, for an MLP), 'graph' (packed molecular graphs for the
      D-MPNN, model 'dmpnn', see `jmed.data.graphs`) or 'graph_descriptors' (the same with
      RDKit's 2D descriptors).
    split: 'random', 'scaffold' (Bemis-Murcko, deterministic) or 'auto' (the split MoleculeNet
      recommends for the dataset: random for ESOL, Tox21, SIDER and ClinTox, scaffold for
      BBBP).
    split_seed: seed of the random split.
    max_length: SMILES tokens per molecule ([BOS]/[EOS] included); longer ones are truncated,
      shorter ones padded.
    fingerprint_bits: fingerprint length.
    skip_invalid: drop molecules RDKit cannot parse (logging each row) instead of raising an
      error that names the row.
    canonical: token ids of RDKit's canonical SMILES instead of the file's spelling, so a
      model cannot learn how the file's sources wrote molecules (aromatic or Kekulé rings,
      atom order); ClinTox needs it (see `jmed.data.moleculenet`). Fingerprints and graphs
      do not depend on the spelling.
  """

  features: str = 'smiles'
  split: str = 'auto'
  split_seed: int = 0
  max_length: int = 128
  fingerprint_bits: int = 1024
  skip_invalid: bool = True
  canonical: bool = False


@dataclasses.dataclass
class PrivacyConfig:
  """Differentially private training (DP-SGD, Abadi et al. 2016; see `jmed.privacy`).

  Attributes:
    enabled: train with DP-SGD: each example's gradient is clipped to `l2_clip`, the clipped
      gradients are summed, Gaussian noise of std `noise_multiplier * l2_clip` is added, and the
      sum is divided by the batch size.
    l2_clip: per-example gradient L2 norm bound C.
    noise_multiplier: noise std as a multiple of C (sigma).
    delta: the delta of the reported (epsilon, delta) guarantee; 0 means 1 / (training
      examples).
    accountant: 'rdp' (Renyi DP) or 'pld' (privacy loss distributions, tighter), both from
      Google's dp-accounting, treating each step as Poisson sampling at rate batch / n.
  """

  enabled: bool = False
  l2_clip: float = 1.0
  noise_multiplier: float = 1.1
  delta: float = 0.0
  accountant: str = 'rdp'


@dataclasses.dataclass
class DataConfig:
  """The user's own data file or folder (see `jmed.data.user`); used when `path` is set.

  Attributes:
    path: a CSV, Parquet, JSON Lines, DeepSurv HDF5 or MedMNIST npz file, a folder of images
      with one subfolder per class, or a records folder (scripts/export_records.py: any dataset
      as ArrayRecord shards, streamed from disk) ('' means: use `TrainConfig.dataset` instead).
    source: 'auto' (from the file: .h5 deepsurv, .npz npz, a folder with spec.json records,
      another folder images, a table with `smiles_column` smiles, with `text_column` text,
      else table), 'table', 'deepsurv', 'smiles', 'text', 'images', 'npz' or 'records'.
    task: 'auto' (inferred from the labels; 'treatment_effect' when `treatment_column` is set;
      'tagging' for CoNLL files) or a task kind: 'binary', 'multiclass', 'multilabel',
      'regression', 'survival', 'treatment_effect', 'tagging' (CoNLL files only).
    label_column: the label column; several columns, comma-separated, for multi-label or
      multi-target regression.
    time_column, event_column: survival's time and event (1 event, 0 censored) columns.
    treatment_column: treatment effect: the treatment column (1 treated, 0 control); the
      outcome is `label_column`. Never a feature.
    potential_outcome_columns: treatment effect: 'mu0,mu1', the columns of the (simulated)
      expected outcomes under control and under treatment, for PEHE and ATE error ('': unknown,
      as in real observational data). Never features.
    feature_columns: comma-separated feature columns of a table ('': every column not named
      by another flag).
    ignore_columns: comma-separated columns left out of the features (ids, free text, ...).
    smiles_column: the SMILES column of a SMILES table.
    text_column: the text column of a text table.
    split_column: a column whose values 'train', 'validation' (or 'val', 'valid') and 'test'
      assign each row ('': the column 'split' if the file has one, else the `split` rule).
    group_column: rows sharing a value (e.g. a patient id) go to the same split.
    split: how rows without a split column are split: 'auto' (stratified for classification,
      grouped when `group_column` is set, else random), 'random', 'stratified', 'scaffold'
      (Bemis-Murcko, SMILES) or 'group'.
    split_seed: seed of the split.
    validation_fraction, test_fraction: shares of the rows held out.
    missing: empty or NaN feature cells: 'impute' (train mean or most frequent category, plus
      a 0/1 indicator column per feature with gaps) or 'refuse' (an error naming the row and
      column).
    image_size: resize images to this height and width (0: keep; all must then match).
    channels: image channels: 1 (grey) or 3 (RGB); 0 takes the first image's.
  """

  path: str = ''
  source: str = 'auto'
  task: str = 'auto'
  label_column: str = ''
  time_column: str = ''
  event_column: str = ''
  treatment_column: str = ''
  potential_outcome_columns: str = ''
  feature_columns: str = ''
  ignore_columns: str = ''
  smiles_column: str = 'smiles'
  text_column: str = 'text'
  split_column: str = ''
  group_column: str = ''
  split: str = 'auto'
  split_seed: int = 0
  validation_fraction: float = 0.1
  test_fraction: float = 0.1
  missing: str = 'impute'
  image_size: int = 0
  channels: int = 0


# Choices of DataConfig fields, checked before any data is read (scripts/train.py's choices).
DATA_SOURCES = ('auto', 'table', 'deepsurv', 'smiles', 'text', 'images', 'npz', 'conll',
                'records')
DATA_TASKS = ('auto', 'binary', 'multiclass', 'multilabel', 'regression', 'survival',
              'treatment_effect', 'tagging')
SPLIT_RULES = ('auto', 'random', 'stratified', 'scaffold', 'group')
MISSING_POLICIES = ('impute', 'refuse')


@dataclasses.dataclass
class TrainConfig:
  """One training run. Defaults are the seed's recipe on PneumoniaMNIST.

  Attributes:
    model: a name in `jmed.models.MODELS`.
    dataset: a name known to `jmed.data.load_dataset`.
    data_dir: root of local data (per-dataset folders); None reads $JMED_DATA_DIR, else downloads.
    tfds_dir: where tensorflow-datasets keeps prepared datasets (None: its default).
    epochs: passes over the training split.
    batch_size: global batch, split evenly over all devices.
    eval_batch_size: global batch for evaluation (512 divides over any power-of-two device count).
    seed: seeds initialisation, shuffling and dropout.
    optimizer: see `OptimizerConfig`.
    text: see `TextConfig` (text datasets only).
    molecule: see `MoleculeConfig` (MoleculeNet datasets only).
    privacy: see `PrivacyConfig` (DP-SGD; off by default).
    data: see `DataConfig`: the user's own file or folder, used instead of `dataset` when its
      `path` is set.
    model_kwargs: the model's own hyperparameters by field name, e.g. {"hidden": [64]} for
      'mlp' or {"num_layers": 1} for 'transformer'.
    task_kwargs: the task's own settings by field name (`jmed.tasks`), e.g.
      {"ipm": "wasserstein", "ipm_weight": 1.0} for 'treatment_effect' (CFR-Wass).
    dropout_rate: model dropout.
    class_weights: 'none', or 'balanced' to weight each class's loss by n / (classes * its
      training count) (single-label tasks), which favours macro-averaged metrics.
    augment: on-device augmentation preset in `jmed.data.augment.PRESETS` ('none': off); for
      segmentation the masks follow the images' geometry (e.g. 'em_segmentation').
    select_metric: validation metric that picks the best checkpoint ('auto': the task's own,
      'c_index' for survival, 'rmse' for regression, 'dice' for segmentation, 'factual_rmse'
      for treatment_effect, else 'auroc'; or 'auroc', 'accuracy', 'auprc', 'f1', 'c_index',
      'dice', 'iou', or 'loss', which is minimised).
    early_stopping_patience: stop after this many epochs without a better validation
      `select_metric` (0: never stop early).
    dtype: computation dtype name ('float32' or 'bfloat16').
    steps_per_dispatch: training steps compiled into one call (fewer host round trips).
    micro_batch_size: rows of each batch whose gradient is computed at once; the step sums the
      gradients of batch_size / micro_batch_size micro-batches in a loop (the same update, to
      float rounding, with a small batch's working set: faster on a CPU, whose caches a large
      batch's activations overflow). 0: automatic (`jmed.train.steps.auto_micro_batches`): on a CPU
      backend, for a model without batch statistics and without DP-SGD, about 8 micro-batches of
      32 to 128 rows (128: 4 x 32, 512: 8 x 64, 4096: 32 x 128); else the whole batch.
    output_dir: metrics, checkpoints and summary go here.
    checkpoint_every: save every N steps (0: only at the end of each epoch and the run).
    keep_checkpoints: how many checkpoints orbax keeps.
    resume: continue from the latest checkpoint in output_dir, which must hold config.json and a
      checkpoint. The config must equal the saved config.json except for epochs, max_steps,
      progress, output_dir, data_dir, tfds_dir, keep_checkpoints, checkpoint_every,
      eval_batch_size and early_stopping_patience; a run differing in any other field is
      refused before anything is written (`jmed.train.loop.RESUMABLE_FIELDS`).
    max_steps: stop after this many steps in total (0: run all epochs).
    progress: show a progress bar.
    patch_size: segmentation: train on one random patch_size x patch_size window of each
      (augmented) image and its mask, cropped on device inside the train step (0: whole images).
      Must be divisible by the U-Net's 2 ** poolings.
    eval_window: segmentation: evaluate through `jmed.segmentation.sliding_window` with square
      windows of this size (0: the model sees each whole image at once).
    eval_stride: the sliding windows' stride (0: eval_window // 2); overlaps are averaged with
      Gaussian weights.
    init_from: a run directory (e.g. of masked-LM pretraining, `scripts/pretrain.py`) whose best
      checkpoint initialises every parameter of the model with the same name and shape (the
      word embedding and Transformer encoder); text is then encoded with that run's
      tokenizer.json. The parameters taken are listed in summary.json.
  """

  model: str = 'seed_cnn'
  dataset: str = 'pneumoniamnist'
  data_dir: Optional[str] = None
  tfds_dir: Optional[str] = None
  epochs: int = 5
  batch_size: int = 32
  eval_batch_size: int = 512
  seed: int = 0
  optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
  text: TextConfig = dataclasses.field(default_factory=TextConfig)
  molecule: MoleculeConfig = dataclasses.field(default_factory=MoleculeConfig)
  privacy: PrivacyConfig = dataclasses.field(default_factory=PrivacyConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model_kwargs: dict = dataclasses.field(default_factory=dict)
  task_kwargs: dict = dataclasses.field(default_factory=dict)
  dropout_rate: float = 0.0
  class_weights: str = 'none'
  augment: str = 'none'
  select_metric: str = 'auto'
  early_stopping_patience: int = 0
  dtype: str = 'float32'
  steps_per_dispatch: int = 4
  micro_batch_size: int = 0
  output_dir: str = 'runs/seed_cnn_pneumoniamnist'
  checkpoint_every: int = 0
  keep_checkpoints: int = 2
  resume: bool = False
  max_steps: int = 0
  progress: bool = True
  patch_size: int = 0
  eval_window: int = 0
  eval_stride: int = 0
  init_from: str = ''


def field_docs(cls) -> dict:
  """Field name -> its description in `cls`'s Google-style "Attributes:" docstring section.

  A line 'a, b: text' documents both a and b; indented lines continue the previous entry.
  """
  docs, names = {}, []
  lines = (cls.__doc__ or '').split('Attributes:', 1)[-1].splitlines()
  for line in lines:
    text = line.strip()
    head, sep, rest = text.partition(': ')
    is_entry = sep and ' ' not in head.replace(', ', ',')
    if is_entry and line.startswith('    ') and not line.startswith('     '):
      names = [n.strip() for n in head.split(',')]
      for name in names:
        docs[name] = rest
    elif text and names:
      for name in names:
        docs[name] += ' ' + text
  return docs


# TrainConfig fields that are configs themselves.
NESTED = {'optimizer': OptimizerConfig, 'text': TextConfig, 'molecule': MoleculeConfig,
          'privacy': PrivacyConfig, 'data': DataConfig}


def config_from_dict(values: dict, where: str = 'config') -> TrainConfig:
  """The `TrainConfig` of `dataclasses.asdict(cfg)` (a run's config.json, a search's
  best_config.json). Fields missing from `values` get their defaults; fields this version does
  not know are dropped with a warning naming them and `where`."""
  values = _known_fields(TrainConfig, values, where)
  for name, cls in NESTED.items():
    if isinstance(values.get(name), dict):
      values[name] = cls(**_known_fields(cls, values[name], where))
  return TrainConfig(**values)


def load_config(path: str) -> TrainConfig:
  """Reads a `TrainConfig` written as JSON (see `config_from_dict`)."""
  with open(path) as f:
    return config_from_dict(json.load(f), os.fspath(path))


def _known_fields(cls, values: dict, where: str) -> dict:
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    logging.warning('%s: ignoring fields unknown to %s: %s', where, cls.__name__, unknown)
  return {k: v for k, v in values.items() if k in known}


# The Transformer encoder that masked-LM pretraining trains (`PRETRAIN_RECIPE`) and the models
# starting from it repeat (`init_from` takes parameters by name and shape).
PRETRAINED_ENCODER = {'embed_dim': 128, 'num_layers': 2, 'num_heads': 4, 'mlp_dim': 256}


def _text_recipe(model: str, model_kwargs: dict, learning_rate: float = 3e-3) -> TrainConfig:
  return TrainConfig(
      model=model, dataset='medical_abstracts', epochs=10, batch_size=32, eval_batch_size=289,
      optimizer=OptimizerConfig(name='adamw', learning_rate=learning_rate, weight_decay=0.05,
                                schedule='warmup_cosine', warmup_steps=60),
      dropout_rate=0.5, class_weights='balanced', select_metric='f1',
      text=TextConfig(min_frequency=5, max_length=256), model_kwargs=model_kwargs,
      steps_per_dispatch=1, output_dir=f'runs/{model}_medical_abstracts')


# Medical Abstracts recipes, chosen on the validation split (`scripts/compare_text.py`).
TEXT_RECIPES = {
    'transformer': _text_recipe('transformer', {'embed_dim': 64, 'num_layers': 1, 'num_heads': 4,
                                                'mlp_dim': 128, 'pooling': 'attention'}),
    'gru': _text_recipe('gru', {'embed_dim': 64, 'hidden_size': 32, 'pooling': 'attention'}),
    # the pretrained encoder's shape, to compare from scratch with '+pretrained' (init_from)
    'transformer_2x128': _text_recipe('transformer', dict(PRETRAINED_ENCODER,
                                                          pooling='attention'),
                                      learning_rate=1e-3),
    # no Transformer block: the (pretrained) word embeddings, attention-pooled (fastText-like)
    'embedding_bag_128': _text_recipe('transformer', dict(PRETRAINED_ENCODER, num_layers=0,
                                                          pooling='attention'),
                                      learning_rate=1e-3),
}


# Masked-LM pretraining of a Transformer encoder on in-domain text (`scripts/pretrain.py`,
# dataset 'biomed_corpus': the NER corpora's train and devel sentences and Medical Abstracts'
# training split). Its run directory is what `init_from` takes.
_CORPUS_TEXT = TextConfig(vocab_size=20000, min_frequency=3, max_length=128)
PRETRAIN_RECIPE = TrainConfig(
    model='masked_lm', dataset='biomed_corpus', epochs=8, batch_size=64, eval_batch_size=256,
    optimizer=OptimizerConfig(name='adamw', learning_rate=1e-3, weight_decay=0.01,
                              schedule='warmup_cosine', warmup_steps=300, clip_norm=1.0),
    dropout_rate=0.1, select_metric='accuracy', text=_CORPUS_TEXT,
    model_kwargs=dict(PRETRAINED_ENCODER), steps_per_dispatch=4,
    output_dir='runs/pretrain_biomed')
# word2vec's skip-gram on the same corpus and vocabulary: word embeddings of the encoder's width
# ('Embed_0') for a fraction of the compute (`scripts/pretrain.py --objective skipgram`).
SKIPGRAM_RECIPE = TrainConfig(
    model='skipgram', dataset='biomed_corpus', epochs=20, batch_size=128, eval_batch_size=256,
    optimizer=OptimizerConfig(name='adam', learning_rate=3e-3, schedule='cosine'),
    text=_CORPUS_TEXT, model_kwargs={'embed_dim': PRETRAINED_ENCODER['embed_dim'], 'window': 5,
                                     'negatives': 5},
    steps_per_dispatch=8, output_dir='runs/pretrain_skipgram')
PRETRAIN_RECIPES = {'masked_lm': PRETRAIN_RECIPE, 'skipgram': SKIPGRAM_RECIPE}


def _ner_recipe(model: str, model_kwargs: dict, *, learning_rate: float,
                epochs: int) -> TrainConfig:
  return TrainConfig(
      model=model, dataset='ncbi_disease', epochs=epochs, batch_size=32, eval_batch_size=256,
      optimizer=OptimizerConfig(name='adam', learning_rate=learning_rate, clip_norm=5.0),
      dropout_rate=0.5, text=TextConfig(min_frequency=1, max_length=256, char_length=20),
      model_kwargs=dict(model_kwargs, word_dropout=0.15), early_stopping_patience=4,
      steps_per_dispatch=4, output_dir=f'runs/{model}_ncbi_disease')


# Named-entity taggers on NCBI-disease (`scripts/compare_ner.py`): a BiLSTM-CRF with character
# CNN features (Lample et al. 2016; Ma & Hovy 2016) and a Transformer-CRF of the pretrained
# encoder's shape; validation entity F1 picks the checkpoint.
NER_RECIPES = {
    'lstm_crf': _ner_recipe('lstm_tagger', {'embed_dim': 128, 'hidden_size': 128,
                                            'char_features': 64}, learning_rate=1e-3, epochs=15),
    'transformer_crf': _ner_recipe('transformer_tagger', dict(PRETRAINED_ENCODER,
                                                              char_features=64),
                                   learning_rate=5e-4, epochs=15),
}


def _survival_recipe(dataset: str, hidden, batch_size: int, epochs: int) -> TrainConfig:
  return TrainConfig(
      model='mlp', dataset=dataset, epochs=epochs, batch_size=batch_size, eval_batch_size=400,
      optimizer=OptimizerConfig(name='adam', learning_rate=1e-3, l2=0.01), dropout_rate=0.2,
      model_kwargs={'hidden': list(hidden)}, steps_per_dispatch=1,
      output_dir=f'runs/mlp_{dataset}')


# DeepSurv-style MLP risk models on DeepSurv's own splits (`scripts/compare_survival.py`).
SURVIVAL_RECIPES = {
    'metabric': _survival_recipe('metabric', (41,), 256, 60),
    'support': _survival_recipe('support', (64, 64), 512, 40),
}

# The U-Net on the 30 ISBI 2012 EM slices (`jmed.data.isbi`: 20 train / 5 validation / 5 test):
# Dice + cross-entropy, Adam, random 128x128 patches with the U-Net paper's augmentation
# (elastic deformation, flips, rot90), whole 512x512 slices scored by sliding windows;
# validation Dice picks the checkpoint (`scripts/compare_segmentation.py`). 200 steps; measured
# here: test cell Dice 0.946, IoU 0.898, pixel accuracy 0.912 (all-cell baseline: 0.890, 0.801),
# about 3 CPU-minutes. The same run from the command line:
#   python scripts/train.py --model unet --dataset isbi2012 --data-dir ../shared/data \
#     --model-kwargs '{"features": [16, 32, 64, 128]}' --optimizer adam --learning-rate 1e-3 \
#     --batch-size 4 --eval-batch-size 5 --epochs 40 --patch-size 128 \
#     --augment em_segmentation --eval-window 256 --eval-stride 128 --steps-per-dispatch 1
SEGMENTATION_RECIPES = {
    'isbi2012': TrainConfig(
        model='unet', dataset='isbi2012', epochs=40, batch_size=4, eval_batch_size=5,
        optimizer=OptimizerConfig(name='adam', learning_rate=1e-3),
        model_kwargs={'features': [16, 32, 64, 128]}, augment='em_segmentation',
        patch_size=128, eval_window=256, eval_stride=128, steps_per_dispatch=1,
        output_dir='runs/unet_isbi2012'),
}

# MedMNIST 3D on CPU (`scripts/compare_medmnist3d.py`): ResNet-18 with 3x3x3 convolutions at
# width 16 (MedMNIST: 64) and the strided 'imagenet' stem (7^3/2 + max pool/2): the 'small'
# stem keeps 28^3 into the first stage, about 12x the cost per step on XLA:CPU, too slow for a
# few-minute run on 2 cores. Adam, cosine decay, shape augmentation. Validation cross-entropy
# picks the checkpoint: AUROC on the 98 validation volumes (22 positive) chose, for one seed of
# three, an epoch-1 checkpoint that called every validation volume positive (val accuracy 0.22).
# Any subset: `dataclasses.replace(recipe, dataset=name, augment=...)`.
MEDMNIST3D_RECIPES = {
    'resnet18_3d': TrainConfig(
        model='resnet18_3d', dataset='adrenalmnist3d', epochs=10, batch_size=32,
        eval_batch_size=128, optimizer=OptimizerConfig(name='adam', learning_rate=1e-3,
                                                       schedule='cosine'),
        model_kwargs={'width': 16, 'stem': 'imagenet', 'conv_impl': 'auto'},
        augment='shape_volume', select_metric='loss', steps_per_dispatch=1,
        output_dir='runs/resnet18_3d'),
}

# The seed CNN on PneumoniaMNIST with and without DP-SGD (`scripts/compare_privacy.py`): the
# clip bound and learning rate were chosen so the private runs learn; no BatchNorm (DP-SGD).
PRIVACY_RECIPE = TrainConfig(
    model='seed_cnn', dataset='pneumoniamnist', epochs=5, batch_size=64, eval_batch_size=524,
    optimizer=OptimizerConfig(name='sgd', learning_rate=0.5),
    privacy=PrivacyConfig(l2_clip=1.0), output_dir='runs/privacy_pneumoniamnist')


def _molecule_recipe(model: str, dataset: str, model_kwargs: dict, *, epochs: int,
                     max_length: int, learning_rate: float, dropout_rate: float,
                     canonical: bool = False) -> TrainConfig:
  return TrainConfig(
      model=model, dataset=dataset, epochs=epochs, batch_size=32, eval_batch_size=200,
      optimizer=OptimizerConfig(name='adamw', learning_rate=learning_rate, weight_decay=0.01,
                                schedule='warmup_cosine', warmup_steps=50),
      molecule=MoleculeConfig(features='smiles', split='auto', max_length=max_length,
                              canonical=canonical),
      dropout_rate=dropout_rate, model_kwargs=model_kwargs, steps_per_dispatch=4,
      output_dir=f'runs/{model}_{dataset}')


def _molecule_recipes(dataset: str, max_length: int, canonical: bool = False,
                      **per_model) -> dict:
  """model -> recipe; `per_model[model]` = (epochs, learning rate, dropout, pooling);
  `canonical`: `MoleculeConfig.canonical`."""
  kwargs = {
      'transformer': {'embed_dim': 64, 'num_layers': 2, 'num_heads': 4, 'mlp_dim': 128,
                      'max_length': max_length},
      'gru': {'embed_dim': 64, 'hidden_size': 64},  # bidirectional
      'text_cnn': {'embed_dim': 64, 'features': 64, 'widths': [3, 5, 7]},
  }
  recipes = {}
  for model, (epochs, learning_rate, dropout_rate, pooling) in per_model.items():
    model_kwargs = dict(kwargs[model], **({'pooling': pooling} if pooling else {}))
    recipes[model] = _molecule_recipe(model, dataset, model_kwargs, epochs=epochs,
                                      max_length=max_length, learning_rate=learning_rate,
                                      dropout_rate=dropout_rate, canonical=canonical)
  return recipes


# SMILES models on MoleculeNet (split 'auto': ESOL random, BBBP scaffold, Tox21 random), chosen
# briefly on the validation split (`scripts/compare_molecules.py`): dataset -> model -> config.
# (epochs, learning rate, dropout, pooling) per model; max_length covers 99% of the molecules
# (ESOL's longest SMILES has 97 tokens, BBBP's and Tox21's 99th percentiles are 112; of RDKit's
# canonical SMILES, SIDER's 99th percentile is 561 tokens, ClinTox's 172). SIDER and ClinTox
# (random splits) read canonical SMILES (`MoleculeConfig.canonical`): ClinTox's file spells its
# failed molecules differently from its approved ones (see `jmed.data.moleculenet`).
MOLECULE_RECIPES = {
    'esol': _molecule_recipes('esol', 64, transformer=(40, 2e-3, 0.1, 'mean'),
                              gru=(40, 3e-3, 0.1, 'attention'), text_cnn=(60, 3e-3, 0.2, None)),
    'bbbp': _molecule_recipes('bbbp', 128, transformer=(30, 1e-3, 0.1, 'mean'),
                              gru=(20, 1e-3, 0.1, 'mean'), text_cnn=(30, 1e-3, 0.3, None)),
    'tox21': _molecule_recipes('tox21', 128, transformer=(8, 1e-3, 0.1, 'mean'),
                               gru=(10, 3e-3, 0.1, 'attention'),
                               text_cnn=(20, 3e-3, 0.2, None)),
    'sider': _molecule_recipes('sider', 600, canonical=True,
                               transformer=(30, 1e-3, 0.1, 'mean'),
                               gru=(20, 1e-3, 0.1, 'mean'),
                               text_cnn=(30, 1e-3, 0.2, None)),
    'clintox': _molecule_recipes('clintox', 176, canonical=True,
                                 transformer=(30, 1e-3, 0.1, 'mean'),
                                 gru=(20, 1e-3, 0.1, 'mean'),
                                 text_cnn=(20, 3e-3, 0.2, None)),
}


def _dmpnn_recipe(dataset: str, *, epochs: int, learning_rate: float = 1e-3,
                  dropout_rate: float = 0.0, features: str = 'graph', batch_size: int = 50,
                  **model_kwargs) -> TrainConfig:
  """Chemprop's D-MPNN setup (hidden 300, depth 3, mean readout, 2-layer head, batch 50, Adam
  at 1e-3 after a 2-epoch-like warm-up) on packed graphs, `model_kwargs` overriding the
  model's defaults."""
  return TrainConfig(
      model='dmpnn', dataset=dataset, epochs=epochs, batch_size=batch_size, eval_batch_size=256,
      optimizer=OptimizerConfig(name='adamw', learning_rate=learning_rate, weight_decay=0.0,
                                schedule='warmup_cosine', warmup_steps=40),
      molecule=MoleculeConfig(features=features, split='auto'),
      dropout_rate=dropout_rate, model_kwargs=model_kwargs, steps_per_dispatch=4,
      output_dir=f'runs/dmpnn_{dataset}')


# The D-MPNN (`jmed.models.dmpnn`) on packed graphs with RDKit's 2D descriptors, chosen briefly
# on the validation split (seed 0, `scripts/compare_molecules.py --models dmpnn`): descriptors
# lowered ESOL's validation RMSE from 0.64 to 0.49 and raised BBBP's validation ROC-AUC from
# 0.950 to 0.974; on BBBP, 12 epochs (validation peaks by epoch 7-10 of 30) and dropout 0.2
# (0.9741 against 0.9735 without). Tox21's recipe is untuned (Chemprop's defaults, fewer epochs).
MOLECULE_RECIPES['esol']['dmpnn'] = _dmpnn_recipe('esol', epochs=30,
                                                  features='graph_descriptors')
MOLECULE_RECIPES['bbbp']['dmpnn'] = _dmpnn_recipe('bbbp', epochs=12, dropout_rate=0.2,
                                                  features='graph_descriptors')
MOLECULE_RECIPES['tox21']['dmpnn'] = _dmpnn_recipe('tox21', epochs=15,
                                                   features='graph_descriptors')



def _effect_recipe(name: str, model: str, task_kwargs: dict, *, l2: float,
                   model_kwargs: Optional[dict] = None) -> TrainConfig:
  return TrainConfig(
      model=model, dataset='ihdp', epochs=60, batch_size=100, eval_batch_size=200,
      optimizer=OptimizerConfig(name='adam', learning_rate=3e-3, l2=l2),
      model_kwargs=model_kwargs or {}, task_kwargs=task_kwargs, select_metric='factual_rmse',
      steps_per_dispatch=4, progress=False, output_dir=f'runs/{name}_ihdp')


# Treatment-effect networks on IHDP (`scripts/compare_effects.py`; replication k:
# dataclasses.replace(recipe, dataset=f'ihdp_{k}')). Shalit et al. (ICML 2017)'s networks: a
# representation of 3 x 200 and heads of 3 x 100 (ELU) for TARNet and CFR, Shi et al. (NeurIPS
# 2019)'s heads of 2 x 100 for Dragonnet; Adam, batch 100 (it divides 1, 2 and 4 devices), 60
# epochs of the 470 training units, the checkpoint chosen by the validation factual RMSE. The
# learning rate, the coupled L2 on kernels, CFRNet's 'divide' normalisation of the
# representation and the loss weights were chosen on the mean validation factual RMSE over the
# 10 replications only (never a counterfactual metric): lr 3e-3 beat 1e-3 (TARNet 1.256 vs
# 1.323); L2 1e-2 (TARNet; 1e-3: 1.350), 3e-2 (CFR-Wass 1.222 vs 1.225; Dragonnet 1.256 vs
# 1.285); normalisation helps CFR (Wass 1.225 vs 1.401, MMD 1.232 vs 1.377 at weight 1), not
# TARNet (1.303); IPM weight 1 for Wasserstein (0.3: 1.245, 3: 1.339) and 3 for linear MMD
# (1: 1.232, 10: 1.338); Dragonnet's propensity and targeted-regularisation weights 0.3 (1.243;
# 1, Shi et al.'s: 1.256).
EFFECT_RECIPES = {
    'tarnet': _effect_recipe('tarnet', 'tarnet', {'ipm': 'none'}, l2=1e-2),
    'cfr_mmd': _effect_recipe('cfr_mmd', 'tarnet', {'ipm': 'mmd', 'ipm_weight': 3.0}, l2=1e-2,
                              model_kwargs={'normalize': True}),
    'cfr_wass': _effect_recipe('cfr_wass', 'tarnet', {'ipm': 'wasserstein', 'ipm_weight': 1.0},
                               l2=3e-2, model_kwargs={'normalize': True}),
    'dragonnet': _effect_recipe('dragonnet', 'dragonnet',
                                {'propensity_weight': 0.3, 'targeted_weight': 0.3}, l2=3e-2),
}
