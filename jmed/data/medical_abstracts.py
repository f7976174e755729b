"""Medical Abstracts text classification (5 conditions) as a TFDS builder.

The corpus of Schopf, Braun & Matthes (2023): English medical abstracts, each
labelled with one of 5 patient-condition classes (`CLASS_NAMES`), published
under CC BY-SA 3.0 at https://github.com/sebischair/Medical-Abstracts-TC-Corpus
as `medical_tc_train.csv` (11,550 abstracts), `medical_tc_test.csv` (2,888)
and `medical_tc_labels.csv` (the class names). The CSVs have the columns
`condition_label` (1..5) and `medical_abstract`; labels here are 0..4.

Only the official TEST file is used (it is the one available offline), so
this dataset is a 2,888-abstract corpus split three ways by this module;
results on it are not comparable to ones on the official test set.

The split (`split_indices`, with `seed=0` for the TFDS builder and `load`):

  1. `n` = 2,888 rows; `n_test = round(0.2 * n)` = 578 and
     `n_validation = round(0.1 * n)` = 289; train gets the rest, 2,021.
  2. test: `sklearn.model_selection.train_test_split(arange(n),
     test_size=n_test, stratify=labels, random_state=seed)`, second part.
  3. validation: `train_test_split(rest, test_size=n_validation,
     stratify=labels[rest], random_state=seed)` on the remaining indices
     `rest`, second part; train is its first part.
  4. Each split's indices (0-based data rows of the CSV, the header excluded)
     are sorted, so examples keep the file's order.

Both steps are stratified by class, so every class is divided 70/10/20 up to
rounding (each per-class count is within one example of its fraction). With
`seed=0` (scikit-learn 1.9) the per-class counts are

  class                               all  train  validation  test
  0 neoplasms                         633    443          63   127
  1 digestive system diseases         299    209          30    60
  2 nervous system diseases           385    269          39    77
  3 cardiovascular diseases           610    427          61   122
  4 general pathological conditions   961    673          96   192
  total                             2,888  2,021         289   578

The builder reads `<manual_dir>/medical_tc_test.csv` when it exists and
downloads it from GitHub otherwise (checking its SHA-256). It stores
`array_record` files read back through `builder.as_data_source()`: neither
preparing nor reading needs TensorFlow. `load_offline` gives the same splits
straight from the CSV, without TFDS; `load` uses it for a local CSV when no
TFDS directory is given (writing nothing), and otherwise builds a local CSV
into a directory keyed by the file's location and SHA-256
(`jmed.data.medmnist.source_dir`), so a changed or corrupt CSV is rebuilt (or
refused), never replaced by a stale build.

Reference: Schopf, Braun & Matthes, "Evaluating Unsupervised Text
Classification: Zero-Shot and Similarity-Based Approaches", NLPIR '22 (ACM,
2023), doi:10.1145/3582768.3582795.
"""

import csv
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

from etils import epath
import numpy as np
from sklearn import model_selection
import tensorflow_datasets as tfds

from jmed.data import medmnist
from jmed.errors import DataError, MissingDataError

CLASS_NAMES = ('neoplasms', 'digestive system diseases',
               'nervous system diseases', 'cardiovascular diseases',
               'general pathological conditions')
TEST_FILE = 'medical_tc_test.csv'
LABELS_FILE = 'medical_tc_labels.csv'
FILES = (TEST_FILE, LABELS_FILE)
HOMEPAGE = 'https://github.com/sebischair/Medical-Abstracts-TC-Corpus'
URL = ('https://raw.githubusercontent.com/sebischair/'
       'Medical-Abstracts-TC-Corpus/main/{filename}')
SHA256 = {
    TEST_FILE:
        '1eecea73c9ecad292c55e10403bd139fab9580545d6878482997c5564d51ac05',
    LABELS_FILE:
        '8a27ae03339c798103678efa8012f744a723ff71a80f2b2c1355ee249564adc5',
}
TEXT_COLUMN = 'medical_abstract'
LABEL_COLUMN = 'condition_label'
SPLITS = ('train', 'validation', 'test')
FRACTIONS = (0.7, 0.1, 0.2)  # train, validation, test.
SEED = 0  # Seed of the split the builder stores.
SIZES = {'train': 2_021, 'validation': 289, 'test': 578}  # Of the test file.
NUM_ROWS = 2_888  # Rows of the official test file.

Split = Tuple[List[str], np.ndarray]
_LOG = logging.getLogger(__name__)


def read_csv(manual_dir: os.PathLike,
             filename: str = TEST_FILE) -> Tuple[List[str], np.ndarray]:
  """Reads and validates one of the corpus's CSVs (train or test file).

  Args:
    manual_dir: folder holding the file.
    filename: the CSV's name in `manual_dir`.

  Returns:
    `(texts, labels)`: `[n]` abstracts as in the file, int32 labels `[n]` in
    0..4 (the file's `condition_label` minus 1), in file order.

  Raises:
    MissingDataError: the file does not exist (names its path).
    DataError: a missing column, a label other than 1..5, an empty abstract
      (naming the file, the data row, 1 = first row after the header, and its
      line), an unreadable file, or no rows.
  """
  return _read(os.path.join(os.fspath(manual_dir), filename))


def _read(path: str) -> Tuple[List[str], np.ndarray]:
  """`read_csv` of a file path."""
  if not os.path.isfile(path):
    raise MissingDataError(f'Medical Abstracts file not found: {path} '
                           f'(download it from '
                           f'{URL.format(filename=os.path.basename(path))})')
  texts, labels = [], []
  valid = tuple(str(label) for label in range(1, len(CLASS_NAMES) + 1))
  try:
    with open(path, newline='', encoding='utf-8') as f:
      reader = csv.DictReader(f)
      missing = [column for column in (LABEL_COLUMN, TEXT_COLUMN)
                 if column not in (reader.fieldnames or ())]
      if missing:
        raise DataError(f'{path}: missing column(s) {", ".join(missing)}; '
                        f'header is {reader.fieldnames}.')
      for row_number, row in enumerate(reader, start=1):
        where = f'{path}, row {row_number} (line {reader.line_num})'
        label = (row[LABEL_COLUMN] or '').strip()
        if label not in valid:
          raise DataError(f'{where}: {LABEL_COLUMN} {label!r} is not one of '
                          f'{", ".join(valid)}.')
        text = row[TEXT_COLUMN] or ''
        if not text.strip():
          raise DataError(f'{where}: empty {TEXT_COLUMN}.')
        texts.append(text)
        labels.append(int(label) - 1)
  except (OSError, UnicodeDecodeError, csv.Error) as error:
    raise DataError(f'Corrupt Medical Abstracts CSV {path}: {error}') from error
  if not texts:
    raise DataError(f'{path}: no rows.')
  return texts, np.asarray(labels, np.int32)


def read_class_names(manual_dir: os.PathLike) -> Tuple[str, ...]:
  """Class names from `<manual_dir>/medical_tc_labels.csv`, in label order.

  Raises:
    MissingDataError: the file does not exist (names its path).
    DataError: its labels are not exactly 1..5 or a column is missing.
  """
  path = os.path.join(os.fspath(manual_dir), LABELS_FILE)
  if not os.path.isfile(path):
    raise MissingDataError(f'Medical Abstracts file not found: {path} '
                           f'(download it from '
                           f'{URL.format(filename=LABELS_FILE)})')
  try:
    with open(path, newline='', encoding='utf-8') as f:
      rows = list(csv.DictReader(f))
    names = {row[LABEL_COLUMN].strip(): row['condition_name'].strip()
             for row in rows}
  except (KeyError, AttributeError) as error:
    raise DataError(f'{path}: expected columns {LABEL_COLUMN}, '
                    f'condition_name.') from error
  except (OSError, UnicodeDecodeError, csv.Error) as error:
    raise DataError(f'Corrupt Medical Abstracts CSV {path}: {error}') from error
  expected = [str(label) for label in range(1, len(CLASS_NAMES) + 1)]
  if sorted(names) != expected or len(rows) != len(expected):
    raise DataError(f'{path}: labels {[row[LABEL_COLUMN] for row in rows]}, '
                    f'expected {", ".join(expected)} once each.')
  return tuple(names[label] for label in expected)


def split_indices(labels: np.ndarray, *, seed: int = SEED,
                  fractions: Sequence[float] = FRACTIONS
                  ) -> Dict[str, np.ndarray]:
  """Stratified train/validation/test split of `range(len(labels))`.

  See the module docstring for the exact procedure (two stratified
  `train_test_split` calls: test first, then validation from the rest).

  Args:
    labels: int `[n]` class of each example.
    seed: `random_state` of both `train_test_split` calls.
    fractions: (train, validation, test) fractions, positive, summing to 1.

  Returns:
    `{'train'|'validation'|'test': sorted int64 indices}`: disjoint, together
    covering `range(n)`, each class divided in `fractions` up to rounding.
    Deterministic for a given `seed` (and scikit-learn version).

  Raises:
    DataError: bad `fractions`, or too few examples of a class to stratify.
  """
  labels = np.asarray(labels)
  fractions = tuple(float(f) for f in fractions)
  if (len(fractions) != 3 or min(fractions) <= 0 or
      abs(sum(fractions) - 1) > 1e-6):
    raise DataError(f'fractions must be 3 positive numbers summing to 1 '
                    f'(train, validation, test), got {fractions}.')
  n = len(labels)
  n_validation = int(round(fractions[1] * n))
  n_test = int(round(fractions[2] * n))
  try:
    rest, test = model_selection.train_test_split(
        np.arange(n), test_size=n_test, stratify=labels, random_state=seed)
    train, validation = model_selection.train_test_split(
        rest, test_size=n_validation, stratify=labels[rest],
        random_state=seed)
  except ValueError as error:
    raise DataError(f'Cannot split {n} examples {fractions} stratified by '
                    f'class: {error}') from error
  return {name: np.sort(index).astype(np.int64) for name, index in
          zip(SPLITS, (train, validation, test))}


class MedicalAbstracts(tfds.core.GeneratorBasedBuilder):
  """TFDS builder: the official test file, split 70/10/20 (see module doc).

  Splits 'train' (2,021), 'validation' (289) and 'test' (578) come from
  `split_indices(labels, seed=0)` over `medical_tc_test.csv`; each example is
  `{'text': abstract, 'label': 0..4}` keyed by its 0-based CSV data row.
  A build from the official train file would be another config (not
  provided).
  """

  name = 'medical_abstracts'
  # As in jmed.data.medmnist: TFDS 4.9.10's own `code_path` needs the
  # `importlib_resources` backport (tensorflow/datasets#11212).
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Official test file (2,888 abstracts) split 70/10/20, '
               'stratified, seed 0.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Optional. Place `{TEST_FILE}` and `{LABELS_FILE}` (from {HOMEPAGE}) in the
  manual directory to build without network access; otherwise
  `{TEST_FILE}` is downloaded.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=('Medical abstracts labelled with 5 patient-condition '
                     'classes; the official test file split 70/10/20 '
                     'stratified by class (seed 0).'),
        features=tfds.features.FeaturesDict({
            'text': tfds.features.Text(),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=('text', 'label'),
        disable_shuffling=True,  # Keep the CSV's order within each split.
        homepage=HOMEPAGE,
        license='CC BY-SA 3.0',
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    path = _manual_csv(dl_manager)
    if path is None:
      path = os.fspath(dl_manager.download(URL.format(filename=TEST_FILE)))
      if medmnist.file_digest(path, 'sha256') != SHA256[TEST_FILE]:
        raise DataError(f'Downloaded {path} does not match the SHA-256 '
                        f'{SHA256[TEST_FILE]} of the official {TEST_FILE}.')
    texts, labels = _read(path)
    if len(texts) != NUM_ROWS:
      _LOG.warning('%s has %d rows, the official test file %d.', path,
                   len(texts), NUM_ROWS)
    return {split: self._generate_examples(texts, labels, indices)
            for split, indices in split_indices(labels, seed=SEED).items()}

  def _generate_examples(self, texts, labels, indices):
    """Yields `(row, {'text': str, 'label': int in 0..4})`."""
    for index in indices:
      yield int(index), {'text': texts[index], 'label': int(labels[index])}


def _manual_csv(dl_manager) -> Optional[str]:
  """`<manual_dir>/medical_tc_test.csv` if it exists, else None."""
  try:
    manual_dir = dl_manager.manual_dir
  except AssertionError:  # TFDS' way of saying there is no manual directory.
    return None
  path = manual_dir / TEST_FILE
  return os.fspath(path) if path.exists() else None


def prepare(*, tfds_dir: Optional[str] = None,
            manual_dir: Optional[str] = None) -> MedicalAbstracts:
  """Builds the dataset into `tfds_dir` (no-op if already prepared).

  Args:
    tfds_dir: TFDS data directory to write to; None uses the TFDS default.
    manual_dir: folder that may hold `medical_tc_test.csv`; when it does not,
      the file is downloaded.

  Returns:
    The prepared builder, storing `array_record` files. Once prepared, the
    dataset in `tfds_dir` is reused as is, whatever file it came from: `load`
    keys the directory by the file (`medmnist.source_dir`) to rebuild a
    changed CSV.
  """
  builder = MedicalAbstracts(data_dir=tfds_dir, file_format='array_record')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False))
  return builder


def read_splits(builder: MedicalAbstracts) -> Dict[str, Split]:
  """Reads every split of a prepared builder (no TensorFlow).

  Returns:
    `{'train'|'validation'|'test': (texts, labels)}`: `[n]` str, int32 `[n]`.
  """
  splits = {}
  for split, source in builder.as_data_source().items():
    examples = source.__getitems__(list(range(len(source))))
    texts = [_to_str(example['text']) for example in examples]
    labels = np.asarray([example['label'] for example in examples], np.int32)
    splits[split] = (texts, labels)
  return {split: splits[split] for split in SPLITS}


def _to_str(text) -> str:
  return text.decode('utf-8') if isinstance(text, bytes) else str(text)


def load(data_dir: Optional[str] = None,
         tfds_dir: Optional[str] = None) -> Dict[str, Split]:
  """Reads the three splits, from a local CSV or through a TFDS build.

  Args:
    data_dir: data root holding `medical_abstracts/medical_tc_test.csv`; None
      downloads the file (or uses TFDS' default manual directory).
    tfds_dir: TFDS data directory. With `data_dir`: None reads the CSV
      directly (`load_offline`, nothing written anywhere); a directory builds
      the CSV into `medmnist.source_dir(tfds_dir, csv)`, a build of exactly
      that file's bytes. Without `data_dir`: where the downloaded corpus is
      prepared, None the TFDS default.

  Returns:
    `{'train'|'validation'|'test': (texts, labels)}`: `[n]` str abstracts,
    int32 `[n]` labels in 0..4; the same as `load_offline` (seed 0).

  Raises:
    MissingDataError: `data_dir` given but the CSV is not in it (names the
      path).
    DataError: a malformed CSV (see `read_csv`).
  """
  if data_dir is None:
    return read_splits(prepare(tfds_dir=tfds_dir))
  manual_dir = os.path.join(os.fspath(data_dir), 'medical_abstracts')
  path = os.path.join(manual_dir, TEST_FILE)
  if not os.path.isfile(path):
    raise MissingDataError(
        f'Medical Abstracts file not found: {path} (download it from '
        f'{URL.format(filename=TEST_FILE)})')
  if tfds_dir is None:
    splits = load_offline(manual_dir)
    rows = sum(len(texts) for texts, _ in splits.values())
    if rows != NUM_ROWS:
      _LOG.warning('%s has %d rows, the official test file %d.', path, rows,
                   NUM_ROWS)
    return splits
  return read_splits(prepare(tfds_dir=medmnist.source_dir(tfds_dir, path),
                             manual_dir=manual_dir))


def load_offline(manual_dir: os.PathLike, *,
                 seed: int = SEED) -> Dict[str, Split]:
  """The splits straight from `<manual_dir>/medical_tc_test.csv`, no TFDS.

  With the default `seed` this equals `load`; another seed gives another
  stratified split of the same sizes.

  Returns:
    `{'train'|'validation'|'test': (texts, labels)}`: `[n]` str, int32 `[n]`.
  """
  texts, labels = read_csv(manual_dir)
  return {split: ([texts[i] for i in indices], labels[indices])
          for split, indices in split_indices(labels, seed=seed).items()}


_CITATION = """\
@inproceedings{schopf2023medicalabstracts,
  author = {Schopf, Tim and Braun, Daniel and Matthes, Florian},
  title = {Evaluating Unsupervised Text Classification: Zero-Shot and
           Similarity-Based Approaches},
  booktitle = {Proceedings of the 2022 6th International Conference on
               Natural Language Processing and Information Retrieval},
  series = {NLPIR '22},
  pages = {6--15},
  publisher = {Association for Computing Machinery},
  year = {2023},
  doi = {10.1145/3582768.3582795},
}"""
