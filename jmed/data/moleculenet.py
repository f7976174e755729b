"""The 'smiles' source: a table of molecules (a SMILES column and label columns) as SMILES token
ids or Morgan fingerprints; MoleculeNet's ESOL, BBBP, Tox21, SIDER and ClinTox are presets of it.

A user's file (CSV, TSV, Parquet or JSON Lines, see `jmed.data.files`) names its SMILES column
with `DataConfig.smiles_column` and its targets with `DataConfig.label_column` (comma-separated
for several); the task is inferred from the labels (`jmed.data.labels`: regression, binary,
multiclass, or multilabel with empty cells as missing, -1) unless `DataConfig.task` names it.
Rows are split by the file's split column, else by `DataConfig.split` (`jmed.data.splits`):
'random', 'stratified', 'scaffold' (Bemis-Murcko scaffolds kept apart) or 'auto'.

  python scripts/train.py --data mols.csv --smiles-column mol --label-column logS ...

Every SMILES is parsed by RDKit. One it cannot parse raises a `DataError` naming the file, the
data row (1 = first row after the header), the column and the SMILES, unless
`MoleculeConfig.skip_invalid`, which drops the row and logs it.

Features (`MoleculeConfig.features`) are atom-level SMILES token ids (`jmed.text.smiles`, the
vocabulary learned on the training split only) as int32 `[n, max_length]`, or RDKit Morgan
fingerprints (radius 2) as float32 `[n, bits]` in {0, 1}, or ('graph') molecular graphs for
the D-MPNN packed as float32 `[n, rows, 17]` (`jmed.data.graphs`: Chemprop's atom and bond
features; `rows`, the padding budget, fits the file's largest molecule and is saved in
preprocessing.json as 'graph_rows'; a larger molecule in a file scored later enlarges it), with
'graph_descriptors' RDKit's 2D descriptors after each graph (standardised by the training
split's statistics, also saved; `model_kwargs` gives the model their number). The split depends
on the molecules only, so all kinds of features of one file, split and seed hold the same
molecules in the same order.

`PRESETS` are MoleculeNet's files as such tables:

  * 'esol' (`delaney-processed.csv`, 1,128 molecules): water solubility, log(mol/L), column
    'measured log solubility in mols per litre'; 'regression', float32 labels `[n, 1]`.
  * 'bbbp' (`BBBP.csv`, 2,050 rows of which 11 SMILES RDKit cannot parse): blood-brain barrier
    penetration, column 'p_np'; 'binary', int32 class ids `[n]` (class '1' is id 1).
  * 'tox21' (`tox21.csv` or `tox21.csv.gz`, 7,823 molecules): 12 toxicity assays
    (`TOX21_TASKS`), an empty cell when not measured; 'multilabel', int32 `[n, 12]` in
    {-1, 0, 1}.
  * 'sider' (`sider.csv`, 1,427 marketed drugs): side effects (adverse drug reactions) in 27
    MedDRA system organ classes (`SIDER_TASKS`; several names hold commas); 'multilabel',
    int32 `[n, 27]` in {0, 1} (the file has no empty cell).
  * 'clintox' (`clintox.csv`, 1,478 drugs and failed candidates): FDA approval and failure of
    clinical trials for toxicity, columns 'FDA_APPROVED' and 'CT_TOX' (`CLINTOX_TASKS`);
    'multilabel' with 2 labels as MoleculeNet treats it, int32 `[n, 2]`. Rows whose SMILES
    RDKit cannot parse are dropped and logged (`MoleculeConfig.skip_invalid`, the presets'
    default); RDKit 2026.09 parses all 1,478 (and all of SIDER's). The file spells its
    failed and unapproved molecules differently: all in Kekulé form (no aromatic 'c' token,
    against 73% of the approved ones) and none protonated ('[NH+]'), so SMILES token models
    can score by spelling; `MoleculeConfig.canonical` (RDKit's canonical SMILES) removes the
    spelling, and jmed's ClinTox recipes use it.

`load(name, folder, ...)` reads a preset 80/10/10 by MoleculeNet's recommended split (random
for ESOL, Tox21, SIDER and ClinTox, scaffold for BBBP; DeepChem's `RandomSplitter` and
`ScaffoldSplitter`) or the one asked for.

RDKit and pandas are imported on first use, so the rest of `jmed.data` works without them.

References: Wu et al., "MoleculeNet: a benchmark for molecular machine learning", Chem. Sci. 9,
513 (2018); Bemis & Murcko, J. Med. Chem. 39, 2887 (1996).
"""

import dataclasses
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from jmed.configs import DataConfig, MoleculeConfig
from jmed.data import files
from jmed.data import labels as jlabels
from jmed.data import splits as jsplits
from jmed.data.datasets import Dataset
from jmed.errors import ConfigError, DataError, MissingDataError

TOX21_TASKS = ('NR-AR', 'NR-AR-LBD', 'NR-AhR', 'NR-Aromatase', 'NR-ER', 'NR-ER-LBD',
               'NR-PPAR-gamma', 'SR-ARE', 'SR-ATAD5', 'SR-HSE', 'SR-MMP', 'SR-p53')
# sider.csv's label columns, in file order (MedDRA system organ classes).
SIDER_TASKS = ('Hepatobiliary disorders', 'Metabolism and nutrition disorders', 'Product issues',
               'Eye disorders', 'Investigations',
               'Musculoskeletal and connective tissue disorders', 'Gastrointestinal disorders',
               'Social circumstances', 'Immune system disorders',
               'Reproductive system and breast disorders',
               'Neoplasms benign, malignant and unspecified (incl cysts and polyps)',
               'General disorders and administration site conditions', 'Endocrine disorders',
               'Surgical and medical procedures', 'Vascular disorders',
               'Blood and lymphatic system disorders', 'Skin and subcutaneous tissue disorders',
               'Congenital, familial and genetic disorders', 'Infections and infestations',
               'Respiratory, thoracic and mediastinal disorders', 'Psychiatric disorders',
               'Renal and urinary disorders', 'Pregnancy, puerperium and perinatal conditions',
               'Ear and labyrinth disorders', 'Cardiac disorders', 'Nervous system disorders',
               'Injury, poisoning and procedural complications')
CLINTOX_TASKS = ('FDA_APPROVED', 'CT_TOX')
_URL = 'https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/'
SPLIT_KINDS = ('random', 'scaffold')  # the splits of a preset (besides 'auto')
FEATURES = ('smiles', 'fingerprint', 'graph', 'graph_descriptors')
GRAPH_FEATURES = ('graph', 'graph_descriptors')  # for the D-MPNN, see jmed.data.graphs
HOLD_OUT = 0.1  # a preset's validation and test fractions: 80/10/10
MISSING = -1
RADIUS = 2
SOURCE = 'smiles'
TOKENIZER_FILE = 'tokenizer.json'  # the run's saved vocabulary (written by the training loop)

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Preset:
  """One MoleculeNet file as a 'smiles' table (`data_config` gives its `DataConfig`).

  Attributes:
    name: the dataset's name in jmed, e.g. 'esol'.
    filenames: file names tried in this order in the MoleculeNet folder.
    label_column: the label columns, comma-separated, in label order (a name holding a comma
      double-quoted: `files.join_columns`).
    task: the task kind (a key of `jmed.tasks.TASKS`).
    split: the split MoleculeNet recommends: 'random' or 'scaffold'.
    url: where DeepChem serves the file.
    smiles_column: the SMILES column.
  """

  name: str
  filenames: Tuple[str, ...]
  label_column: str
  task: str
  split: str
  url: str
  smiles_column: str = 'smiles'

  @property
  def label_columns(self) -> Tuple[str, ...]:
    return tuple(files.columns_of(self.label_column))

  def data_config(self, path: str, split: str = 'auto', seed: int = 0) -> DataConfig:
    """The `DataConfig` that reads this preset's file at `path`, 80/10/10 by `split`
    ('auto': MoleculeNet's recommendation) with `seed`."""
    return DataConfig(path=os.fspath(path), source=SOURCE, task=self.task,
                      label_column=self.label_column, smiles_column=self.smiles_column,
                      split=resolve_split(self.name, split), split_seed=seed,
                      validation_fraction=HOLD_OUT, test_fraction=HOLD_OUT)


PRESETS = {
    'esol': Preset('esol', ('delaney-processed.csv',),
                   'measured log solubility in mols per litre', 'regression', 'random',
                   _URL + 'delaney-processed.csv'),
    'bbbp': Preset('bbbp', ('BBBP.csv',), 'p_np', 'binary', 'scaffold', _URL + 'BBBP.csv'),
    'tox21': Preset('tox21', ('tox21.csv', 'tox21.csv.gz'), ','.join(TOX21_TASKS),
                    'multilabel', 'random', _URL + 'tox21.csv.gz'),
    # SIDER and ClinTox: random split, as in MoleculeNet (Wu et al. 2018, Table 1), which we
    # could not open: as quoted in github.com/yuyangw/MolCLR/issues/15 (SIDER: "evaluated
    # using Random split") and github.com/deepchem/deepchem/issues/2879 (ClinTox "split in a
    # 'random' manner", the paper's Figure 9).
    'sider': Preset('sider', ('sider.csv', 'sider.csv.gz'), files.join_columns(SIDER_TASKS),
                    'multilabel', 'random', _URL + 'sider.csv.gz'),
    'clintox': Preset('clintox', ('clintox.csv', 'clintox.csv.gz'),
                      files.join_columns(CLINTOX_TASKS), 'multilabel', 'random',
                      _URL + 'clintox.csv.gz'),
}
NAMES = tuple(PRESETS)


# ---------------------------------------------------------------- the source


def load_user(data: DataConfig, *, text=None, molecule: Optional[MoleculeConfig] = None
              ) -> Dataset:
  """A SMILES table as a split, featurised `Dataset` named after the file's stem.

  Args:
    data: the file (`path`), its SMILES and label columns, task and split.
    text: unused (the source's common signature).
    molecule: features, `max_length`, `fingerprint_bits` and `skip_invalid` (default: its
      defaults).

  Returns:
    The `Dataset`: inputs int32 `[n, max_length]` token ids (`tokenizer` the
    `jmed.text.smiles.Vocabulary` learned on 'train', `model_kwargs` its `vocab_size`) or
    float32 `[n, bits]` fingerprints; labels in the task's layout; `preprocessing` (source,
    labels, features, max_length, bits, smiles_column; canonical when set) and `split_info`.

  Raises:
    MissingDataError: no such file. ConfigError: bad features or split rule.
    DataError: a missing column, a bad label, an empty split, or an unparsable SMILES (unless
      skipped), naming the file, row and column.
  """
  del text
  molecule = molecule or MoleculeConfig()
  _check_features(molecule.features)
  path = os.fspath(data.path)
  frame = files.read_table(path)
  files.require_columns(frame, [data.smiles_column], path, '--smiles-column')
  files.require_columns(frame, jlabels.label_columns(data), path,
                        '--time-column/--event-column' if data.time_column else '--label-column')
  frame, smiles, mols = read_molecules(frame, path, data.smiles_column, molecule.skip_invalid,
                                       canonical=molecule.canonical)
  task = jlabels.infer_task(frame, path, data)
  positions, info = jsplits.assign(
      frame, path, data, stratify=jlabels.strata(frame, path, data, task),
      scaffolds=scaffolds(mols) if data.split == 'scaffold' else None)
  fitted = jlabels.fit_labels(frame.iloc[positions['train']], path, data, task)
  targets = fitted.encode(frame, path)
  split_smiles = {s: [smiles[i] for i in index] for s, index in positions.items()}
  vocab = None
  if molecule.features == 'smiles':
    vocab = _vocabulary(frame, path, data.smiles_column, positions['train'], smiles)
    inputs = {s: _token_ids(vocab, split_smiles[s], molecule.max_length) for s in positions}
    _log_truncated(path, split_smiles, molecule.max_length)
  elif molecule.features in GRAPH_FEATURES:
    from jmed.data import graphs  # pylint: disable=g-import-not-at-top
    every, graph_info = graphs.featurize(
        mols, with_descriptors=molecule.features == 'graph_descriptors',
        train=positions['train'])
    inputs = {s: every[index] for s, index in positions.items()}
  else:
    every = fingerprints(mols, molecule.fingerprint_bits)
    inputs = {s: every[index] for s, index in positions.items()}
  preprocessing = {'source': SOURCE, 'labels': fitted.to_dict(),
                   'features': molecule.features, 'max_length': molecule.max_length,
                   'bits': molecule.fingerprint_bits, 'smiles_column': data.smiles_column,
                   **({'canonical': True} if molecule.canonical else {})}
  model_kwargs = {'vocab_size': vocab.vocab_size} if vocab is not None else {}
  if molecule.features in GRAPH_FEATURES:
    preprocessing.update(graph_info)
    model_kwargs = {'num_descriptors': len(graph_info.get('descriptor_mean', []))}
  return Dataset(
      name=files.stem(path),
      splits={s: (inputs[s], targets[index]) for s, index in positions.items()},
      num_classes=fitted.num_classes, task=task,
      input_shape=inputs['train'].shape[1:],
      model_kwargs=model_kwargs, tokenizer=vocab, preprocessing=preprocessing, split_info=info)


def featurize(path: str, data: DataConfig, preprocessing: dict, run_dir: str, *, text=None,
              molecule: Optional[MoleculeConfig] = None):
  """A new SMILES table made into inputs as training did (`preprocessing`, and the vocabulary
  `run_dir/tokenizer.json` for token ids).

  Returns:
    `jmed.data.user.Rows`: inputs of the rows RDKit can parse (the others are dropped and
    logged with `molecule.skip_invalid`, else a `DataError`), their labels when the file has
    every label column (else None), and ids 'row N' (the file's data rows).
  """
  from jmed.data import user  # pylint: disable=g-import-not-at-top
  del data, text
  molecule = molecule or MoleculeConfig()
  path = os.fspath(path)
  column = preprocessing['smiles_column']
  fitted = jlabels.Labels.from_dict(preprocessing['labels'])
  _check_features(preprocessing['features'])
  frame = files.read_table(path)
  files.require_columns(frame, [column], path, '--smiles-column')
  frame, smiles, mols = read_molecules(frame, path, column, molecule.skip_invalid,
                                       canonical=preprocessing.get('canonical', False))
  if preprocessing['features'] == 'smiles':
    from jmed.text import smiles as jsmiles  # pylint: disable=g-import-not-at-top
    vocab = jsmiles.load(os.path.join(run_dir, TOKENIZER_FILE))
    _check_tokens(frame, path, column, smiles)
    inputs = _token_ids(vocab, smiles, preprocessing['max_length'])
  elif preprocessing['features'] in GRAPH_FEATURES:
    from jmed.data import graphs  # pylint: disable=g-import-not-at-top
    inputs, _ = graphs.featurize(
        mols, rows=preprocessing['graph_rows'],
        with_descriptors=preprocessing['features'] == 'graph_descriptors',
        stats=preprocessing if 'descriptor_mean' in preprocessing else None)
  else:
    inputs = fingerprints(mols, preprocessing['bits'])
  targets = fitted.encode(frame, path) if fitted.present(frame) else None
  return user.Rows(inputs=inputs, labels=targets, ids=[f'row {i + 1}' for i in frame.index])


def read_molecules(frame, path: str, column: str, skip_invalid: bool, *,
                   canonical: bool = False):
  """The rows of `frame` whose SMILES (cell of `column`, surrounding space stripped) RDKit
  parses.

  Returns:
    (those rows of `frame`, index kept, their SMILES `[n]` (RDKit's canonical SMILES with
    `canonical`, else as written), their RDKit molecules `[n]`).

  Raises:
    DataError: a SMILES RDKit cannot parse, or an empty one (naming the file, row, column and
      SMILES), unless `skip_invalid`, which drops and logs such rows; no valid row at all.
  """
  chem, rdbase = _rdkit()
  keep, smiles, mols, dropped = [], [], [], []
  with rdbase.BlockLogs():
    for position, cell in enumerate(frame[column].tolist()):
      text = _cell_text(cell)
      mol = chem.MolFromSmiles(text) if text else None
      if mol is not None:
        keep.append(position)
        smiles.append(chem.MolToSmiles(mol) if canonical else text)
        mols.append(mol)
        continue
      where = files.where(path, frame.index[position], column)
      problem = f'RDKit cannot parse SMILES {text!r}' if text else 'the SMILES is missing'
      if not skip_invalid:
        raise DataError(f'{where}: {problem} (molecule.skip_invalid, --molecule-skip-invalid, '
                        'drops such rows).')
      _LOG.warning('%s: dropped, %s.', where, problem)
      dropped.append(int(frame.index[position]) + 1)
  if dropped:
    _LOG.warning('%s: dropped %d rows whose SMILES RDKit cannot parse (rows %s).', path,
                 len(dropped), ', '.join(map(str, dropped)))
  if not mols:
    raise DataError(f'{path}: no valid molecules in column {column!r}.')
  return frame.iloc[keep], smiles, mols


def _cell_text(cell) -> str:
  if cell is None or (isinstance(cell, float) and np.isnan(cell)):
    return ''
  return str(cell).strip()


def _check_features(features: str) -> None:
  if features not in FEATURES:
    raise ConfigError(f'Unknown molecule features {features!r} (molecule.features); valid: '
                      f'{", ".join(FEATURES)}.')


def _vocabulary(frame, path: str, column: str, train: np.ndarray, smiles: Sequence[str]):
  """The SMILES vocabulary of the training rows (in split order), after checking that every
  SMILES can be tokenized."""
  from jmed.text import smiles as jsmiles  # pylint: disable=g-import-not-at-top
  _check_tokens(frame, path, column, smiles)
  return jsmiles.build_vocab([smiles[i] for i in train])


def _check_tokens(frame, path: str, column: str, smiles: Sequence[str]) -> None:
  """Raises `DataError` naming the row of the first SMILES the tokenizer cannot split."""
  from jmed.text import smiles as jsmiles  # pylint: disable=g-import-not-at-top
  for position, text in enumerate(smiles):
    try:
      jsmiles.tokenize(text)
    except DataError as error:
      raise DataError(f'{files.where(path, frame.index[position], column)}: {error} Use '
                      '--molecule-features fingerprint for such molecules.') from None


def _token_ids(vocab, smiles: Sequence[str], max_length: int) -> np.ndarray:
  from jmed.text import smiles as jsmiles  # pylint: disable=g-import-not-at-top
  return jsmiles.encode(vocab, smiles, max_length)


def _log_truncated(path: str, smiles: Dict[str, Sequence[str]], max_length: int) -> None:
  from jmed.text import smiles as jsmiles  # pylint: disable=g-import-not-at-top
  for split, values in smiles.items():
    cut = sum(len(jsmiles.tokenize(s)) + 2 > max_length for s in values)
    if cut:
      _LOG.info('%s/%s: %d of %d molecules are longer than max_length %d tokens and were '
                'truncated.', files.stem(path), split, cut, len(values), max_length)


# ---------------------------------------------------------------- MoleculeNet presets


def load(name: str, data_dir_moleculenet: str, *, features: str = 'smiles',
         split: str = 'auto', seed: int = 0, max_length: int = 128,
         bits: int = 1024, skip_invalid: bool = False, canonical: bool = False) -> Dataset:
  """MoleculeNet preset `name` read by the 'smiles' source, split 80/10/10.

  Args:
    name: 'esol', 'bbbp', 'tox21', 'sider' or 'clintox' (`NAMES`).
    data_dir_moleculenet: folder holding the preset's file (see `PRESETS`).
    features: 'smiles' (token ids), 'fingerprint' (Morgan, radius 2), 'graph' (packed graphs
      for the D-MPNN) or 'graph_descriptors' (with RDKit 2D descriptors).
    split: 'random', 'scaffold' or 'auto' (MoleculeNet's recommendation).
    seed: seed of the 'random' split; ignored by 'scaffold'.
    max_length: token ids per molecule, [BOS] and [EOS] included ('smiles').
    bits: fingerprint length ('fingerprint').
    skip_invalid: drop (and log) rows whose SMILES RDKit cannot parse instead of raising.
    canonical: tokenize RDKit's canonical SMILES, not the file's spelling ('smiles').

  Returns:
    `load_user`'s `Dataset` of the file, named `name`.

  Raises:
    MissingDataError: no file in `data_dir_moleculenet` (names the path).
    DataError: an unknown name or split, a malformed file or label, or an unparsable SMILES
      (names the file, data row, column and SMILES).
  """
  preset = get_preset(name)
  split = resolve_split(name, split)  # a bad split is named before the file is looked for
  data = preset.data_config(find_csv(name, data_dir_moleculenet), split, seed)
  molecule = MoleculeConfig(features=features, split=data.split, split_seed=seed,
                            max_length=max_length, fingerprint_bits=bits,
                            skip_invalid=skip_invalid, canonical=canonical)
  return dataclasses.replace(load_user(data, molecule=molecule), name=name)


def get_preset(name: str) -> Preset:
  """The `Preset` of MoleculeNet dataset `name`."""
  if name not in PRESETS:
    raise DataError(f'Unknown MoleculeNet dataset {name!r}; valid: {NAMES}.')
  return PRESETS[name]


def resolve_split(name: str, split: str) -> str:
  """`split`, with 'auto' replaced by MoleculeNet's choice for preset `name`."""
  if split == 'auto':
    return get_preset(name).split
  if split not in SPLIT_KINDS:
    raise DataError(f'Unknown split {split!r} for {name}; valid: {SPLIT_KINDS + ("auto",)}.')
  return split


def find_csv(name: str, data_dir_moleculenet: str) -> str:
  """Path of preset `name`'s file (the first of `Preset.filenames` found)."""
  preset = get_preset(name)
  folder = os.fspath(data_dir_moleculenet)
  for filename in preset.filenames:
    path = os.path.join(folder, filename)
    if os.path.isfile(path):
      return path
  expected = os.path.join(folder, preset.filenames[0])
  raise MissingDataError(f'{name} file not found: {expected} (download {preset.url} and put '
                         'it in that folder)')


def download(name: str, folder: str) -> str:
  """Downloads preset `name`'s file from DeepChem (`Preset.url`) into `folder` unless one of
  its `Preset.filenames` is already there; returns the file's path.

  The file is written under a temporary name and renamed when complete, so an interrupted
  download never leaves a partial file behind.

  Raises:
    MissingDataError: the download failed (e.g. no network): the message says where to put the
      file by hand.
  """
  preset = get_preset(name)
  try:
    return find_csv(name, folder)
  except MissingDataError:
    pass
  path = os.path.join(folder, os.path.basename(preset.url))
  _LOG.info('Downloading %s to %s', preset.url, path)
  return files.fetch(preset.url, path, name, f'offline, put {preset.filenames[0]} in '
                     '<data_dir>/moleculenet/ and pass data_dir (or set $JMED_DATA_DIR).')


# ---------------------------------------------------------------- RDKit


def fingerprints(mols: Sequence[object], bits: int = 1024) -> np.ndarray:
  """Morgan fingerprints (radius 2) of `mols` as float32 `[n, bits]` in {0, 1}."""
  if bits < 1:
    raise ConfigError(f'fingerprint_bits must be >= 1, got {bits}.')
  from rdkit.Chem import rdFingerprintGenerator  # pylint: disable=g-import-not-at-top
  generator = rdFingerprintGenerator.GetMorganGenerator(radius=RADIUS, fpSize=bits)
  features = np.zeros((len(mols), bits), np.float32)
  for i, mol in enumerate(mols):
    features[i] = generator.GetFingerprintAsNumPy(mol)
  return features


def scaffolds(mols: Sequence[object]) -> List[str]:
  """Bemis-Murcko scaffold SMILES of each molecule ('' if it has no ring)."""
  from rdkit.Chem.Scaffolds import MurckoScaffold  # pylint: disable=g-import-not-at-top
  return [MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
          for mol in mols]


def _rdkit():
  try:
    from rdkit import Chem, rdBase  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError('Molecules (the smiles source, the MoleculeNet presets) need RDKit: '
                      'pip install rdkit') from error
  return Chem, rdBase
