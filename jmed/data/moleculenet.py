"""MoleculeNet's ESOL, BBBP and Tox21 as SMILES token ids or Morgan fingerprints.

One reader serves the three CSVs (each has a `smiles` column; `SPECS` names
the file, the target columns and the task):

  * 'esol' (`delaney-processed.csv`, 1,128 molecules): water solubility,
    log(mol/L), column 'measured log solubility in mols per litre'; task
    'regression', float32 labels `[n, 1]`.
  * 'bbbp' (`BBBP.csv`, 2,050 rows of which 11 SMILES RDKit cannot parse):
    blood-brain barrier penetration, column 'p_np'; task 'binary', int32
    labels `[n]` in {0, 1}.
  * 'tox21' (`tox21.csv` or `tox21.csv.gz`, 7,823 molecules): 12 toxicity
    assays (`TOX21_TASKS`), an empty cell when not measured; task
    'multilabel', int32 labels `[n, 12]` in {-1, 0, 1}, -1 = missing.

Every SMILES is parsed by RDKit. One it cannot parse raises a `DataError`
naming the file, the data row (1 = first row after the header), its line and
the SMILES, unless `skip_invalid`, which drops the row and logs it.

Splits are 80/10/10 'train' / 'validation' / 'test', as DeepChem's
`RandomSplitter` (a seeded permutation) or `ScaffoldSplitter` (Bemis-Murcko
scaffold groups, largest first, deterministic); 'auto' picks the split
MoleculeNet recommends (random for ESOL and Tox21, scaffold for BBBP).

Features are atom-level SMILES token ids (`jmed.text.smiles`, vocabulary
learned on the training split only) as int32 `[n, max_length]`, or RDKit
Morgan fingerprints (radius 2) as float32 `[n, bits]` in {0, 1}. The split
depends on the molecules only, so both kinds of features of one dataset,
split and seed hold the same molecules in the same order.

RDKit is imported lazily, so the rest of `jmed.data` works without it.

References: Wu et al., "MoleculeNet: a benchmark for molecular machine
learning", Chem. Sci. 9, 513 (2018); Bemis & Murcko, J. Med. Chem. 39, 2887
(1996).
"""

import csv
import dataclasses
import gzip
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from jmed import tasks
from jmed.errors import DataError, MissingDataError

TOX21_TASKS = ('NR-AR', 'NR-AR-LBD', 'NR-AhR', 'NR-Aromatase', 'NR-ER',
               'NR-ER-LBD', 'NR-PPAR-gamma', 'SR-ARE', 'SR-ATAD5', 'SR-HSE',
               'SR-MMP', 'SR-p53')
_URL = 'https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/'
SPLITS = ('train', 'validation', 'test')
SPLIT_KINDS = ('random', 'scaffold')
FEATURES = ('smiles', 'fingerprint')
FRACTIONS = (0.8, 0.1, 0.1)  # train, validation, test.
MISSING = -1
RADIUS = 2

Split = Tuple[np.ndarray, np.ndarray]
_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Spec:
  """How to read one MoleculeNet CSV.

  Attributes:
    name: the dataset's name in jmed, e.g. 'esol'.
    filenames: file names tried in this order in the MoleculeNet folder.
    targets: label columns, in label order.
    task: 'regression', 'binary' or 'multilabel' (missing labels allowed): a name in
      `jmed.tasks.TASKS`, which parses each label cell.
    num_classes: model outputs: 2 for a binary softmax, else one per target column.
    split: the split MoleculeNet recommends: 'random' or 'scaffold'.
    url: where DeepChem downloads the file.
  """

  name: str
  filenames: Tuple[str, ...]
  targets: Tuple[str, ...]
  task: str
  num_classes: int
  split: str
  url: str


SPECS = {
    'esol': Spec('esol', ('delaney-processed.csv',),
                 ('measured log solubility in mols per litre',), 'regression', 1,
                 'random', _URL + 'delaney-processed.csv'),
    'bbbp': Spec('bbbp', ('BBBP.csv',), ('p_np',), 'binary', 2, 'scaffold',
                 _URL + 'BBBP.csv'),
    'tox21': Spec('tox21', ('tox21.csv', 'tox21.csv.gz'), TOX21_TASKS,
                  'multilabel', len(TOX21_TASKS), 'random', _URL + 'tox21.csv.gz'),
}
NAMES = tuple(SPECS)


@dataclasses.dataclass(frozen=True, eq=False)
class Table:
  """The parsed rows of a MoleculeNet CSV that RDKit could read.

  Attributes:
    path: the CSV read.
    smiles: `[n]` SMILES strings (surrounding whitespace stripped), in file
      order.
    mols: `[n]` RDKit molecules parsed from `smiles`.
    labels: float32 `[n, targets]` for regression, else int32
      `[n, targets]` in {0, 1}, or {-1, 0, 1} (-1 = missing) for multilabel.
    lines: int `[n]` line numbers in the CSV (the header is line 1).
    skipped: `(line, smiles)` of the rows dropped because RDKit could not parse
      them (only with `skip_invalid=True`).
  """

  path: str
  smiles: Tuple[str, ...]
  mols: Tuple[object, ...]
  labels: np.ndarray
  lines: np.ndarray
  skipped: Tuple[Tuple[int, str], ...] = ()


@dataclasses.dataclass(frozen=True, eq=False)
class Molecules:
  """A split, featurised MoleculeNet dataset (what `load` returns).

  Attributes:
    name: 'esol', 'bbbp' or 'tox21'.
    task: 'regression', 'binary' or 'multilabel'.
    num_classes: model outputs (see `Spec.num_classes`).
    split: the split used: 'random' or 'scaffold'.
    splits: split name -> `(features, labels)`: features int32
      `[n, max_length]` token ids or float32 `[n, bits]` fingerprints;
      labels float32 `[n, 1]` (regression), int32 `[n]` (binary) or int32
      `[n, 12]` with -1 for missing (multilabel).
    smiles: split name -> `[n]` SMILES, in the order of `splits`.
    vocab: the `jmed.text.smiles.Vocabulary` learned on 'train' (None for
      fingerprints).
    skipped: `(line, smiles)` of the dropped unparsable rows.
  """

  name: str
  task: str
  num_classes: int
  split: str
  splits: Dict[str, Split]
  smiles: Dict[str, Tuple[str, ...]]
  vocab: Optional[object] = None
  skipped: Tuple[Tuple[int, str], ...] = ()


def load(name: str, data_dir_moleculenet: str, *, features: str = 'smiles',
         split: str = 'auto', seed: int = 0, max_length: int = 128,
         bits: int = 1024, skip_invalid: bool = False) -> Molecules:
  """Reads, splits 80/10/10 and featurises MoleculeNet dataset `name`.

  Args:
    name: 'esol', 'bbbp' or 'tox21'.
    data_dir_moleculenet: folder holding the dataset's CSV (see `SPECS`).
    features: 'smiles' (token ids) or 'fingerprint' (Morgan, radius 2).
    split: 'random', 'scaffold' or 'auto' (MoleculeNet's recommendation).
    seed: seed of the 'random' split; ignored by 'scaffold'.
    max_length: token ids per molecule, [BOS] and [EOS] included ('smiles').
    bits: fingerprint length ('fingerprint').
    skip_invalid: drop (and log) rows whose SMILES RDKit cannot parse instead
      of raising.

  Returns:
    The `Molecules`, split into 'train', 'validation' and 'test'.

  Raises:
    MissingDataError: no CSV in `data_dir_moleculenet` (names the path).
    DataError: bad arguments, a malformed CSV or label, or an unparsable
      SMILES (names the file, data row, line and SMILES).
  """
  spec = get_spec(name)
  if features not in FEATURES:
    raise DataError(f'Unknown molecule features {features!r}; valid: '
                    f'{FEATURES}.')
  kind = resolve_split(name, split)
  table = read(find_csv(name, data_dir_moleculenet), name,
               skip_invalid=skip_invalid)
  indices = split_indices(table.mols, kind, seed)
  smiles = {s: tuple(table.smiles[i] for i in index)
            for s, index in indices.items()}
  vocab = None
  if features == 'smiles':
    from jmed.text import smiles as jsmiles  # pylint: disable=g-import-not-at-top
    vocab = jsmiles.build_vocab(smiles['train'])
    inputs = {s: jsmiles.encode(vocab, smiles[s], max_length) for s in SPLITS}
    _log_truncated(name, smiles, max_length)
  else:
    every = fingerprints(table.mols, bits)
    inputs = {s: every[index] for s, index in indices.items()}
  labels = _task_labels(spec, table.labels)
  return Molecules(
      name=name, task=spec.task, num_classes=spec.num_classes, split=kind,
      splits={s: (inputs[s], labels[index]) for s, index in indices.items()},
      smiles=smiles, vocab=vocab, skipped=table.skipped)


def get_spec(name: str) -> Spec:
  """The `Spec` of MoleculeNet dataset `name`."""
  if name not in SPECS:
    raise DataError(f'Unknown MoleculeNet dataset {name!r}; valid: {NAMES}.')
  return SPECS[name]


def resolve_split(name: str, split: str) -> str:
  """`split`, with 'auto' replaced by MoleculeNet's choice for `name`."""
  if split == 'auto':
    return get_spec(name).split
  if split not in SPLIT_KINDS:
    raise DataError(f'Unknown split {split!r} for {name}; valid: '
                    f'{SPLIT_KINDS + ("auto",)}.')
  return split


def find_csv(name: str, data_dir_moleculenet: str) -> str:
  """Path of dataset `name`'s CSV (first of `Spec.filenames` found)."""
  spec = get_spec(name)
  folder = os.fspath(data_dir_moleculenet)
  for filename in spec.filenames:
    path = os.path.join(folder, filename)
    if os.path.isfile(path):
      return path
  expected = os.path.join(folder, spec.filenames[0])
  raise MissingDataError(f'{name} file not found: {expected} (download '
                         f'{spec.url} and put it in that folder)')


def download(name: str, folder: str) -> str:
  """Downloads dataset `name`'s CSV from DeepChem (`Spec.url`) into `folder` unless one of its
  `Spec.filenames` is already there; returns the file's path.

  The file is written under a temporary name and renamed when complete, so an interrupted
  download never leaves a partial CSV behind.

  Raises:
    MissingDataError: the download failed (e.g. no network): the message says where to put the
      file by hand.
  """
  import urllib.error  # pylint: disable=g-import-not-at-top
  import urllib.request  # pylint: disable=g-import-not-at-top
  spec = get_spec(name)
  try:
    return find_csv(name, folder)
  except MissingDataError:
    pass
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, os.path.basename(spec.url))
  partial = path + '.partial'
  try:
    _LOG.info('Downloading %s to %s', spec.url, path)
    urllib.request.urlretrieve(spec.url, partial)
  except (urllib.error.URLError, OSError) as error:
    if os.path.exists(partial):
      os.remove(partial)
    raise MissingDataError(
        f'Could not download {name} from {spec.url} ({error}). Offline, put '
        f'{spec.filenames[0]} in <data_dir>/moleculenet/ and pass data_dir (or set '
        '$JMED_DATA_DIR).') from error
  os.replace(partial, path)
  return path


def read(path: str, name: str, skip_invalid: bool = False) -> Table:
  """Reads dataset `name`'s CSV at `path` and parses its SMILES with RDKit.

  Raises:
    MissingDataError: `path` does not exist.
    DataError: missing columns, a bad label, no rows, or (if not
      `skip_invalid`) a SMILES RDKit cannot parse; naming the path, the data
      row (1 = first row after the header), its line and the value at fault.
  """
  spec = get_spec(name)
  chem, rdbase = _rdkit()
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MissingDataError(f'{name} file not found: {path}')
  opener = gzip.open if path.endswith('.gz') else open
  smiles, mols, labels, lines, skipped = [], [], [], [], []
  try:
    with opener(path, 'rt', newline='') as f, rdbase.BlockLogs():
      reader = csv.DictReader(f)
      _check_header(path, reader.fieldnames, spec)
      for number, row in enumerate(reader, start=1):
        where = f'{path}, row {number} (line {reader.line_num})'
        text = (row['smiles'] or '').strip()
        mol = chem.MolFromSmiles(text) if text else None
        if mol is None:
          if not skip_invalid:
            raise DataError(f'{where}: RDKit cannot parse SMILES {text!r} '
                            '(pass skip_invalid=True to drop such rows).')
          _LOG.warning('%s: dropped, RDKit cannot parse SMILES %r.', where,
                       text)
          skipped.append((reader.line_num, text))
          continue
        labels.append(_parse_labels(where, row, spec))
        smiles.append(text)
        mols.append(mol)
        lines.append(reader.line_num)
  except (OSError, EOFError, UnicodeDecodeError, csv.Error) as error:
    raise DataError(f'Corrupt {name} CSV {path}: {error}') from error
  if skipped:
    _LOG.warning('%s: skipped %d rows whose SMILES RDKit cannot parse '
                 '(lines %s).', path, len(skipped),
                 ', '.join(str(line) for line, _ in skipped))
  if not mols:
    raise DataError(f'{path}: no valid molecules.')
  dtype = tasks.get(spec.task).label_dtype
  return Table(path=path, smiles=tuple(smiles), mols=tuple(mols),
               labels=np.array(labels, dtype), lines=np.array(lines),
               skipped=tuple(skipped))


def _check_header(path: str, fieldnames, spec: Spec) -> None:
  missing = [c for c in ('smiles',) + spec.targets
             if c not in (fieldnames or ())]
  if missing:
    raise DataError(f'{path}: missing column(s) {", ".join(missing)}; '
                    f'header is {fieldnames}.')


def _parse_labels(where: str, row: Dict[str, str], spec: Spec) -> List:
  task = tasks.get(spec.task)
  values = []
  for column in spec.targets:
    try:
      values.append(task.parse_label((row[column] or '').strip()))
    except ValueError as error:
      raise DataError(f'{where}: {column} {error}') from None
  return values


def _task_labels(spec: Spec, labels: np.ndarray) -> np.ndarray:
  """Table labels [n, targets] in the task's layout (binary: class ids [n])."""
  shape = tasks.get(spec.task).label_shape(spec.num_classes, ())
  return labels.reshape((len(labels), *shape))


def _log_truncated(name: str, smiles: Dict[str, Sequence[str]],
                   max_length: int) -> None:
  from jmed.text import smiles as jsmiles  # pylint: disable=g-import-not-at-top
  for split, values in smiles.items():
    cut = sum(len(jsmiles.tokenize(s)) + 2 > max_length for s in values)
    if cut:
      _LOG.info('%s/%s: %d of %d molecules are longer than max_length %d '
                'tokens and were truncated.', name, split, cut, len(values),
                max_length)


def fingerprints(mols: Sequence[object], bits: int = 1024) -> np.ndarray:
  """Morgan fingerprints (radius 2) of `mols` as float32 `[n, bits]` in {0, 1}."""
  if bits < 1:
    raise DataError(f'bits must be >= 1, got {bits}.')
  from rdkit.Chem import rdFingerprintGenerator  # pylint: disable=g-import-not-at-top
  generator = rdFingerprintGenerator.GetMorganGenerator(radius=RADIUS,
                                                        fpSize=bits)
  features = np.zeros((len(mols), bits), np.float32)
  for i, mol in enumerate(mols):
    features[i] = generator.GetFingerprintAsNumPy(mol)
  return features


def split_indices(mols: Sequence[object], kind: str,
                  seed: int = 0) -> Dict[str, np.ndarray]:
  """80/10/10 'random' (seeded) or 'scaffold' split of `mols` (indices)."""
  if kind == 'random':
    return random_split(len(mols), seed)
  if kind == 'scaffold':
    return scaffold_split(scaffolds(mols))
  raise DataError(f'Unknown split {kind!r}; valid: {SPLIT_KINDS}.')


def random_split(n: int, seed: int = 0) -> Dict[str, np.ndarray]:
  """Seeded 80/10/10 split of `range(n)`: split name -> indices `[n_split]`."""
  order = np.random.default_rng(seed).permutation(n)
  train_end = int(FRACTIONS[0] * n)
  valid_end = int((FRACTIONS[0] + FRACTIONS[1]) * n)
  return dict(zip(SPLITS, np.split(order, [train_end, valid_end])))


def scaffold_split(keys: Sequence[str]) -> Dict[str, np.ndarray]:
  """Deterministic 80/10/10 scaffold split (as DeepChem's `ScaffoldSplitter`).

  Molecules are grouped by scaffold; groups, largest first (ties: later first
  index first), fill 'train' while it stays within 80%, then 'validation'
  within 90%, then 'test'. No scaffold is shared across splits.

  Args:
    keys: `[n]` scaffold of each molecule, e.g. `scaffolds(mols)`.

  Returns:
    Split name -> indices into `keys`, each split's in ascending order.
  """
  groups: Dict[str, List[int]] = {}
  for i, key in enumerate(keys):
    groups.setdefault(key, []).append(i)
  ordered = sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True)
  n = len(keys)
  train_cut = FRACTIONS[0] * n
  valid_cut = (FRACTIONS[0] + FRACTIONS[1]) * n
  train, valid, test = [], [], []
  for group in ordered:
    if len(train) + len(group) <= train_cut:
      train.extend(group)
    elif len(train) + len(valid) + len(group) <= valid_cut:
      valid.extend(group)
    else:
      test.extend(group)
  return {name: np.sort(np.array(index, np.int64))
          for name, index in zip(SPLITS, (train, valid, test))}


def scaffolds(mols: Sequence[object]) -> List[str]:
  """Bemis-Murcko scaffold SMILES of each molecule ('' if it has no ring)."""
  from rdkit.Chem.Scaffolds import MurckoScaffold  # pylint: disable=g-import-not-at-top
  return [MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
          for mol in mols]


def _rdkit():
  try:
    from rdkit import Chem, rdBase  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError('MoleculeNet datasets need RDKit: pip install rdkit'
                      ) from error
  return Chem, rdBase
