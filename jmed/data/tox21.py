"""Tox21 (MoleculeNet) as Morgan fingerprints and 12 binary toxicity labels.

Source: MoleculeNet's `tox21.csv` (or the `tox21.csv.gz` that DeepChem
downloads), one molecule per row: a `smiles` column, the 12 assay columns of
`TASKS` (1 active, 0 inactive, empty = not measured) and optionally `mol_id`.

Features are RDKit Morgan fingerprints (radius 2, `bits` bits) as float32
`[n, bits]` in {0, 1}; labels are int32 `[n, 12]` with -1 for a missing label.
Nothing is cached on disk: parsing and fingerprinting the ~7.8k molecules takes
a few seconds.

RDKit is imported lazily, so the rest of `jmed.data` works without it.

References: Wu et al., "MoleculeNet", Chemical Science 9, 513 (2018);
DeepChem's `RandomSplitter` and `ScaffoldSplitter` (80/10/10).
"""

import csv
import dataclasses
import gzip
import logging
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from jmed.data.errors import DataError, MissingDataError

TASKS = ('NR-AR', 'NR-AR-LBD', 'NR-AhR', 'NR-Aromatase', 'NR-ER', 'NR-ER-LBD',
         'NR-PPAR-gamma', 'SR-ARE', 'SR-ATAD5', 'SR-HSE', 'SR-MMP', 'SR-p53')
FILENAMES = ('tox21.csv', 'tox21.csv.gz')  # Tried in this order.
URL = ('https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/'
       'tox21.csv.gz')
SPLITS = ('train', 'validation', 'test')
SPLIT_KINDS = ('random', 'scaffold')
FRACTIONS = (0.8, 0.1, 0.1)  # train, validation, test.
MISSING = -1
RADIUS = 2

Split = Tuple[np.ndarray, np.ndarray]
_LABEL_VALUES = {'': MISSING, '0': 0, '1': 1, '0.0': 0, '1.0': 1}
_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class Table:
  """The parsed rows of a Tox21 CSV that RDKit could read.

  Attributes:
    path: the CSV read.
    smiles: `[n]` SMILES strings, in file order.
    mols: `[n]` RDKit molecules parsed from `smiles`.
    labels: int32 `[n, 12]` in {-1, 0, 1} (-1 = missing), columns as `TASKS`.
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


def load(data_dir_moleculenet: str, split: str = 'random', seed: int = 0,
         bits: int = 1024, skip_invalid: bool = False) -> Dict[str, Split]:
  """Loads Tox21 split 80/10/10 into 'train', 'validation' and 'test'.

  Args:
    data_dir_moleculenet: folder holding `tox21.csv` (or `tox21.csv.gz`).
    split: 'random' (seeded permutation) or 'scaffold' (deterministic
      Bemis-Murcko scaffold split, see `scaffold_split`).
    seed: seed of the 'random' split; ignored by 'scaffold'.
    bits: Morgan fingerprint length.
    skip_invalid: drop rows whose SMILES RDKit cannot parse (logging how many)
      instead of raising.

  Returns:
    Split name -> `(features, labels)`: float32 `[n, bits]` in {0, 1}, int32
    `[n, 12]` in {-1, 0, 1}.

  Raises:
    MissingDataError: no CSV in `data_dir_moleculenet` (names the path).
    DataError: bad `split`, malformed CSV, or an unparsable SMILES (names the
      CSV row, its line and the SMILES).
  """
  if split not in SPLIT_KINDS:
    raise DataError(f'Unknown Tox21 split {split!r}; valid: {SPLIT_KINDS}.')
  table = read(find_csv(data_dir_moleculenet), skip_invalid=skip_invalid)
  features = fingerprints(table.mols, bits)
  if split == 'random':
    indices = random_split(len(table.mols), seed)
  else:
    indices = scaffold_split(scaffolds(table.mols))
  return {name: (features[index], table.labels[index])
          for name, index in indices.items()}


def find_csv(data_dir_moleculenet: str) -> str:
  """Path of `tox21.csv` (else `tox21.csv.gz`) in `data_dir_moleculenet`."""
  for filename in FILENAMES:
    path = os.path.join(os.fspath(data_dir_moleculenet), filename)
    if os.path.isfile(path):
      return path
  expected = os.path.join(os.fspath(data_dir_moleculenet), FILENAMES[0])
  raise MissingDataError(f'Tox21 file not found: {expected} (download '
                         f'{URL} and put it, gzipped or not, in that folder)')


def read(path: str, skip_invalid: bool = False) -> Table:
  """Reads a Tox21 CSV and parses its SMILES with RDKit.

  Raises:
    MissingDataError: `path` does not exist.
    DataError: missing columns, a label other than empty/0/1, no rows, or (if
      not `skip_invalid`) a SMILES RDKit cannot parse; naming the path, the
      data row (1 = first row after the header) and its line.
  """
  chem, rdbase = _rdkit()
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MissingDataError(f'Tox21 file not found: {path}')
  opener = gzip.open if path.endswith('.gz') else open
  smiles, mols, labels, lines, skipped = [], [], [], [], []
  try:
    with opener(path, 'rt', newline='') as f, rdbase.BlockLogs():
      reader = csv.DictReader(f)
      _check_header(path, reader.fieldnames)
      for number, row in enumerate(reader, start=1):
        mol = chem.MolFromSmiles(row['smiles'])
        if mol is None:
          if not skip_invalid:
            raise DataError(f'{path}, row {number} (line {reader.line_num}): '
                            f'RDKit cannot parse SMILES {row["smiles"]!r} '
                            '(pass skip_invalid=True to drop such rows).')
          skipped.append((reader.line_num, row['smiles']))
          continue
        labels.append(_parse_labels(path, reader.line_num, row))
        smiles.append(row['smiles'])
        mols.append(mol)
        lines.append(reader.line_num)
  except (OSError, EOFError, UnicodeDecodeError, csv.Error) as error:
    raise DataError(f'Corrupt Tox21 CSV {path}: {error}') from error
  if skipped:
    _LOG.warning('%s: skipped %d rows whose SMILES RDKit cannot parse '
                 '(lines %s).', path, len(skipped),
                 ', '.join(str(line) for line, _ in skipped))
  if not mols:
    raise DataError(f'{path}: no valid molecules.')
  return Table(path=path, smiles=tuple(smiles), mols=tuple(mols),
               labels=np.array(labels, np.int32), lines=np.array(lines),
               skipped=tuple(skipped))


def _check_header(path: str, fieldnames) -> None:
  missing = [c for c in ('smiles',) + TASKS if c not in (fieldnames or ())]
  if missing:
    raise DataError(f'{path}: missing column(s) {", ".join(missing)}; '
                    f'header is {fieldnames}.')


def _parse_labels(path: str, line: int, row: Dict[str, str]) -> List[int]:
  values = []
  for task in TASKS:
    cell = (row[task] or '').strip()
    if cell not in _LABEL_VALUES:
      raise DataError(f'{path}, line {line}: {task} label {cell!r} is not '
                      'empty, 0 or 1.')
    values.append(_LABEL_VALUES[cell])
  return values


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


def random_split(n: int, seed: int = 0) -> Dict[str, np.ndarray]:
  """Seeded 80/10/10 split of `range(n)`: split name -> indices `[n_split]`."""
  order = np.random.default_rng(seed).permutation(n)
  return _cut(order, n)


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


def _cut(order: np.ndarray, n: int) -> Dict[str, np.ndarray]:
  train_end = int(FRACTIONS[0] * n)
  valid_end = int((FRACTIONS[0] + FRACTIONS[1]) * n)
  return dict(zip(SPLITS, np.split(order, [train_end, valid_end])))


def _rdkit():
  try:
    from rdkit import Chem, rdBase  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError('Tox21 needs RDKit: pip install rdkit') from error
  return Chem, rdBase
