"""Word-level and WordPiece tokenizers (HuggingFace `tokenizers`) as NumPy ids.

A tokenizer is learned from training texts only (never validation or test),
then turns texts into int32 id matrices `[n, max_length]`, truncated and
right-padded with `PAD_ID`:

  tok = train_tokenizer(train_texts, kind='wordpiece', vocab_size=8000)
  ids = encode(tok, texts, max_length=256)     # int32 [n, 256]
  n_tokens = lengths(ids)                       # int32 [n]

Every vocabulary starts with the special tokens `[PAD]` (id 0) and `[UNK]`
(id 1). Both kinds share the text pipeline:

  * normalizer: with `lowercase`, Unicode NFD + lowercase + strip accents (as
    uncased BERT); without, Unicode NFC only (case and accents are kept).
  * pre-tokenizer: `BertPreTokenizer`, i.e. split on whitespace and around
    every punctuation character ("+/-" -> "+", "/", "-"; "5.3" -> "5", ".",
    "3").

'word' maps every pre-token to a `WordLevel` vocabulary entry, anything not
in it (or seen fewer than `min_frequency` times) to `[UNK]`. 'wordpiece'
learns a `WordPiece` sub-word vocabulary (continuation pieces prefixed `##`),
which spells a word unseen in training with pieces; only characters never
seen in training become `[UNK]`.

Tokenizers are saved as the library's own JSON (`save` / `load`), readable by
`tokenizers.Tokenizer.from_file` and by `transformers`.
"""

import os
from typing import Sequence

import numpy as np
import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import normalizers
from tokenizers import pre_tokenizers
from tokenizers import trainers

from jmed.errors import DataError, MissingDataError

PAD = '[PAD]'
UNK = '[UNK]'
PAD_ID = 0
UNK_ID = 1
SPECIAL_TOKENS = (PAD, UNK)  # In id order.
KINDS = ('word', 'wordpiece')
CONTINUING_PREFIX = '##'


def train_tokenizer(texts: Sequence[str], *, kind: str = 'word',
                    vocab_size: int = 20000, min_frequency: int = 2,
                    lowercase: bool = True) -> tokenizers.Tokenizer:
  """Learns a tokenizer from `texts` (use the training split only).

  Args:
    texts: `[n]` training texts.
    kind: 'word' (`WordLevel`, one id per word or punctuation mark) or
      'wordpiece' (`WordPiece` sub-words, `##` continuation prefix).
    vocab_size: maximum vocabulary size, special tokens included. For
      'wordpiece' the vocabulary may exceed it when the training texts hold
      more distinct characters: every character is kept.
    min_frequency: minimum count of a word ('word') or of a merged pair
      ('wordpiece') to enter the vocabulary.
    lowercase: lowercase and strip accents (see the module docstring).

  Returns:
    The trained tokenizer: `[PAD]` has id `PAD_ID` (0), `[UNK]` id `UNK_ID`
    (1). No padding, truncation or [CLS]/[SEP] tokens are configured: `encode`
    pads and truncates itself.

  Raises:
    ValueError: unknown `kind`, `texts` empty (or a single string), or
      `vocab_size` < 3.
  """
  if kind not in KINDS:
    raise ValueError(f'Unknown tokenizer kind {kind!r}; valid: {KINDS}.')
  texts = _check_texts(texts)
  if not texts:
    raise ValueError('Cannot train a tokenizer on no texts.')
  if vocab_size < len(SPECIAL_TOKENS) + 1:
    raise ValueError(f'vocab_size must be >= {len(SPECIAL_TOKENS) + 1} (the '
                     f'special tokens {SPECIAL_TOKENS} and one more), got '
                     f'{vocab_size}.')
  if kind == 'word':
    tokenizer = tokenizers.Tokenizer(models.WordLevel(unk_token=UNK))
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS), show_progress=False)
  else:
    tokenizer = tokenizers.Tokenizer(models.WordPiece(
        unk_token=UNK, continuing_subword_prefix=CONTINUING_PREFIX))
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix=CONTINUING_PREFIX, show_progress=False)
    tokenizer.decoder = decoders.WordPiece(prefix=CONTINUING_PREFIX)
  if lowercase:
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
  else:
    tokenizer.normalizer = normalizers.NFC()
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
  ids = [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS]
  if ids != [PAD_ID, UNK_ID]:  # Guards against a change in `tokenizers`.
    raise RuntimeError(f'Special tokens {SPECIAL_TOKENS} got ids {ids}, '
                       f'expected {[PAD_ID, UNK_ID]}.')
  return tokenizer


def from_config(train_texts: Sequence[str], text) -> tokenizers.Tokenizer:
  """The tokenizer a `jmed.configs.TextConfig` asks for: the saved one at `text.tokenizer_path`
  (a pretrained run's, whose embedding rows are its ids), else one learned from `train_texts`
  with `text.tokenizer`, `vocab_size` and `min_frequency`.

  Raises:
    MissingDataError / DataError: `tokenizer_path` missing or not a tokenizer (names it).
    ValueError: see `train_tokenizer`.
  """
  if text.tokenizer_path:
    return load(text.tokenizer_path)
  return train_tokenizer(train_texts, kind=text.tokenizer, vocab_size=text.vocab_size,
                         min_frequency=text.min_frequency)


def encode(tokenizer: tokenizers.Tokenizer, texts: Sequence[str],
           max_length: int) -> np.ndarray:
  """Token ids of `texts`, truncated and right-padded to `max_length`.

  The tokenizer itself is not modified (its own padding or truncation
  settings, if any were enabled, are not changed here).

  Args:
    tokenizer: from `train_tokenizer` or `load`.
    texts: `[n]` texts.
    max_length: number of ids per text; longer texts keep their first
      `max_length` tokens.

  Returns:
    int32 `[n, max_length]`: ids, then `PAD_ID` after the last token.

  Raises:
    ValueError: `max_length` < 1 or `texts` is a single string.
  """
  if max_length < 1:
    raise ValueError(f'max_length must be >= 1, got {max_length}.')
  texts = _check_texts(texts)
  ids = np.full((len(texts), max_length), PAD_ID, np.int32)
  if not texts:
    return ids
  for row, encoding in enumerate(
      tokenizer.encode_batch(texts, add_special_tokens=False)):
    tokens = encoding.ids[:max_length]
    ids[row, :len(tokens)] = tokens
  return ids


def lengths(ids: np.ndarray) -> np.ndarray:
  """Non-pad tokens per row of `ids` `[n, max_length]`, as int32 `[n]`."""
  return np.sum(np.asarray(ids) != PAD_ID, axis=-1).astype(np.int32)


def vocab_size(tokenizer: tokenizers.Tokenizer) -> int:
  """Vocabulary size, special tokens included (the embedding table's rows)."""
  return tokenizer.get_vocab_size(with_added_tokens=True)


def save(tokenizer: tokenizers.Tokenizer, path: os.PathLike) -> None:
  """Writes `tokenizer` as the library's JSON to `path` (parents created)."""
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  tokenizer.save(path)


def load(path: os.PathLike) -> tokenizers.Tokenizer:
  """Reads a tokenizer written by `save`.

  Raises:
    MissingDataError: `path` does not exist (names it).
    DataError: `path` is not a tokenizer JSON (names it).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MissingDataError(f'Tokenizer file not found: {path}')
  try:
    return tokenizers.Tokenizer.from_file(path)
  except Exception as error:  # The Rust side raises plain `Exception`.
    raise DataError(f'Corrupt tokenizer file {path}: {error}') from error


def _check_texts(texts: Sequence[str]) -> list:
  if isinstance(texts, (str, bytes)):
    raise ValueError('Expected a sequence of texts, got a single string.')
  return [str(text) for text in texts]
