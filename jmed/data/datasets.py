"""`load_dataset`: one entry point for jmed's datasets, and the `Dataset` they load into.

Offline use: point `data_dir` (or the env var `JMED_DATA_DIR`) at a root holding one subfolder
per source:

  <data_dir>/mnist/t10k-images-idx3-ubyte.gz, ...   (see jmed.data.mnist)
  <data_dir>/medmnist/pneumoniamnist.npz, ...       (see jmed.data.medmnist)
  <data_dir>/moleculenet/tox21.csv, delaney-processed.csv, BBBP.csv, sider.csv, clintox.csv
                                                    (see jmed.data.moleculenet)
  <data_dir>/medical_abstracts/medical_tc_test.csv  (see jmed.data.medical_abstracts)
  <data_dir>/survival/metabric_IHC4_clinical_train_test.h5, support_train_test.h5
                                                    (see jmed.data.deepsurv)
  <data_dir>/medmnist3d/adrenalmnist3d.npz, ...     (see jmed.data.medmnist3d)
  <data_dir>/segmentation/isbi2012/image/0.png, label/0.png, ...   (see jmed.data.isbi)
  <data_dir>/ihdp/ihdp_npci_1.csv, ... ihdp_npci_10.csv   (see jmed.data.ihdp)
  <data_dir>/ner/NCBI-disease-IOB/train.tsv, devel.tsv, test.tsv, BC2GM-IOB/..., JNLPBA/...
                                                    (see jmed.data.conll, jmed.data.corpus)

With neither set, MNIST, MedMNIST and Medical Abstracts are downloaded through TFDS, and the
MoleculeNet CSVs (Tox21, ESOL, BBBP, SIDER, ClinTox) from DeepChem and the IHDP CSVs from
CEVAE's repository into `$JMED_CACHE_DIR` (default `~/.cache/jmed`); DeepSurv's files must be
downloaded by hand.

Each source's module (and its libraries: tensorflow-datasets, RDKit, h5py, tokenizers) is
imported only when that source is loaded.
"""

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from jmed import tasks
from jmed.errors import DataError, MissingDataError

ENV_VAR = 'JMED_DATA_DIR'
CACHE_ENV_VAR = 'JMED_CACHE_DIR'
MEDMNIST_NAMES = ('pathmnist', 'chestmnist', 'dermamnist', 'octmnist', 'pneumoniamnist',
                  'retinamnist', 'breastmnist', 'bloodmnist', 'tissuemnist', 'organamnist',
                  'organcmnist', 'organsmnist')
MOLECULENET_NAMES = ('tox21', 'esol', 'bbbp', 'sider', 'clintox')
DEEPSURV_NAMES = ('metabric', 'support')
MEDMNIST3D_NAMES = tuple(f'{n}{size}' for n in (
    'organmnist3d', 'nodulemnist3d', 'adrenalmnist3d', 'fracturemnist3d', 'vesselmnist3d',
    'synapsemnist3d') for size in ('', '_64'))  # as jmed.data.medmnist3d.NAMES
NER_NAMES = ('ncbi_disease', 'bc2gm')  # as jmed.data.conll.NER_CORPORA
IHDP_NAMES = ('ihdp',) + tuple(f'ihdp_{k}' for k in range(1, 11))  # as jmed.data.ihdp.NAMES
NAMES = (('mnist',) + MEDMNIST_NAMES + ('tox21', 'medical_abstracts') + DEEPSURV_NAMES
         + ('mnist_irregular', 'esol', 'bbbp', 'mnist_segmentation', 'isbi2012')
         + MEDMNIST3D_NAMES + IHDP_NAMES + ('sider', 'clintox') + NER_NAMES
         + ('biomed_corpus',))
MNIST_VALIDATION = 1000  # last training images held out for validation by the MNIST variants

Split = Tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True, eq=False)  # Arrays: compare by identity.
class Dataset:
  """An in-memory labelled dataset; validated on construction.

  Attributes:
    name: e.g. 'mnist', 'pneumoniamnist' or 'tox21'.
    splits: split name -> `(inputs, labels)`. Inputs `[n, *input_shape]`: float32 images in
      [0, 1], other finite float32 features, or int32 token ids >= 0. Labels `[n, ...]` in the
      layout of the task (`jmed.tasks`): int32 class ids `[n]`; int32 `[n, num_classes]` of
      1 / 0 / -1 (missing) for 'multilabel'; float32 `[n, 2]` (time, event) for 'survival';
      float32 `[n, num_classes]` targets in their own units for 'regression'; int32 masks
      `[n, *input_shape[:-1]]` for 'segmentation'; float32 `[n, 4]` (treatment, outcome, mu0,
      mu1; mu NaN where unknown) for 'treatment_effect'.
    num_classes: the model's outputs: classes (labels for 'multilabel', targets for
      'regression', 1 for 'survival', classes with background for 'segmentation', 2 potential
      outcomes for 'treatment_effect').
    task: the task kind's name, a key of `jmed.tasks.TASKS`.
    input_shape: the per-example input shape: `(height, width, channels)` for images,
      `(bits,)` for molecular fingerprints, `(max_length,)` for token ids (text or SMILES),
      `(steps, 1 + 3 * features)` for packed series.
    model_kwargs: what a model needs to know about the data, e.g. `{'vocab_size': ...}` for
      text and SMILES.
    tokenizer: what made token-id inputs, with a `save(path)` method: the
      `tokenizers.Tokenizer` of text, the `jmed.text.smiles.Vocabulary` of SMILES (else None).
    preprocessing: for a user's own file (`jmed.data.user`), JSON-able state that turns a new
      file of the same format into inputs exactly as training did (column statistics,
      categories, class names, image size, ...); saved with the run as preprocessing.json.
    split_info: how the rows were split (rule, seed, fractions, column, sizes), recorded in
      summary.json.
    task_kwargs: what the task must know about the data, set as fields of the task before
      training (e.g. `{'tags': ('O', 'B-Disease', 'I-Disease')}` for 'tagging').

  Inputs may also be a lazy array (images read from files on demand, `jmed.data.images`, or
  records read from ArrayRecord shards, `jmed.data.records`): an object with `shape`, `dtype`,
  `ndim`, `len()` and `[index_array or slice]` giving a NumPy array; only a sample of it is
  validated here.
  """

  name: str
  splits: Dict[str, Split]
  num_classes: int
  task: str
  input_shape: Tuple[int, ...]
  model_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
  tokenizer: Any = None
  preprocessing: Optional[Dict[str, Any]] = None
  split_info: Optional[Dict[str, Any]] = None
  task_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    validate(self)

  @property
  def sizes(self) -> Dict[str, int]:
    """Split name -> number of examples."""
    return {split: len(labels) for split, (_, labels) in self.splits.items()}


def load_dataset(name: str, data_dir: Optional[str] = None, tfds_dir: Optional[str] = None, *,
                 split_kind: Optional[str] = None, text=None, molecule=None) -> Dataset:
  """Loads dataset `name` as model-ready arrays.

  Args:
    name: 'mnist', a MedMNIST 2D subset, 'tox21', 'esol', 'bbbp', ... (see `NAMES`).
    data_dir: root with one subfolder per source (see the module docstring); defaults to
      `$JMED_DATA_DIR`. If both are unset, the sources that can be downloaded are.
    tfds_dir: TFDS data directory. None: with a `data_dir`, local files are read directly and
      nothing is written; online, the TFDS default (`$TFDS_DATA_DIR` or
      `~/tensorflow_datasets`). Given: local MedMNIST and Medical Abstracts files are prepared
      into `<tfds_dir>/jmed-sources/<key>`, the key a digest of the file's content and
      location (`medmnist.source_dir`), so a changed file is rebuilt.
    split_kind: how to split the MoleculeNet sets (`MOLECULENET_NAMES`): 'random' or
      'scaffold'; overrides `molecule.split`. Must be None for the others.
    text: a `jmed.configs.TextConfig` for text datasets (default: its defaults): the tokenizer
      learned from the training split.
    molecule: a `jmed.configs.MoleculeConfig` for the MoleculeNet sets (features, split,
      seed, lengths, invalid SMILES). None means its defaults (SMILES token ids, MoleculeNet's
      split, invalid rows dropped), except for 'tox21', where None keeps its original form:
      1024-bit fingerprints, random split (seed 0), invalid SMILES raise.

  Returns:
    A validated `Dataset`:
      * 'mnist': 'train' and 'test' (offline with only the official test files: its first
        8,000 / last 2,000 images, see `jmed.data.mnist`).
      * MedMNIST subsets: the official 'train', 'validation' and 'test'.
      * 'tox21', 'esol', 'bbbp', 'sider', 'clintox': 80/10/10, SMILES token ids or Morgan
        fingerprints (Tox21 12 labels with -1 for missing; ESOL 'regression' with float32
        labels `[n, 1]`; BBBP 'binary'; SIDER 27 and ClinTox 2 'multilabel' labels; see
        `jmed.data.moleculenet`).
      * 'medical_abstracts': token ids of a stratified 70/10/20 split of the corpus' official
        test file (see `jmed.data.medical_abstracts`).
      * 'metabric', 'support': DeepSurv's train/test splits with validation carved from train
        (see `jmed.data.deepsurv`).
      * 'mnist_irregular': MNIST rows as irregularly sampled series with missing pixels, packed
        for GRU-D (see `jmed.data.timeseries.irregular_mnist`).
      * MedMNIST 3D ('adrenalmnist3d', 'adrenalmnist3d_64', 'organmnist3d', ...): float32
        volumes [n, d, h, w, 1] in [0, 1], the official splits (see `jmed.data.medmnist3d`).
      * 'mnist_segmentation': MNIST images with per-pixel targets (digit + 1 on the stroke,
        0 background: 11 classes), 'validation' the last 1,000 training images.
      * 'isbi2012': the 30 ISBI 2012 EM slices [512, 512, 1] with masks (1 cell interior,
        0 membrane; task 'segmentation', 2 classes), split in contiguous blocks of the
        consecutive slices: 0-19 train, 20-24 validation, 25-29 test (see `jmed.data.isbi`).
      * 'ihdp', 'ihdp_1' ... 'ihdp_10': the IHDP treatment-effect benchmark (replication k;
        'ihdp' is 1), task 'treatment_effect', labels (treatment, y_factual, mu0, mu1), a 63/27/10
        random split seeded by k (see `jmed.data.ihdp`).
      * 'ncbi_disease', 'bc2gm': biomedical NER corpora (IOB2), the corpora's own train / devel
        / test; inputs word and character ids [n, length, 1 + text.char_length], labels tag ids
        [n, length] (-1 padding), task 'tagging' (see `jmed.data.conll`).
      * 'biomed_corpus': unlabelled in-domain text for masked-LM pretraining: the NER corpora's
        train and devel sentences and Medical Abstracts' training split, never a test split
        (see `jmed.data.corpus`).

  Raises:
    DataError: unknown `name` (the message lists valid names), or a missing
      (`MissingDataError`) or corrupt file (the message names its path).
  """
  if name not in NAMES:
    raise DataError(f'Unknown dataset {name!r}; valid names: {", ".join(NAMES)}.')
  data_dir = resolve_data_dir(data_dir)
  if name in MOLECULENET_NAMES:
    return _load_molecules(name, data_dir, split_kind, molecule)
  if split_kind is not None:
    raise DataError(f'{name} has fixed splits; split_kind must be None, got {split_kind!r}.')
  if name == 'medical_abstracts':
    return _load_text(data_dir, tfds_dir, text)
  if name in DEEPSURV_NAMES:
    return _load_deepsurv(name, data_dir)
  if name == 'mnist_irregular':
    return _load_irregular_mnist(data_dir, tfds_dir)
  if name == 'mnist_segmentation':
    return _load_mnist_segmentation(data_dir, tfds_dir)
  if name in MEDMNIST3D_NAMES:
    return _load_medmnist3d(name, data_dir)
  if name == 'isbi2012':
    return _load_isbi(data_dir)
  if name in IHDP_NAMES:
    from jmed.data import ihdp  # pylint: disable=g-import-not-at-top
    return ihdp.load(name, data_dir, cache_dir())
  if name in NER_NAMES:
    from jmed.data import conll  # pylint: disable=g-import-not-at-top
    return conll.load(name, data_dir, text)
  if name == 'biomed_corpus':
    from jmed.data import corpus  # pylint: disable=g-import-not-at-top
    return corpus.load(data_dir, text)
  if name == 'mnist':
    return _load_mnist(data_dir, tfds_dir)
  return _load_medmnist(name, data_dir, tfds_dir)


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


# ---------------------------------------------------------------- one loader per source


def _mnist_splits(data_dir, tfds_dir) -> Dict[str, Split]:
  from jmed.data import mnist  # pylint: disable=g-import-not-at-top
  if data_dir is None:
    return mnist.load_tfds(tfds_dir)
  return mnist.load_offline(os.path.join(data_dir, 'mnist'))


def _float_images(raw: Dict[str, Split]) -> Dict[str, Split]:
  return {split: (to_float(images), labels.astype(np.int32))
          for split, (images, labels) in raw.items()}


def _load_mnist(data_dir, tfds_dir) -> Dataset:
  from jmed.data import mnist  # pylint: disable=g-import-not-at-top
  return Dataset(name='mnist', splits=_float_images(_mnist_splits(data_dir, tfds_dir)),
                 num_classes=mnist.NUM_CLASSES, task='multiclass',
                 input_shape=mnist.IMAGE_SHAPE)


def _load_medmnist(name, data_dir, tfds_dir) -> Dataset:
  """Online (no `data_dir`): downloaded and prepared into `tfds_dir`. Offline: the npz read
  directly when `tfds_dir` is None (nothing written), else built into a TFDS directory keyed
  by the file's location and content (`medmnist.source_dir`), never a stale build."""
  from jmed.data import medmnist  # pylint: disable=g-import-not-at-top
  if data_dir is None:
    raw = medmnist.load(name, tfds_dir=tfds_dir)
  else:
    manual_dir = os.path.join(data_dir, 'medmnist')
    path = os.path.join(manual_dir, f'{name}.npz')
    if not os.path.isfile(path):
      raise MissingDataError(f'MedMNIST file not found: {path} (download it from '
                             f'{medmnist.URL.format(name=name)})')
    raw = medmnist.load(name, tfds_dir=tfds_dir, manual_dir=manual_dir)
  config = medmnist.get_config(name)
  return Dataset(name=name, splits=_float_images(raw), num_classes=config.num_classes,
                 task=config.task, input_shape=config.image_shape)


def _load_medmnist3d(name, data_dir) -> Dataset:
  """MedMNIST 3D volumes [n, d, h, w, 1]: the local npz read directly, or downloaded into the
  cache (MD5-checked); see `jmed.data.medmnist3d`."""
  from jmed.data import medmnist3d  # pylint: disable=g-import-not-at-top
  return medmnist3d.load(name, data_dir, cache_dir())


def _load_molecules(name, data_dir, split_kind, molecule) -> Dataset:
  """A MoleculeNet preset through the 'smiles' source (`moleculenet.load`)."""
  from jmed.configs import MoleculeConfig  # pylint: disable=g-import-not-at-top
  from jmed.data import moleculenet  # pylint: disable=g-import-not-at-top
  if data_dir is None:  # download from DeepChem into the cache once
    folder = os.path.join(cache_dir(), 'moleculenet')
    moleculenet.download(name, folder)
  else:
    folder = os.path.join(data_dir, 'moleculenet')
  if molecule is None and name == 'tox21':  # Tox21's original form: fingerprints.
    molecule = MoleculeConfig(features='fingerprint', split='random', skip_invalid=False)
  molecule = molecule or MoleculeConfig()
  return moleculenet.load(
      name, folder, features=molecule.features, split=split_kind or molecule.split,
      seed=molecule.split_seed, max_length=molecule.max_length, bits=molecule.fingerprint_bits,
      skip_invalid=molecule.skip_invalid, canonical=molecule.canonical)


def _load_text(data_dir, tfds_dir, text) -> Dataset:
  """Medical Abstracts; its CSV is read as `_load_medmnist` reads an npz (see
  `medical_abstracts.load`)."""
  from jmed.configs import TextConfig  # pylint: disable=g-import-not-at-top
  from jmed.data import medical_abstracts  # pylint: disable=g-import-not-at-top
  from jmed.text import tokenizer as jtokenizer  # pylint: disable=g-import-not-at-top
  text = text or TextConfig()
  raw = medical_abstracts.load(data_dir, tfds_dir)
  tokenizer = jtokenizer.from_config(raw['train'][0], text)
  splits = {split: (jtokenizer.encode(tokenizer, texts, text.max_length),
                    np.asarray(labels, np.int32))
            for split, (texts, labels) in raw.items()}
  return Dataset(name='medical_abstracts', splits=splits,
                 num_classes=len(medical_abstracts.CLASS_NAMES), task='multiclass',
                 input_shape=(text.max_length,),
                 model_kwargs={'vocab_size': jtokenizer.vocab_size(tokenizer)},
                 tokenizer=tokenizer)


def _load_deepsurv(name, data_dir) -> Dataset:
  from jmed.data import deepsurv  # pylint: disable=g-import-not-at-top
  if data_dir is None:
    raise MissingDataError(
        f"{name} has no online loader: download DeepSurv's files from {deepsurv.URL} into "
        f'<data_dir>/{deepsurv.SUBDIR}/ and pass data_dir (or set ${ENV_VAR}).')
  splits = deepsurv.load(name, data_dir)
  return Dataset(name=name, splits=splits, num_classes=1, task='survival',
                 input_shape=splits['train'][0].shape[1:])


def _mnist_with_validation(data_dir, tfds_dir) -> Dict[str, Split]:
  """MNIST's splits with the last `MNIST_VALIDATION` training images as 'validation'."""
  raw = _mnist_splits(data_dir, tfds_dir)
  images, labels = raw['train']
  cut = len(images) - MNIST_VALIDATION
  return {'train': (images[:cut], labels[:cut]),
          'validation': (images[cut:], labels[cut:]), 'test': raw['test']}


def _load_irregular_mnist(data_dir, tfds_dir) -> Dataset:
  from jmed.data import mnist, timeseries  # pylint: disable=g-import-not-at-top
  parts = _mnist_with_validation(data_dir, tfds_dir)
  records = {split: timeseries.irregular_mnist(x, y, seed=seed)
             for seed, (split, (x, y)) in enumerate(parts.items())}
  mean, std = timeseries.feature_stats(records['train'])
  steps = mnist.IMAGE_SHAPE[0]
  splits = {split: timeseries.pack(r, steps, mean, std, time_scale=steps)
            for split, r in records.items()}
  return Dataset(name='mnist_irregular', splits=splits, num_classes=mnist.NUM_CLASSES,
                 task='multiclass', input_shape=splits['train'][0].shape[1:])


def digit_masks(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per-pixel targets of MNIST images [n, 28, 28, 1] (uint8 or [0, 1] float): the digit's
  label + 1 where the stroke is brighter than half, 0 (background) elsewhere; int32 [n, 28, 28]."""
  bright = images[..., 0] > (127 if images.dtype == np.uint8 else 0.5)
  return np.where(bright, labels[:, None, None].astype(np.int32) + 1, 0).astype(np.int32)


def _load_mnist_segmentation(data_dir, tfds_dir) -> Dataset:
  from jmed.data import mnist  # pylint: disable=g-import-not-at-top
  parts = _mnist_with_validation(data_dir, tfds_dir)
  splits = {split: (to_float(images), digit_masks(images, labels))
            for split, (images, labels) in parts.items()}
  return Dataset(name='mnist_segmentation', splits=splits, num_classes=mnist.NUM_CLASSES + 1,
                 task='segmentation', input_shape=mnist.IMAGE_SHAPE)


def _load_isbi(data_dir) -> Dataset:
  from jmed.data import isbi  # pylint: disable=g-import-not-at-top
  if data_dir is None:
    raise MissingDataError('isbi2012 is read from local files only: pass data_dir (--data-dir) '
                           f'or set ${ENV_VAR} to the folder holding {isbi.SUBDIR}/.')
  splits = isbi.load(os.path.join(data_dir, isbi.SUBDIR))
  return Dataset(name='isbi2012', splits=splits, num_classes=isbi.NUM_CLASSES,
                 task='segmentation', input_shape=(isbi.SIZE, isbi.SIZE, 1),
                 split_info={'rule': 'contiguous slices',
                             **{k: [r.start, r.stop - 1] for k, r in isbi.SPLIT.items()}})


# ---------------------------------------------------------------- validation


def validate(dataset: Dataset) -> None:
  """Checks task, shapes, dtypes, sizes, pixel and label ranges.

  Raises:
    DataError: naming the dataset and split at fault.
  """
  try:
    task = tasks.get(dataset.task)
  except ValueError as e:
    raise DataError(f'{dataset.name}: {e}') from None
  if not dataset.input_shape:
    raise DataError(f'{dataset.name}: empty input_shape {dataset.input_shape}.')
  task.check_outputs(dataset.num_classes, dataset.name)
  if not dataset.splits:
    raise DataError(f'{dataset.name}: no splits.')
  for split, (inputs, labels) in dataset.splits.items():
    where = f'{dataset.name}/{split}'
    _validate_inputs(where, inputs, tuple(dataset.input_shape),
                     dataset.model_kwargs.get('vocab_size'),
                     dataset.model_kwargs.get('num_chars'))
    if len(labels) != len(inputs):
      raise DataError(f'{where}: {len(inputs)} inputs but {len(labels)} labels.')
    task.check_labels(labels, dataset.num_classes, dataset.input_shape, where)


LAZY_SAMPLE = 64  # examples of a lazy input array that validation reads


def _validate_inputs(where, inputs, shape, vocab_size, num_chars=None) -> None:
  """Layout and values of a split's inputs; with `num_chars` (tagging) column 0 of the last
  axis holds word ids below `vocab_size` and the other columns character ids below
  `num_chars`."""
  if not isinstance(inputs, np.ndarray):  # lazy: check its declared layout and a sample
    if np.dtype(inputs.dtype) not in (np.float32, np.int32) or tuple(inputs.shape[1:]) != shape:
      raise DataError(f'{where}: inputs are {inputs.dtype} {inputs.shape}, expected float32 or '
                      f'int32 [n, *{shape}].')
    if len(inputs) == 0:
      raise DataError(f'{where}: no examples.')
    inputs = np.asarray(inputs[:LAZY_SAMPLE])
  if inputs.dtype not in (np.float32, np.int32) or inputs.shape[1:] != shape:
    raise DataError(f'{where}: inputs are {inputs.dtype} {inputs.shape}, expected float32 or '
                    f'int32 [n, *{shape}].')
  if len(inputs) == 0:
    raise DataError(f'{where}: no examples.')
  if inputs.dtype == np.int32 and num_chars is not None:  # word ids, then character ids
    _validate_inputs(where, np.ascontiguousarray(inputs[..., 0]), shape[:-1], vocab_size)
    if shape[-1] > 1:
      _validate_inputs(f'{where} (characters)', np.ascontiguousarray(inputs[..., 1:]),
                       (*shape[:-1], shape[-1] - 1), num_chars)
    return
  if inputs.dtype == np.int32:  # token ids
    if inputs.min() < 0 or (vocab_size and inputs.max() >= vocab_size):
      raise DataError(f'{where}: token ids outside [0, {vocab_size}): '
                      f'[{inputs.min()}, {inputs.max()}].')
    return
  if not np.isfinite(inputs).all():
    raise DataError(f'{where}: inputs hold NaN or infinite values.')
  if len(shape) == 3 and (inputs.min() < 0 or inputs.max() > 1):
    raise DataError(f'{where}: pixel values outside [0, 1].')
