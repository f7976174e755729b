"""MedMNIST v2 2D subsets (28x28) as a TFDS `GeneratorBasedBuilder`.

One `BuilderConfig` per subset, e.g. `medmnist/pneumoniamnist`. The source is
the official `<name>.npz` (keys `train_images, train_labels, val_images,
val_labels, test_images, test_labels`): read from the manual directory when
`<manual_dir>/<name>.npz` exists, downloaded from Zenodo otherwise.

Neither preparing nor reading needs TensorFlow: images are stored as raw uint8
tensors (not PNG) in `array_record` files and read back through
`builder.as_data_source()`.

`load` with a local file (`manual_dir`) never reuses a build of another file:
without a TFDS directory it reads the npz directly (`read_npz`) and writes
nothing; with one, it builds into `source_dir(tfds_dir, path)`, a folder keyed
by the file's location and SHA-256, so a changed or corrupt file is rebuilt (or
refused) instead of a stale build being read.

Reference: Yang et al., "MedMNIST v2", Scientific Data 10, 41 (2023).
"""

import dataclasses
import hashlib
import logging
import os
from typing import Dict, Optional, Tuple
import zipfile
import zlib

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from jmed import tasks
from jmed.errors import DataError, MissingDataError

IMAGE_SIZE = 28
URL = 'https://zenodo.org/records/10519652/files/{name}.npz?download=1'
SPLITS = {'train': 'train', 'validation': 'val', 'test': 'test'}  # ours: npz's
SOURCES_DIR = 'jmed-sources'  # builds of local files, under a TFDS directory

Split = Tuple[np.ndarray, np.ndarray]
_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class MedMnistConfig(tfds.core.BuilderConfig):
  """One MedMNIST subset.

  Attributes:
    task: 'binary', 'multiclass' or 'multilabel'.
    label_names: one name per class (or per label, for 'multilabel').
    channels: 1 (grey) or 3 (RGB).
    sizes: official (train, validation, test) sizes.
    md5: checksum of the official 28x28 npz, checked on downloaded files.
    ordinal: whether the classes are ordered grades (RetinaMNIST).
    license: license of the subset.
  """

  task: str = 'multiclass'
  label_names: Tuple[str, ...] = ()
  channels: int = 1
  sizes: Tuple[int, int, int] = (0, 0, 0)
  md5: str = ''
  ordinal: bool = False
  license: str = 'CC BY 4.0'

  @property
  def num_classes(self) -> int:
    """Number of classes (or of independent labels, for 'multilabel')."""
    return len(self.label_names)

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    """`[height, width, channels]` of one image."""
    return (IMAGE_SIZE, IMAGE_SIZE, self.channels)

  @property
  def label_shape(self) -> Tuple[int, ...]:
    """The shape of one label: `()` for a class id, `(num_classes,)` for 'multilabel'."""
    return tasks.get(self.task).label_shape(self.num_classes, self.image_shape)


_ORGANS = ('bladder', 'femur-left', 'femur-right', 'heart', 'kidney-left',
           'kidney-right', 'liver', 'lung-left', 'lung-right', 'pancreas',
           'spleen')

# Label names, sizes and checksums are those of the MedMNIST package's INFO
# (v3.0.2, whose 28x28 files are the Zenodo record in `URL`).
CONFIGS = (
    MedMnistConfig(
        name='pathmnist', description='Colon pathology (H&E), 9 tissues.',
        task='multiclass', channels=3, sizes=(89_996, 10_004, 7_180),
        md5='a8b06965200029087d5bd730944a56c1',
        label_names=('adipose', 'background', 'debris', 'lymphocytes', 'mucus',
                     'smooth muscle', 'normal colon mucosa',
                     'cancer-associated stroma',
                     'colorectal adenocarcinoma epithelium')),
    MedMnistConfig(
        name='chestmnist',
        description='Chest X-ray (NIH ChestX-ray14), 14 findings, multi-label.',
        task='multilabel', channels=1, sizes=(78_468, 11_219, 22_433),
        md5='02c8a6516a18b556561a56cbdd36c4a8',
        label_names=('atelectasis', 'cardiomegaly', 'effusion', 'infiltration',
                     'mass', 'nodule', 'pneumonia', 'pneumothorax',
                     'consolidation', 'edema', 'emphysema', 'fibrosis',
                     'pleural', 'hernia')),
    MedMnistConfig(
        name='dermamnist', description='Dermatoscopy (HAM10000), 7 diseases.',
        task='multiclass', channels=3, sizes=(7_007, 1_003, 2_005),
        md5='0744692d530f8e62ec473284d019b0c7', license='CC BY-NC 4.0',
        label_names=('actinic keratoses and intraepithelial carcinoma',
                     'basal cell carcinoma', 'benign keratosis-like lesions',
                     'dermatofibroma', 'melanoma', 'melanocytic nevi',
                     'vascular lesions')),
    MedMnistConfig(
        name='octmnist', description='Retinal OCT, 4 diagnoses.',
        task='multiclass', channels=1, sizes=(97_477, 10_832, 1_000),
        md5='c68d92d5b585d8d81f7112f81e2d0842',
        label_names=('choroidal neovascularization', 'diabetic macular edema',
                     'drusen', 'normal')),
    MedMnistConfig(
        name='pneumoniamnist',
        description='Paediatric chest X-ray, normal vs pneumonia.',
        task='binary', channels=1, sizes=(4_708, 524, 624),
        md5='28209eda62fecd6e6a2d98b1501bb15f',
        label_names=('normal', 'pneumonia')),
    MedMnistConfig(
        name='retinamnist',
        description='Fundus (DeepDRiD), 5 ordered diabetic-retinopathy grades.',
        task='multiclass', ordinal=True, channels=3, sizes=(1_080, 120, 400),
        md5='bd4c0672f1bba3e3a89f0e4e876791e4',
        label_names=('0', '1', '2', '3', '4')),
    MedMnistConfig(
        name='breastmnist',
        description='Breast ultrasound, malignant vs normal/benign.',
        task='binary', channels=1, sizes=(546, 78, 156),
        md5='750601b1f35ba3300ea97c75c52ff8f6',
        label_names=('malignant', 'normal, benign')),
    MedMnistConfig(
        name='bloodmnist', description='Blood cell microscopy, 8 cell types.',
        task='multiclass', channels=3, sizes=(11_959, 1_712, 3_421),
        md5='7053d0359d879ad8a5505303e11de1dc',
        label_names=('basophil', 'eosinophil', 'erythroblast',
                     'immature granulocytes(myelocytes, metamyelocytes and '
                     'promyelocytes)', 'lymphocyte', 'monocyte', 'neutrophil',
                     'platelet')),
    MedMnistConfig(
        name='tissuemnist',
        description='Kidney cortex microscopy (BBBC051), 8 cell types.',
        task='multiclass', channels=1, sizes=(165_466, 23_640, 47_280),
        md5='ebe78ee8b05294063de985d821c1c34b',
        label_names=('Collecting Duct, Connecting Tubule',
                     'Distal Convoluted Tubule', 'Glomerular endothelial cells',
                     'Interstitial endothelial cells', 'Leukocytes',
                     'Podocytes', 'Proximal Tubule Segments',
                     'Thick Ascending Limb')),
    MedMnistConfig(
        name='organamnist', description='Abdominal CT, axial, 11 organs.',
        task='multiclass', channels=1, sizes=(34_561, 6_491, 17_778),
        md5='68e3f8846a6bd62f0c9bf841c0d9eacc', label_names=_ORGANS),
    MedMnistConfig(
        name='organcmnist', description='Abdominal CT, coronal, 11 organs.',
        task='multiclass', channels=1, sizes=(12_975, 2_392, 8_216),
        md5='b9ceb9546e10131b32923c5bbeaea2b1', label_names=_ORGANS),
    MedMnistConfig(
        name='organsmnist', description='Abdominal CT, sagittal, 11 organs.',
        task='multiclass', channels=1, sizes=(13_932, 2_452, 8_827),
        md5='9ab87b696fb54e2a387ebe992d6ed5f1', label_names=_ORGANS),
)
NAMES = tuple(config.name for config in CONFIGS)
_BY_NAME = {config.name: config for config in CONFIGS}


def get_config(name: str) -> MedMnistConfig:
  """Returns the config of subset `name`, or raises listing valid names."""
  if name not in _BY_NAME:
    raise DataError(f'Unknown MedMNIST subset {name!r}; valid names: '
                    f'{", ".join(NAMES)}.')
  return _BY_NAME[name]


def read_npz(path: os.PathLike, config: MedMnistConfig) -> Dict[str, Split]:
  """Reads and validates an official MedMNIST npz.

  Args:
    path: the `<name>.npz` file.
    config: the subset it holds.

  Returns:
    `{'train'|'validation'|'test': (images, labels)}`: uint8 images
    `[n, 28, 28, channels]`; uint8 labels `[n]` (or `[n, num_classes]`
    multi-hot for 'multilabel').

  Raises:
    MissingDataError: `path` does not exist.
    DataError: `path` is not a readable npz, lacks a key, or holds arrays of
      the wrong shape or label range.
  """
  if not os.path.isfile(path):
    raise MissingDataError(f'MedMNIST file not found: {path}')
  try:
    with np.load(path, allow_pickle=False) as npz:
      missing = [key for key in _npz_keys() if key not in npz.files]
      raw = {} if missing else {key: npz[key] for key in _npz_keys()}
  except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
    raise DataError(f'Corrupt npz file {path}: {e}') from e
  if missing:
    raise DataError(f'{path} lacks arrays {", ".join(missing)}; expected '
                    f'{", ".join(_npz_keys())}.')
  return {ours: _check_split(path, config, raw[f'{theirs}_images'],
                             raw[f'{theirs}_labels'], theirs)
          for ours, theirs in SPLITS.items()}


def _npz_keys() -> Tuple[str, ...]:
  return tuple(f'{split}_{kind}' for split in SPLITS.values()
               for kind in ('images', 'labels'))


def _check_split(path, config, images, labels, split) -> Split:
  """Validates one split; returns `(images [n,28,28,c], labels [n]|[n,k])`."""
  if images.ndim == 3:
    images = images[..., None]
  if images.shape[1:] != config.image_shape or images.dtype != np.uint8:
    raise DataError(f'{path}: {split}_images are {images.dtype} '
                    f'{images.shape}, expected uint8 [n, *{config.image_shape}].')
  width = config.label_shape[0] if config.label_shape else 1  # the npz keeps [n, 1] ids
  if labels.shape != (len(images), width):
    raise DataError(f'{path}: {split}_labels have shape {labels.shape}, '
                    f'expected {(len(images), width)}.')
  if len(images) == 0:
    raise DataError(f'{path}: split {split} is empty.')
  high = 2 if config.label_shape else config.num_classes  # multi-label: 0 / 1 per label
  if labels.min() < 0 or labels.max() >= high:
    raise DataError(f'{path}: {split}_labels outside [0, {high}).')
  labels = labels.astype(np.uint8)
  return images, labels.reshape((len(labels), *config.label_shape))


def file_digest(path: os.PathLike, algorithm: str = 'md5') -> str:
  """Hex digest of a file's bytes, read in 1 MiB chunks ('md5', 'sha256', ...)."""
  digest = hashlib.new(algorithm)
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def source_dir(tfds_dir: os.PathLike, path: os.PathLike) -> str:
  """The TFDS directory of builds made from the local file `path`.

  `<tfds_dir>/jmed-sources/<key>`, key = the first 16 hex digits of the SHA-256
  of the file's absolute path and of its contents' SHA-256: another file, or
  the same file changed, gets a directory of its own, so a build is only ever
  reused for the very bytes it was made from.
  """
  location = os.path.abspath(os.fspath(path))
  content = file_digest(location, 'sha256')
  key = hashlib.sha256(f'{location}\0{content}'.encode('utf-8')).hexdigest()
  return os.path.join(os.fspath(tfds_dir), SOURCES_DIR, key[:16])


def warn_sizes(path: os.PathLike, config: 'MedMnistConfig',
               splits: Dict[str, Split]) -> None:
  """Logs a warning for each split whose size is not the official one."""
  for (split, (images, _)), size in zip(splits.items(), config.sizes):
    if len(images) != size:
      _LOG.warning('%s: %s has %d examples, the official split %d.',
                   path, split, len(images), size)


class MedMnist(tfds.core.GeneratorBasedBuilder):
  """TFDS builder for the MedMNIST v2 2D subsets at 28x28."""

  name = 'medmnist'
  # TFDS 4.9.10's own `code_path` needs the `importlib_resources` backport,
  # which no longer comes with etils (tensorflow/datasets#11212); it is only
  # used to look for a `checksums.tsv` beside this file (there is none).
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'MedMNIST v2 2D subsets, 28x28, official splits.'}
  BUILDER_CONFIGS = list(CONFIGS)
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Optional. Place the official `<name>.npz` (e.g. `pneumoniamnist.npz`, from
  https://zenodo.org/records/10519652) in the manual directory to build
  without network access; otherwise it is downloaded.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    if config.label_shape:  # one 0 / 1 entry per label
      label = tfds.features.Tensor(shape=config.label_shape, dtype=np.uint8)
    else:
      label = tfds.features.ClassLabel(names=config.label_names)
    return tfds.core.DatasetInfo(
        builder=self,
        description=config.description,
        features=tfds.features.FeaturesDict({
            # Raw uint8 tensors rather than tfds.features.Image: encoding PNGs
            # needs TensorFlow and decoding them needs PIL or OpenCV.
            'image': tfds.features.Tensor(shape=config.image_shape,
                                          dtype=np.uint8),
            'label': label,
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True,  # Keep the npz's (official) example order.
        homepage='https://medmnist.com/',
        license=config.license,
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    path = _manual_npz(dl_manager, config.name)
    if path is None:
      path = dl_manager.download(URL.format(name=config.name))
      if file_digest(path) != config.md5:
        raise DataError(f'Downloaded {path} does not match the official MD5 '
                        f'{config.md5} of {config.name}.npz.')
    splits = read_npz(path, config)
    warn_sizes(path, config, splits)
    return {split: self._generate_examples(*arrays)
            for split, arrays in splits.items()}

  def _generate_examples(self, images, labels):
    """Yields `(index, {'image': [28, 28, c] uint8, 'label': ...})`."""
    class_ids = not self.builder_config.label_shape
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {'image': image, 'label': int(label) if class_ids else label}


def _manual_npz(dl_manager, name: str) -> Optional[str]:
  """`<manual_dir>/<name>.npz` if it exists, else None."""
  try:
    manual_dir = dl_manager.manual_dir
  except AssertionError:  # TFDS' way of saying there is no manual directory.
    return None
  path = manual_dir / f'{name}.npz'
  return os.fspath(path) if path.exists() else None


def prepare(name: str, *, tfds_dir: Optional[str] = None,
            manual_dir: Optional[str] = None) -> MedMnist:
  """Builds subset `name` into `tfds_dir` (no-op if already prepared).

  Args:
    name: a MedMNIST 2D subset, e.g. 'pneumoniamnist'.
    tfds_dir: TFDS data directory to write to; None uses the TFDS default.
    manual_dir: directory that may hold `<name>.npz`; when it does not, the
      npz is downloaded.

  Returns:
    The prepared builder, storing `array_record` files. Once prepared, the
    dataset in `tfds_dir` is reused as is, whatever file it came from: `load`
    keys the directory by the file (`source_dir`) to rebuild a changed npz.
  """
  get_config(name)
  builder = MedMnist(config=name, data_dir=tfds_dir,
                     file_format='array_record')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False))
  return builder


def read_splits(builder: MedMnist) -> Dict[str, Split]:
  """Reads every split of a prepared builder into NumPy (no TensorFlow).

  Returns:
    `{'train'|'validation'|'test': (images, labels)}`: uint8 images
    `[n, 28, 28, channels]`, labels `[n]` (or `[n, num_classes]`).
  """
  splits = {}
  for split, source in builder.as_data_source().items():
    examples = source.__getitems__(list(range(len(source))))
    images = np.stack([example['image'] for example in examples])
    labels = np.asarray([example['label'] for example in examples])
    splits[split] = (images, labels)
  return splits


def load(name: str, *, tfds_dir: Optional[str] = None,
         manual_dir: Optional[str] = None) -> Dict[str, Split]:
  """Reads subset `name`, from a local npz or through a TFDS build.

  Args:
    name: a MedMNIST 2D subset, e.g. 'pneumoniamnist'.
    tfds_dir: TFDS data directory; None uses the TFDS default (online) or none
      at all (local file).
    manual_dir: directory that may hold `<name>.npz`.

  Returns:
    `{'train'|'validation'|'test': (images, labels)}`: uint8 images
    `[n, 28, 28, channels]`, integer labels `[n]` (or `[n, num_classes]`).
    * `<manual_dir>/<name>.npz` exists, `tfds_dir` None: read straight from
      the file (`read_npz`); nothing is written anywhere.
    * it exists, `tfds_dir` given: prepared into `source_dir(tfds_dir, file)`
      (a build of exactly this file's bytes) and read from there.
    * otherwise: downloaded and prepared into `tfds_dir` (see `prepare`).

  Raises:
    DataError: an unknown subset or a corrupt file (naming its path).
  """
  config = get_config(name)
  path = None
  if manual_dir is not None:
    path = os.path.join(os.fspath(manual_dir), f'{name}.npz')
  if path is None or not os.path.isfile(path):
    return read_splits(prepare(name, tfds_dir=tfds_dir, manual_dir=manual_dir))
  if tfds_dir is None:
    splits = read_npz(path, config)
    warn_sizes(path, config, splits)
    return splits
  return read_splits(prepare(name, tfds_dir=source_dir(tfds_dir, path),
                             manual_dir=manual_dir))


_CITATION = """\
@article{medmnistv2,
  title={MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D
         biomedical image classification},
  author={Yang, Jiancheng and Shi, Rui and Wei, Donglai and Liu, Zequan and
          Zhao, Lin and Ke, Bilian and Pfister, Hanspeter and Ni, Bingbing},
  journal={Scientific Data},
  volume={10},
  number={1},
  pages={41},
  year={2023},
}"""
