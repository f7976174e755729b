"""Tox21 (MoleculeNet) as Morgan fingerprints and 12 binary toxicity labels.

Source: MoleculeNet's `tox21.csv` (or the `tox21.csv.gz` that DeepChem
downloads), one molecule per row: a `smiles` column, the 12 assay columns of
`TASKS` (1 active, 0 inactive, empty = not measured) and optionally `mol_id`.

Features are RDKit Morgan fingerprints (radius 2, `bits` bits) as float32
`[n, bits]` in {0, 1}; labels are int32 `[n, 12]` with -1 for a missing label.
Nothing is cached on disk: parsing and fingerprinting the ~7.8k molecules takes
a few seconds.

This module is Tox21's view of `jmed.data.moleculenet`, which reads, splits and
featurises ESOL, BBBP and Tox21 alike (SMILES token ids too); the split and
fingerprint functions below are that module's.

References: Wu et al., "MoleculeNet", Chemical Science 9, 513 (2018);
DeepChem's `RandomSplitter` and `ScaffoldSplitter` (80/10/10).
"""

from typing import Dict

from jmed.data import moleculenet
from jmed.data.errors import DataError
from jmed.data.moleculenet import FRACTIONS
from jmed.data.moleculenet import fingerprints
from jmed.data.moleculenet import MISSING
from jmed.data.moleculenet import RADIUS
from jmed.data.moleculenet import random_split
from jmed.data.moleculenet import scaffold_split
from jmed.data.moleculenet import scaffolds
from jmed.data.moleculenet import Split
from jmed.data.moleculenet import SPLIT_KINDS
from jmed.data.moleculenet import SPLITS
from jmed.data.moleculenet import Table

NAME = 'tox21'
TASKS = moleculenet.TOX21_TASKS
FILENAMES = moleculenet.SPECS[NAME].filenames  # Tried in this order.
URL = moleculenet.SPECS[NAME].url

__all__ = ['FILENAMES', 'FRACTIONS', 'MISSING', 'RADIUS', 'SPLITS',
           'SPLIT_KINDS', 'TASKS', 'Table', 'URL', 'find_csv', 'fingerprints',
           'load', 'random_split', 'read', 'scaffold_split', 'scaffolds']


def load(data_dir_moleculenet: str, split: str = 'random', seed: int = 0,
         bits: int = 1024, skip_invalid: bool = False) -> Dict[str, Split]:
  """Loads Tox21 split 80/10/10 into 'train', 'validation' and 'test'.

  Args:
    data_dir_moleculenet: folder holding `tox21.csv` (or `tox21.csv.gz`).
    split: 'random' (seeded permutation) or 'scaffold' (deterministic
      Bemis-Murcko scaffold split, see `scaffold_split`).
    seed: seed of the 'random' split; ignored by 'scaffold'.
    bits: Morgan fingerprint length.
    skip_invalid: drop rows whose SMILES RDKit cannot parse (logging each)
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
  return moleculenet.load(NAME, data_dir_moleculenet, features='fingerprint',
                          split=split, seed=seed, bits=bits,
                          skip_invalid=skip_invalid).splits


def find_csv(data_dir_moleculenet: str) -> str:
  """Path of `tox21.csv` (else `tox21.csv.gz`) in `data_dir_moleculenet`."""
  return moleculenet.find_csv(NAME, data_dir_moleculenet)


def read(path: str, skip_invalid: bool = False) -> Table:
  """Reads a Tox21 CSV and parses its SMILES with RDKit.

  Raises:
    MissingDataError: `path` does not exist.
    DataError: missing columns, a label other than empty/0/1, no rows, or (if
      not `skip_invalid`) a SMILES RDKit cannot parse; naming the path, the
      data row (1 = first row after the header) and its line.
  """
  return moleculenet.read(path, NAME, skip_invalid=skip_invalid)
