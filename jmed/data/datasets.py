"""`load_dataset`: one entry point for jmed's classification datasets.

Offline use: point `data_dir` (or the env var `JMED_DATA_DIR`) at a root
holding one subfolder per source:

  <data_dir>/mnist/t10k-images-idx3-ubyte.gz, ...   (see jmed.data.mnist)
  <data_dir>/medmnist/pneumoniamnist.npz, ...       (see jmed.data.medmnist)
  <data_dir>/moleculenet/tox21.csv, delaney-processed.csv, BBBP.csv
                                                    (see jmed.data.moleculenet)
  <data_dir>/medical_abstracts/medical_tc_test.csv  (see jmed.data.medical_abstracts)
  <data_dir>/survival/metabric_IHC4_clinical_train_test.h5, support_train_test.h5
                                                    (see jmed.data.survival)

With neither set, MNIST, MedMNIST and Medical Abstracts are downloaded through
TFDS, and the MoleculeNet CSVs (Tox21, ESOL, BBBP) from DeepChem into
`$JMED_CACHE_DIR` (default `~/.cache/jmed`); the survival sets must be
downloaded by hand.
"""

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from jmed.data import medical_abstracts
from jmed.data import medmnist
from jmed.data import mnist
from jmed.data import moleculenet
from jmed.data import survival
from jmed.data import timeseries
from jmed.data.errors import DataError, MissingDataError

ENV_VAR = 'JMED_DATA_DIR'
CACHE_ENV_VAR = 'JMED_CACHE_DIR'
TASKS = ('binary', 'multiclass', 'multilabel', 'survival', 'regression')
NAMES = (('mnist',) + medmnist.NAMES + ('tox21', 'medical_abstracts') + survival.NAMES
         + ('mnist_irregular', 'esol', 'bbbp'))
IRREGULAR_MNIST_VALIDATION = 1000  # last training images held out for validation

Split = Tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True, eq=False)  # Arrays: compare by identity.
class Dataset:
  """An in-memory labelled dataset; validated on construction.

  Attributes:
    name: e.g. 'mnist', 'pneumoniamnist' or 'tox21'.
    splits: split name -> `(inputs, labels)`. Inputs `[n, *image_shape]`:
      float32 images in [0, 1], other finite float32 features, or int32
      token ids >= 0. Labels: int32 `[n]` in [0, num_classes); int32
      `[n, num_classes]` for 'multilabel', each 1, 0 or -1 (missing); float32
      `[n, 2]` (time >= 0, event 1 / censored 0) for 'survival'; finite
      float32 `[n, num_classes]` targets in their original units for
      'regression' (e.g. ESOL's log solubility, `[n, 1]`).
    num_classes: number of classes (independent labels for 'multilabel';
      1, the risk score, for 'survival'; the number of targets for
      'regression').
    task: 'binary', 'multiclass', 'multilabel', 'survival' or 'regression'.
    image_shape: the per-example input shape: `(height, width, channels)`
      for images, `(bits,)` for molecular fingerprints, `(max_length,)` for
      token ids (text or SMILES), `(steps, 1 + 3 * features)` for packed
      series.
    model_kwargs: what a model needs to know about the data, e.g.
      `{'vocab_size': ...}` for text and SMILES.
    tokenizer: what made token-id inputs, with a `save(path)` method: the
      `tokenizers.Tokenizer` of text, the `jmed.text.smiles.Vocabulary` of
      SMILES (else None).
  """

  name: str
  splits: Dict[str, Split]
  num_classes: int
  task: str
  image_shape: Tuple[int, ...]
  model_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
  tokenizer: Any = None

  def __post_init__(self):
    validate(self)

  @property
  def sizes(self) -> Dict[str, int]:
    """Split name -> number of examples."""
    return {split: len(labels) for split, (_, labels) in self.splits.items()}


def load_dataset(name: str, data_dir: Optional[str] = None,
                 tfds_dir: Optional[str] = None, *,
                 split_kind: Optional[str] = None, text=None,
                 molecule=None) -> Dataset:
  """Loads dataset `name` as model-ready arrays.

  Args:
    name: 'mnist', a MedMNIST 2D subset, 'tox21', 'esol', 'bbbp', ... (see
      `NAMES`).
    data_dir: root with `mnist/`, `medmnist/` and `moleculenet/` subfolders of
      original files; defaults to `$JMED_DATA_DIR`. If both are unset, MNIST
      and MedMNIST are downloaded through TFDS.
    tfds_dir: TFDS data directory where MedMNIST is prepared (and online MNIST
      cached); None uses the TFDS default (`$TFDS_DATA_DIR` or
      `~/tensorflow_datasets`).
    split_kind: how to split datasets without official splits (the
      MoleculeNet sets 'tox21', 'esol', 'bbbp'): 'random' or 'scaffold';
      overrides `molecule.split`. Must be None for the others.
    text: a `jmed.configs.TextConfig` for text datasets (default: its
      defaults): the tokenizer learned from the training split.
    molecule: a `jmed.configs.MoleculeConfig` for 'esol', 'bbbp' and 'tox21'
      (features, split, seed, lengths, invalid SMILES). None means its
      defaults (SMILES token ids, MoleculeNet's split, invalid rows dropped),
      except for 'tox21', where None keeps the original loader: 1024-bit
      fingerprints, random split (seed 0), invalid SMILES raise.

  Returns:
    A validated `Dataset`. MNIST has splits 'train' and 'test' (offline with
    only the official test files: its first 8,000 / last 2,000 images, see
    `jmed.data.mnist`); MedMNIST and Tox21 have 'train', 'validation' and
    'test' (Tox21, ESOL, BBBP: 80/10/10, SMILES token ids or Morgan
    fingerprints; Tox21 has 12 labels with -1 for missing, ESOL is
    'regression' with float32 labels `[n, 1]`, BBBP 'binary'; see
    `jmed.data.moleculenet`). 'medical_abstracts' is token ids
    of a stratified 70/10/20 split of the corpus' official test file (see
    `jmed.data.medical_abstracts`); 'metabric' and 'support' are DeepSurv's
    train/test splits with validation carved from train (see
    `jmed.data.survival`); 'mnist_irregular' is MNIST rows as irregularly
    sampled series with missing pixels, packed for GRU-D (see
    `jmed.data.timeseries.irregular_mnist`).

  Raises:
    DataError: unknown `name` (the message lists valid names), or a missing
      (`MissingDataError`) or corrupt file (the message names its path).
  """
  if name not in NAMES:
    raise DataError(f'Unknown dataset {name!r}; valid names: '
                    f'{", ".join(NAMES)}.')
  data_dir = resolve_data_dir(data_dir)
  if name in moleculenet.NAMES:
    return _load_molecules(name, data_dir, split_kind, molecule)
  if split_kind is not None:
    raise DataError(f'{name} has fixed splits; split_kind must be None, '
                    f'got {split_kind!r}.')
  if name == 'medical_abstracts':
    return _load_text(data_dir, tfds_dir, text)
  if name in survival.NAMES:
    return _load_survival(name, data_dir)
  if name == 'mnist_irregular':
    return _load_irregular_mnist(data_dir, tfds_dir)
  if name == 'mnist':
    raw = _load_mnist(data_dir, tfds_dir)
    num_classes, task, image_shape = (
        mnist.NUM_CLASSES, 'multiclass', mnist.IMAGE_SHAPE)
  else:
    raw = _load_medmnist(name, data_dir, tfds_dir)
    config = medmnist.get_config(name)
    num_classes, task, image_shape = (
        config.num_classes, config.task, config.image_shape)
  splits = {split: (to_float(images), labels.astype(np.int32))
            for split, (images, labels) in raw.items()}
  return Dataset(name=name, splits=splits, num_classes=num_classes, task=task,
                 image_shape=image_shape)


def cache_dir() -> str:
  """Where downloads without a TFDS builder go: `$JMED_CACHE_DIR`, else `~/.cache/jmed`."""
  return os.environ.get(CACHE_ENV_VAR) or os.path.join(os.path.expanduser('~'), '.cache',
                                                       'jmed')


def resolve_data_dir(data_dir: Optional[str] = None) -> Optional[str]:
  """`data_dir`, else `$JMED_DATA_DIR`, else None (download online)."""
  if data_dir is not None:
    return os.fspath(data_dir)
  return os.environ.get(ENV_VAR) or None


def to_float(images: np.ndarray) -> np.ndarray:
  """Maps uint8 images `[n, h, w, c]` in [0, 255] to float32 in [0, 1]."""
  return np.divide(images, 255, dtype=np.float32)


def _load_mnist(data_dir, tfds_dir) -> Dict[str, Split]:
  if data_dir is None:
    return mnist.load_tfds(tfds_dir)
  return mnist.load_offline(os.path.join(data_dir, 'mnist'))


def _load_medmnist(name, data_dir, tfds_dir) -> Dict[str, Split]:
  if data_dir is None:
    return medmnist.load(name, tfds_dir=tfds_dir)
  manual_dir = os.path.join(data_dir, 'medmnist')
  path = os.path.join(manual_dir, f'{name}.npz')
  if not os.path.isfile(path):
    raise MissingDataError(f'MedMNIST file not found: {path} (download it '
                           f'from {medmnist.URL.format(name=name)})')
  return medmnist.load(name, tfds_dir=tfds_dir, manual_dir=manual_dir)


def _load_molecules(name, data_dir, split_kind, molecule) -> Dataset:
  from jmed.configs import MoleculeConfig  # pylint: disable=g-import-not-at-top
  if data_dir is None:  # download from DeepChem into the cache once
    folder = os.path.join(cache_dir(), 'moleculenet')
    moleculenet.download(name, folder)
  else:
    folder = os.path.join(data_dir, 'moleculenet')
  if molecule is None and name == 'tox21':  # The original Tox21 loader.
    molecule = MoleculeConfig(features='fingerprint', split='random',
                              skip_invalid=False)
  molecule = molecule or MoleculeConfig()
  loaded = moleculenet.load(
      name, folder, features=molecule.features,
      split=split_kind or molecule.split, seed=molecule.split_seed,
      max_length=molecule.max_length, bits=molecule.fingerprint_bits,
      skip_invalid=molecule.skip_invalid)
  model_kwargs = ({'vocab_size': loaded.vocab.vocab_size}
                  if loaded.vocab is not None else {})
  return Dataset(name=name, splits=loaded.splits,
                 num_classes=loaded.num_classes, task=loaded.task,
                 image_shape=loaded.splits['train'][0].shape[1:],
                 model_kwargs=model_kwargs, tokenizer=loaded.vocab)


def _load_text(data_dir, tfds_dir, text) -> Dataset:
  from jmed import text as jtext  # pylint: disable=g-import-not-at-top
  from jmed.configs import TextConfig  # pylint: disable=g-import-not-at-top
  text = text or TextConfig()
  raw = medical_abstracts.load(data_dir, tfds_dir)
  tokenizer = jtext.train_tokenizer(
      raw['train'][0], kind=text.tokenizer, vocab_size=text.vocab_size,
      min_frequency=text.min_frequency)
  splits = {split: (jtext.encode(tokenizer, texts, text.max_length),
                    np.asarray(labels, np.int32))
            for split, (texts, labels) in raw.items()}
  return Dataset(name='medical_abstracts', splits=splits,
                 num_classes=len(medical_abstracts.CLASS_NAMES),
                 task='multiclass', image_shape=(text.max_length,),
                 model_kwargs={'vocab_size': jtext.vocab_size(tokenizer)},
                 tokenizer=tokenizer)


def _load_survival(name, data_dir) -> Dataset:
  if data_dir is None:
    raise MissingDataError(
        f'{name} has no online loader: download DeepSurv\'s files from '
        f'{survival.URL} into <data_dir>/survival/ and pass data_dir (or set '
        f'${ENV_VAR}).')
  splits = survival.load(name, data_dir)
  return Dataset(name=name, splits=splits, num_classes=1, task='survival',
                 image_shape=splits['train'][0].shape[1:])


def _load_irregular_mnist(data_dir, tfds_dir) -> Dataset:
  raw = _load_mnist(data_dir, tfds_dir)
  images, labels = raw['train']
  cut = len(images) - IRREGULAR_MNIST_VALIDATION
  parts = {'train': (images[:cut], labels[:cut]),
           'validation': (images[cut:], labels[cut:]), 'test': raw['test']}
  records = {split: timeseries.irregular_mnist(x, y, seed=seed)
             for seed, (split, (x, y)) in enumerate(parts.items())}
  mean, std = timeseries.feature_stats(records['train'])
  steps = mnist.IMAGE_SHAPE[0]
  splits = {split: timeseries.pack(r, steps, mean, std, time_scale=steps)
            for split, r in records.items()}
  return Dataset(name='mnist_irregular', splits=splits,
                 num_classes=mnist.NUM_CLASSES, task='multiclass',
                 image_shape=splits['train'][0].shape[1:])


def validate(dataset: Dataset) -> None:
  """Checks task, shapes, dtypes, sizes, pixel and label ranges.

  Raises:
    DataError: naming the dataset and split at fault.
  """
  if dataset.task not in TASKS:
    raise DataError(f'{dataset.name}: task {dataset.task!r} not in {TASKS}.')
  if dataset.task == 'survival' and dataset.num_classes != 1:
    raise DataError(f'{dataset.name}: survival needs num_classes 1 (the risk '
                    f'score), got {dataset.num_classes}.')
  if dataset.task == 'binary' and dataset.num_classes != 2:
    raise DataError(f'{dataset.name}: binary task with '
                    f'{dataset.num_classes} classes.')
  if dataset.num_classes < 1 or not dataset.image_shape:
    raise DataError(f'{dataset.name}: bad num_classes {dataset.num_classes} '
                    f'or image_shape {dataset.image_shape}.')
  if not dataset.splits:
    raise DataError(f'{dataset.name}: no splits.')
  for split, (images, labels) in dataset.splits.items():
    where = f'{dataset.name}/{split}'
    _validate_inputs(where, images, tuple(dataset.image_shape),
                     dataset.model_kwargs.get('vocab_size'))
    if dataset.task == 'survival':
      _validate_survival(where, labels, len(images))
    elif dataset.task == 'regression':
      _validate_regression(where, labels, len(images), dataset.num_classes)
    else:
      _validate_labels(where, labels, len(images), dataset.num_classes,
                       dataset.task == 'multilabel')


def _validate_inputs(where, inputs, shape, vocab_size) -> None:
  if inputs.dtype not in (np.float32, np.int32) or inputs.shape[1:] != shape:
    raise DataError(f'{where}: inputs are {inputs.dtype} {inputs.shape}, '
                    f'expected float32 or int32 [n, *{shape}].')
  if len(inputs) == 0:
    raise DataError(f'{where}: no examples.')
  if inputs.dtype == np.int32:  # token ids
    if inputs.min() < 0 or (vocab_size and inputs.max() >= vocab_size):
      raise DataError(f'{where}: token ids outside [0, {vocab_size}): '
                      f'[{inputs.min()}, {inputs.max()}].')
    return
  if not np.isfinite(inputs).all():
    raise DataError(f'{where}: inputs hold NaN or infinite values.')
  if len(shape) == 3 and (inputs.min() < 0 or inputs.max() > 1):
    raise DataError(f'{where}: pixel values outside [0, 1].')


def _validate_survival(where, labels, n) -> None:
  if labels.dtype != np.float32 or labels.shape != (n, 2):
    raise DataError(f'{where}: survival labels are {labels.dtype} '
                    f'{labels.shape}, expected float32 [{n}, 2] (time, event).')
  time, event = labels[:, 0], labels[:, 1]
  if not np.isfinite(time).all() or time.min() < 0:
    raise DataError(f'{where}: survival times must be finite and >= 0.')
  if not np.isin(event, (0, 1)).all():
    raise DataError(f'{where}: events must be 1 (event) or 0 (censored).')


def _validate_regression(where, labels, n, num_classes) -> None:
  if labels.dtype != np.float32 or labels.shape != (n, num_classes):
    raise DataError(f'{where}: regression labels are {labels.dtype} '
                    f'{labels.shape}, expected float32 [{n}, {num_classes}].')
  if not np.isfinite(labels).all():
    raise DataError(f'{where}: regression labels hold NaN or infinite values.')


def _validate_labels(where, labels, n, num_classes, multilabel) -> None:
  shape = (n, num_classes) if multilabel else (n,)
  if labels.dtype != np.int32 or labels.shape != shape:
    raise DataError(f'{where}: labels are {labels.dtype} {labels.shape}, '
                    f'expected int32 {shape}.')
  if multilabel:  # 1, 0 or -1 (missing).
    if labels.min() < -1 or labels.max() > 1:
      raise DataError(f'{where}: labels outside {{-1, 0, 1}} (-1 = missing): '
                      f'[{labels.min()}, {labels.max()}].')
  elif labels.min() < 0 or labels.max() >= num_classes:
    raise DataError(f'{where}: labels outside [0, {num_classes}): '
                    f'[{labels.min()}, {labels.max()}].')
