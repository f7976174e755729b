"""Molecular graphs for the D-MPNN (`jmed.models.dmpnn`): RDKit atom and bond features packed,
one molecule per array, into a fixed padding budget so that every batch reuses one program.

Features are Chemprop's (Yang et al. 2019, J. Chem. Inf. Model. 59, 3370), stored as small
category codes that the model expands to Chemprop's one-hot vectors (133 atom and 14 bond
features, `ATOM_FEATURES` and `BOND_FEATURES`):

  atom: atomic number (1-100, else 'other'), total degree (0-5), formal charge (-1, -2, 1, 2,
        0), chiral tag (0-3), total number of Hs (0-4), hybridisation (SP, SP2, SP3, SP3D,
        SP3D2), each with an 'other' slot; aromatic (0/1); mass / 100.
  bond: bond type (single, double, triple, aromatic, else 'other'), conjugated (0/1), in a ring
        (0/1), stereo (RDKit's `BondStereo` 0-5, else 'other').

Each chemical bond is two directed bonds (v -> w and w -> v), each the other's reverse.

A molecule is ONE float32 array `[rows, WIDTH]` (`pack`); row i holds atom i in the atom
columns and directed bond i in the bond columns (zeros past the molecule's atoms / bonds):

  column 0        ATOM_MASK  1 for a real atom
  columns 1-6     atomic number, degree, formal charge, chirality, Hs, hybridisation codes
  column 7        aromatic
  column 8        mass / 100
  column 9        BOND_MASK  1 for a real directed bond
  column 10       source atom of the directed bond (v of v -> w)
  column 11       target atom (w)
  column 12       the reverse bond's row (w -> v)
  columns 13-16   bond type, conjugated, in ring, stereo codes

Indices are exact in float32 (rows < 2^24). `rows` (the padding budget) must be at least the
molecule's atoms and its directed bonds; `budget` gives the smallest that fits a list of
molecules. With `descriptors` (RDKit 2D descriptors, `descriptors()`), ceil(D / WIDTH) more rows
hold them, row-major, after the graph rows. `unpack` splits such arrays back, with NumPy or JAX,
and imports neither RDKit nor any other data library, so the model imports without RDKit.
"""

import logging
import math
import warnings
from typing import NamedTuple, Optional, Sequence

import numpy as np

from jmed.errors import DataError

_LOG = logging.getLogger(__name__)

# Category choices (Chemprop's); a value outside them takes the extra 'other' slot.
ATOMIC_NUMBERS = tuple(range(1, 101))
DEGREES = (0, 1, 2, 3, 4, 5)
FORMAL_CHARGES = (-1, -2, 1, 2, 0)
CHIRAL_TAGS = (0, 1, 2, 3)
NUM_HS = (0, 1, 2, 3, 4)
HYBRIDISATIONS = ('SP', 'SP2', 'SP3', 'SP3D', 'SP3D2')
BOND_TYPES = ('SINGLE', 'DOUBLE', 'TRIPLE', 'AROMATIC')
STEREO = (0, 1, 2, 3, 4, 5)

# One-hot sizes of the coded columns ('other' included), in column order.
ATOM_CATEGORIES = tuple(len(c) + 1 for c in (ATOMIC_NUMBERS, DEGREES, FORMAL_CHARGES,
                                              CHIRAL_TAGS, NUM_HS, HYBRIDISATIONS))
BOND_CATEGORIES = (len(BOND_TYPES) + 1, 2, 2, len(STEREO) + 1)
ATOM_FEATURES = sum(ATOM_CATEGORIES) + 2  # + aromatic + mass: 133, as Chemprop
BOND_FEATURES = sum(BOND_CATEGORIES) - 2  # conjugated / in ring as one flag each: 14

ATOM_MASK, ATOM_CODES, AROMATIC, MASS = 0, slice(1, 7), 7, 8
BOND_MASK, SOURCE, TARGET, REVERSE, BOND_CODES = 9, 10, 11, 12, slice(13, 17)
WIDTH = 17


class Graph(NamedTuple):
  """One molecule: `atoms` float32 `[A, 8]` (the 6 codes, aromatic, mass / 100), `bonds`
  float32 `[B, 4]` codes of the B directed bonds, `source`, `target`, `reverse` int `[B]`."""

  atoms: np.ndarray
  bonds: np.ndarray
  source: np.ndarray
  target: np.ndarray
  reverse: np.ndarray


class Unpacked(NamedTuple):
  """`unpack`'s parts, `[..., rows]` or `[..., rows, k]`; indices int32."""

  atom_mask: object
  atom_codes: object  # [..., rows, 6] int32
  atom_floats: object  # [..., rows, 2]: aromatic, mass / 100
  bond_mask: object
  source: object
  target: object
  reverse: object
  bond_codes: object  # [..., rows, 4] int32
  descriptors: object  # [..., D]


def _code(value, choices) -> int:
  return choices.index(value) if value in choices else len(choices)


def molecule_graph(mol) -> Graph:
  """The `Graph` of an RDKit molecule (Chemprop's features, see the module docstring)."""
  atoms = np.array([[
      _code(a.GetAtomicNum(), ATOMIC_NUMBERS), _code(a.GetTotalDegree(), DEGREES),
      _code(a.GetFormalCharge(), FORMAL_CHARGES), _code(int(a.GetChiralTag()), CHIRAL_TAGS),
      _code(a.GetTotalNumHs(), NUM_HS), _code(str(a.GetHybridization()), HYBRIDISATIONS),
      float(a.GetIsAromatic()), a.GetMass() * 0.01] for a in mol.GetAtoms()],
      np.float32).reshape(-1, 8)
  bonds, source, target = [], [], []
  for bond in mol.GetBonds():
    codes = [_code(str(bond.GetBondType()), BOND_TYPES), float(bond.GetIsConjugated()),
             float(bond.IsInRing()), _code(int(bond.GetStereo()), STEREO)]
    v, w = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
    bonds += [codes, codes]
    source += [v, w]
    target += [w, v]
  reverse = np.arange(len(source)) ^ 1  # bonds 2k and 2k + 1 are each other's reverse
  return Graph(atoms, np.array(bonds, np.float32).reshape(-1, 4),
               np.array(source, np.int64), np.array(target, np.int64), reverse)


def graphs(mols: Sequence[object]) -> list:
  """`molecule_graph` of each RDKit molecule."""
  return [molecule_graph(mol) for mol in mols]


def size(graph: Graph) -> int:
  """Rows `graph` needs: max(atoms, directed bonds, 1)."""
  return max(len(graph.atoms), len(graph.source), 1)


def budget(graph_list: Sequence[Graph]) -> int:
  """The smallest padding budget (rows) that fits every graph."""
  return max((size(g) for g in graph_list), default=1)


def descriptor_rows(num_descriptors: int) -> int:
  """Rows after the graph that hold `num_descriptors` values."""
  return math.ceil(num_descriptors / WIDTH)


def pack(graph_list: Sequence[Graph], rows: int, descriptors: Optional[np.ndarray] = None,
         names: Optional[Sequence[str]] = None) -> np.ndarray:
  """Packs graphs into float32 `[n, rows + descriptor_rows(D), WIDTH]` (module docstring).

  Args:
    graph_list: n graphs.
    rows: the padding budget, >= every graph's `size`.
    descriptors: optional float32 `[n, D]` molecule features.
    names: how to name molecule i in an error (e.g. 'mols.csv, row 7'); default 'molecule i'.

  Raises:
    DataError: a molecule needs more rows than `rows`, naming it.
  """
  extra = 0 if descriptors is None else descriptor_rows(descriptors.shape[1])
  packed = np.zeros((len(graph_list), rows + extra, WIDTH), np.float32)
  for i, g in enumerate(graph_list):
    if size(g) > rows:
      name = names[i] if names is not None else f'molecule {i}'
      raise DataError(f'{name}: {len(g.atoms)} atoms and {len(g.source)} directed bonds do '
                      f'not fit the padding budget of {rows} rows.')
    a, b = len(g.atoms), len(g.source)
    packed[i, :a, ATOM_MASK] = 1
    packed[i, :a, ATOM_CODES.start:MASS + 1] = g.atoms
    packed[i, :b, BOND_MASK] = 1
    packed[i, :b, SOURCE] = g.source
    packed[i, :b, TARGET] = g.target
    packed[i, :b, REVERSE] = g.reverse
    packed[i, :b, BOND_CODES] = g.bonds
  if extra:
    flat = np.zeros((len(graph_list), extra * WIDTH), np.float32)
    flat[:, :descriptors.shape[1]] = descriptors
    packed[:, rows:] = flat.reshape(len(graph_list), extra, WIDTH)
  return packed


def unpack(inputs, num_descriptors: int = 0) -> Unpacked:
  """Splits packed graphs `[..., rows, WIDTH]` (NumPy or JAX) into their parts (`Unpacked`);
  indices and codes as int32, the rest in the dtype of `inputs`.

  Raises:
    ValueError: the last dimension is not WIDTH, or too few rows for the descriptors.
  """
  if inputs.shape[-1] != WIDTH or inputs.ndim < 2:
    raise ValueError(f'packed graphs are [..., rows, {WIDTH}], got shape {inputs.shape}.')
  extra = descriptor_rows(num_descriptors)
  rows = inputs.shape[-2] - extra
  if rows < 1:
    raise ValueError(f'{inputs.shape[-2]} rows leave no room for the graph and '
                     f'{num_descriptors} descriptors.')
  graph = inputs[..., :rows, :]
  index = lambda x: x.astype(np.int32)
  flat = inputs[..., rows:, :].reshape(*inputs.shape[:-2], extra * WIDTH)
  return Unpacked(
      atom_mask=graph[..., ATOM_MASK], atom_codes=index(graph[..., ATOM_CODES]),
      atom_floats=graph[..., AROMATIC:MASS + 1], bond_mask=graph[..., BOND_MASK],
      source=index(graph[..., SOURCE]), target=index(graph[..., TARGET]),
      reverse=index(graph[..., REVERSE]), bond_codes=index(graph[..., BOND_CODES]),
      descriptors=flat[..., :num_descriptors])


# ---------------------------------------------------------------- RDKit 2D descriptors


def descriptor_names() -> list:
  """Names of RDKit's 2D descriptors (`rdkit.Chem.Descriptors.descList`), in order."""
  from rdkit.Chem import Descriptors  # pylint: disable=g-import-not-at-top
  return [name for name, _ in Descriptors.descList]


def descriptors(mols: Sequence[object]) -> np.ndarray:
  """RDKit's 2D descriptors of each molecule, float64 `[n, D]`; NaN where RDKit fails or
  the value is not finite (fill them before use, e.g. with the training mean)."""
  from rdkit import rdBase  # pylint: disable=g-import-not-at-top
  from rdkit.Chem import Descriptors  # pylint: disable=g-import-not-at-top
  values = np.full((len(mols), len(Descriptors.descList)), np.nan)
  with rdBase.BlockLogs():  # RDKit's per-molecule warnings (e.g. lone hydrogens) stay quiet
    for i, mol in enumerate(mols):
      for j, (_, function) in enumerate(Descriptors.descList):
        try:
          values[i, j] = function(mol)
        except Exception:  # pylint: disable=broad-except  (RDKit raises assorted errors)
          pass
  values[~np.isfinite(values)] = np.nan
  return values


# ---------------------------------------------------------------- a file's molecules


def featurize(mols: Sequence[object], *, rows: Optional[int] = None,
              with_descriptors: bool = False, train: Optional[np.ndarray] = None,
              stats: Optional[dict] = None):
  """Packed graphs of RDKit molecules, and what featurizing new molecules alike needs.

  Args:
    mols: n RDKit molecules.
    rows: the padding budget; None: the largest molecule's `size`. A molecule larger than
      `rows` enlarges it to fit (logged), so the budget always covers the data.
    with_descriptors: pack RDKit's 2D descriptors after each graph, each transformed by
      sign(x) log(1 + |x|) (some span many orders of magnitude), standardised by the mean
      and std of the `train` molecules (or `stats`), clipped to [-5, 5]; missing values 0.
    train: index of the molecules the descriptor statistics are fitted on (None: all).
    stats: {'descriptor_mean', 'descriptor_std'} of an earlier call (lists), instead of fitting.

  Returns:
    (float32 `[n, rows + descriptor_rows(D), WIDTH]`, info): info has 'graph_rows' and, with
    descriptors, 'descriptor_mean' and 'descriptor_std' (lists of D floats), JSON-ready.
  """
  graph_list = graphs(mols)
  needed = budget(graph_list)
  if rows is not None and needed > rows:
    _LOG.info('A molecule of %d rows exceeds the padding budget %d: the budget grows to %d.',
              needed, rows, needed)
  rows = needed if rows is None else max(rows, needed)
  info = {'graph_rows': int(rows)}
  values = None
  if with_descriptors:
    raw = descriptors(mols)
    raw = np.sign(raw) * np.log1p(np.abs(raw))
    if stats is None:
      fit = raw if train is None else raw[train]
      with warnings.catch_warnings():  # all-NaN columns
        warnings.simplefilter('ignore', RuntimeWarning)
        mean, std = np.nanmean(fit, 0), np.nanstd(fit, 0)
      mean = np.where(np.isfinite(mean), mean, 0.0)
      std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
      stats = {'descriptor_mean': mean.tolist(), 'descriptor_std': std.tolist()}
    mean, std = np.asarray(stats['descriptor_mean']), np.asarray(stats['descriptor_std'])
    values = np.clip(np.nan_to_num((raw - mean) / std, nan=0.0), -5, 5).astype(np.float32)
    info.update(stats)
  return pack(graph_list, rows, values), info
