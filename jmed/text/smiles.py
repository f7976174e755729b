"""Atom-level SMILES tokens (Schwaller et al. 2019) as NumPy ids.

A SMILES string is split by one regular expression into chemically meaningful
tokens: a bracket atom (`[nH]`, `[C@@H]`, `[Na+]`) is one token, as are the
two-letter organic atoms `Cl` and `Br`, every other organic-subset atom
(`C`, `n`, ...), bond (`-`, `=`, `#`, `$`, `/`, `\\`, `:`, `~`), branch
parenthesis, dot, ring-closure digit and two-digit ring closure (`%12`):

  tokenize('CC(=O)Nc1ccc(Cl)cc1')
  # ['C', 'C', '(', '=', 'O', ')', 'N', 'c', '1', 'c', 'c', 'c', '(', 'Cl',
  #  ')', 'c', 'c', '1']

A `Vocabulary` is learned from the training split only; `encode` turns SMILES
into int32 ids `[n, max_length]`: `[BOS]`, the tokens, `[EOS]`, then `[PAD]`
(id 0, the padding id of jmed's sequence models). Tokens not in the
vocabulary map to `[UNK]` (id 1):

  vocab = build_vocab(train_smiles)
  ids = encode(vocab, smiles, max_length=128)   # int32 [n, 128]
  vocab.save('tokenizer.json'); vocab = load('tokenizer.json')

Reference: P. Schwaller et al., "Molecular Transformer: A Model for
Uncertainty-Calibrated Chemical Reaction Prediction", ACS Cent. Sci. 5, 1572
(2019), whose tokenizer regex this module's `PATTERN` follows.
"""

import collections
import dataclasses
import json
import os
import re
from typing import Dict, List, Sequence, Tuple

import numpy as np

from jmed.errors import DataError, MissingDataError

PAD = '[PAD]'
UNK = '[UNK]'
BOS = '[BOS]'
EOS = '[EOS]'
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)  # In id order.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
FORMAT = 'jmed.smiles.v1'  # The `format` field of saved vocabularies.

# Alternatives are tried left to right, so bracket atoms and the two-letter
# atoms Br and Cl come before the one-letter ones.
PATTERN = (r'(\[[^\]]+\]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|'
           r'\\|/|:|~|@|\?|>|\*|\$|%[0-9]{2}|[0-9])')
_REGEX = re.compile(PATTERN)


def tokenize(smiles: str) -> List[str]:
  """Splits one SMILES string into atom-level tokens.

  Args:
    smiles: a SMILES string, without surrounding whitespace.

  Returns:
    The tokens, which concatenate back to `smiles`.

  Raises:
    DataError: `smiles` is empty or holds characters no token covers (e.g. a
      space, or an atom such as `Si` outside brackets); names the SMILES and
      the first character left out.
  """
  if not isinstance(smiles, str):
    raise DataError(f'Expected a SMILES string, got {type(smiles).__name__}.')
  tokens = _REGEX.findall(smiles)
  if ''.join(tokens) != smiles or not tokens:
    raise DataError(f'Cannot tokenize SMILES {smiles!r}: '
                    f'{_first_gap(smiles)}.')
  return tokens


def _first_gap(smiles: str) -> str:
  position = 0
  for match in _REGEX.finditer(smiles):
    if match.start() != position:
      break
    position = match.end()
  if position >= len(smiles):
    return 'it is empty'
  return f'character {smiles[position]!r} at position {position} is not a token'


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """SMILES tokens and their ids: `tokens[i]` has id `i`.

  Attributes:
    tokens: the special tokens `SPECIAL_TOKENS` (ids 0-3), then the learned
      tokens, most frequent first.
  """

  tokens: Tuple[str, ...]

  def __post_init__(self):
    if tuple(self.tokens[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
      raise DataError(f'A SMILES vocabulary must start with {SPECIAL_TOKENS}, '
                      f'got {tuple(self.tokens[:len(SPECIAL_TOKENS)])}.')
    if len(set(self.tokens)) != len(self.tokens):
      raise DataError('A SMILES vocabulary holds a token twice.')

  @property
  def vocab_size(self) -> int:
    """Number of ids, special tokens included (the embedding table's rows)."""
    return len(self.tokens)

  @property
  def ids(self) -> Dict[str, int]:
    """Token -> id."""
    return {token: i for i, token in enumerate(self.tokens)}

  def save(self, path: os.PathLike) -> None:
    """Writes the vocabulary as JSON to `path` (parent folders created)."""
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
      os.makedirs(parent, exist_ok=True)
    with open(path, 'w') as f:
      json.dump({'format': FORMAT, 'pattern': PATTERN,
                 'tokens': list(self.tokens)}, f, indent=1)


def build_vocab(smiles: Sequence[str], min_frequency: int = 1) -> Vocabulary:
  """Learns a vocabulary from training SMILES (never validation or test).

  Args:
    smiles: `[n]` training SMILES.
    min_frequency: tokens seen fewer times are left out (they encode as
      `[UNK]`).

  Returns:
    The vocabulary: special tokens, then tokens by falling count (ties in
    first-seen order), so it is deterministic.

  Raises:
    DataError: `smiles` is a single string or empty, or a SMILES cannot be
      tokenized (see `tokenize`).
  """
  smiles = _check_smiles(smiles)
  if not smiles:
    raise DataError('Cannot build a SMILES vocabulary from no SMILES.')
  counts = collections.Counter()
  for s in smiles:
    counts.update(tokenize(s))
  learned = [token for token, count in counts.most_common()
             if count >= min_frequency and token not in SPECIAL_TOKENS]
  return Vocabulary(SPECIAL_TOKENS + tuple(learned))


def encode(vocab: Vocabulary, smiles: Sequence[str],
           max_length: int) -> np.ndarray:
  """Token ids of `smiles`: `[BOS]`, tokens, `[EOS]`, then `[PAD]`.

  Args:
    vocab: from `build_vocab` or `load`.
    smiles: `[n]` SMILES strings.
    max_length: ids per molecule, `[BOS]` and `[EOS]` included; longer
      molecules keep their first `max_length - 1` ids and end with `[EOS]`.

  Returns:
    int32 `[n, max_length]`.

  Raises:
    DataError: `max_length` < 3, `smiles` is a single string, or a SMILES
      cannot be tokenized.
  """
  if max_length < 3:
    raise DataError(f'max_length must be >= 3 ([BOS], a token, [EOS]), got '
                    f'{max_length}.')
  smiles = _check_smiles(smiles)
  lookup = vocab.ids
  ids = np.full((len(smiles), max_length), PAD_ID, np.int32)
  for row, s in enumerate(smiles):
    tokens = [lookup.get(t, UNK_ID) for t in tokenize(s)][:max_length - 2]
    ids[row, :len(tokens) + 2] = [BOS_ID] + tokens + [EOS_ID]
  return ids


def decode(vocab: Vocabulary, ids: np.ndarray) -> List[str]:
  """SMILES of id rows `[n, max_length]` (specials dropped, `[UNK]` kept)."""
  specials = (PAD_ID, BOS_ID, EOS_ID)
  return [''.join(vocab.tokens[i] for i in row if i not in specials)
          for row in np.asarray(ids)]


def load(path: os.PathLike) -> Vocabulary:
  """Reads a vocabulary written by `Vocabulary.save`.

  Raises:
    MissingDataError: `path` does not exist (names it).
    DataError: `path` is not a SMILES vocabulary JSON (names it).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MissingDataError(f'SMILES vocabulary file not found: {path}')
  try:
    with open(path) as f:
      content = json.load(f)
    if content.get('format') != FORMAT:
      raise ValueError(f'format is {content.get("format")!r}, not {FORMAT!r}')
    return Vocabulary(tuple(content['tokens']))
  except (ValueError, KeyError, TypeError, AttributeError) as error:
    raise DataError(f'Corrupt SMILES vocabulary file {path}: {error}') from error


def _check_smiles(smiles: Sequence[str]) -> List[str]:
  if isinstance(smiles, (str, bytes)):
    raise DataError('Expected a sequence of SMILES, got a single string.')
  return list(smiles)
