"""Unlabelled in-domain text for masked-language-model pretraining ('biomed_corpus').

The corpus (`texts`) is the training text of jmed's biomedical text datasets, never a test
split:

  'ncbi_disease'       <data_dir>/ner/NCBI-disease-IOB/{train,devel}.tsv, one text a sentence
  'bc2gm'              <data_dir>/ner/BC2GM-IOB/{train,devel}.tsv
  'jnlpba'             <data_dir>/ner/JNLPBA/devel.tsv (its train file is not available)
  'medical_abstracts'  the 'train' split (seed 0) of <data_dir>/medical_abstracts/ (2,021
                       abstracts; see `jmed.data.medical_abstracts`)

A sentence's tokens are joined by spaces. Sources whose files are missing are skipped with a
warning. A lowercased word tokenizer (`jmed.text.tokenizer`) is learned from all of it; each
source's texts, in order, are encoded and packed greedily into rows of at most
`TextConfig.max_length` ids (a text that does not fit in the current row starts the next one; a
text longer than a row is cut into pieces), padded with 0. The rows are split at random (seeded)
into 'train', 'validation' and 'test': the held-out rows score the pretraining itself and are
still pretraining text, not any dataset's test split. Labels are the ids themselves (the model
picks the positions it masks).
"""

import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from jmed.configs import TextConfig
from jmed.data import conll
from jmed.data.datasets import Dataset
from jmed.errors import ConfigError, DataError, MissingDataError

NAME = 'biomed_corpus'
NER_FILES = {'ncbi_disease': ('NCBI-disease-IOB', ('train.tsv', 'devel.tsv')),
             'bc2gm': ('BC2GM-IOB', ('train.tsv', 'devel.tsv')),
             'jnlpba': ('JNLPBA', ('devel.tsv',))}
SOURCES = tuple(NER_FILES) + ('medical_abstracts',)
_LOG = logging.getLogger(__name__)


def texts(data_dir: str, sources: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
  """source -> its pretraining texts, in file order (see the module docstring).

  Args:
    data_dir: the data root.
    sources: which of `SOURCES` (default: all).

  Raises:
    DataError: an unknown source or a malformed file. MissingDataError: none of the sources'
      files exist (naming what was looked for).
  """
  sources = tuple(SOURCES if sources is None else sources)
  unknown = [s for s in sources if s not in SOURCES]
  if unknown or not sources:
    raise DataError(f'Unknown corpus source(s) {unknown}; valid: {", ".join(SOURCES)}.')
  root = os.fspath(data_dir)
  found, looked = {}, []
  for source in sources:
    if source == 'medical_abstracts':
      folder = os.path.join(root, 'medical_abstracts')
      path = os.path.join(folder, 'medical_tc_test.csv')  # medical_abstracts.TEST_FILE
      looked.append(path)
      if not os.path.isfile(path):
        _LOG.warning('Corpus: %s not found; %s skipped.', path, source)
        continue
      from jmed.data import medical_abstracts  # pylint: disable=g-import-not-at-top
      found[source] = list(medical_abstracts.load_offline(folder, seed=0)['train'][0])
      continue
    folder, names = NER_FILES[source]
    paths = [os.path.join(root, conll.NER_DIR, folder, name) for name in names]
    looked.extend(paths)
    present = [p for p in paths if os.path.isfile(p)]
    if len(present) < len(paths):
      _LOG.warning('Corpus: %s not found; %s skipped.',
                   ', '.join(sorted(set(paths) - set(present))), source)
      continue
    found[source] = [' '.join(tokens) for p in paths for tokens, _ in conll.read(p)]
  if not found:
    raise MissingDataError(f'No pretraining text found under {root}; looked for '
                           f'{", ".join(looked)}.')
  return found


def pack(pieces: Sequence[np.ndarray], length: int) -> np.ndarray:
  """Greedy packing of id sequences, in order, into int32 rows [n, length] padded with 0: a
  sequence that does not fit in the current row's space starts a new row; one longer than
  `length` is first cut into consecutive pieces of `length` ids. Empty sequences are dropped."""
  if length < 1:
    raise ValueError(f'length must be >= 1, got {length}.')
  rows: List[List[int]] = []
  current: List[int] = []
  for ids in pieces:
    ids = [int(i) for i in ids]
    for start in range(0, len(ids), length):
      piece = ids[start:start + length]
      if len(current) + len(piece) > length:
        rows.append(current)
        current = []
      current.extend(piece)
  if current:
    rows.append(current)
  out = np.zeros((len(rows), length), np.int32)
  for r, row in enumerate(rows):
    out[r, :len(row)] = row
  return out


def split_rows(n: int, validation_fraction: float, seed: int) -> Dict[str, np.ndarray]:
  """Seeded disjoint row positions: 'validation' and 'test' each max(1, round(fraction * n))
  rows, 'train' the rest; each sorted.

  Raises:
    ConfigError: a fraction outside (0, 0.5) or too few rows for three non-empty splits.
  """
  if not 0 < validation_fraction < 0.5:
    raise ConfigError(f'validation_fraction must be in (0, 0.5), got {validation_fraction}.')
  held = max(1, int(round(validation_fraction * n)))
  if n < 2 * held + 1:
    raise ConfigError(f'The corpus packs into {n} rows: too few for train, validation and test.')
  order = np.random.default_rng(seed).permutation(n)
  return {'train': np.sort(order[2 * held:]), 'validation': np.sort(order[:held]),
          'test': np.sort(order[held:2 * held])}


def load(data_dir: str, text: Optional[TextConfig] = None, validation_fraction: float = 0.05,
         seed: int = 0, sources: Optional[Sequence[str]] = None,
         task: str = 'masked_lm') -> Dataset:
  """The pretraining corpus as a `Dataset` of the pretraining task `task`.

  Args:
    data_dir: the data root.
    text: `max_length` (L, ids per row), `vocab_size` and `min_frequency` of the word tokenizer
      (always lowercased 'word', whatever `text.tokenizer`, so a tagger can look words up).
    validation_fraction: share of rows held out for 'validation', and again for 'test'.
    seed: of the row split.
    sources: which of `SOURCES` (default: all found).
    task: 'masked_lm' or 'skipgram' (both read the rows as they are: labels = ids).

  Returns:
    Dataset(name 'biomed_corpus', task `task`, splits of (ids int32 [n, L], labels = the
    same ids int32 [n, L]), num_classes = vocab size V, input_shape (L,), model_kwargs
    {'vocab_size': V}, the tokenizer, split_info {'sources', 'texts', 'tokens', 'rows',
    'sizes', 'rule', 'seed', 'validation_fraction'}).
  """
  from jmed.text import tokenizer as jtokenizer  # pylint: disable=g-import-not-at-top
  text = text or TextConfig()
  corpus = texts(data_dir, sources)
  try:
    tokenizer = jtokenizer.train_tokenizer(
        [t for items in corpus.values() for t in items], kind='word',
        vocab_size=text.vocab_size, min_frequency=text.min_frequency, lowercase=True)
  except ValueError as error:
    raise ConfigError(f'text: {error}') from None
  rows, tokens = [], {}
  for source, items in corpus.items():
    encoded = [e.ids for e in tokenizer.encode_batch(items, add_special_tokens=False)]
    tokens[source] = int(sum(len(ids) for ids in encoded))
    rows.append(pack(encoded, text.max_length))
  ids = np.concatenate(rows)
  positions = split_rows(len(ids), validation_fraction, seed)
  splits = {s: (ids[p], ids[p]) for s, p in positions.items()}
  vocab = jtokenizer.vocab_size(tokenizer)
  info = {'rule': 'random rows', 'seed': seed, 'validation_fraction': validation_fraction,
          'sources': list(corpus), 'texts': {s: len(v) for s, v in corpus.items()},
          'tokens': tokens, 'rows': {s: len(r) for s, r in zip(corpus, rows)},
          'sizes': {s: int(len(p)) for s, p in positions.items()}}
  return Dataset(name=NAME, splits=splits, num_classes=vocab, task=task,
                 input_shape=(text.max_length,), model_kwargs={'vocab_size': vocab},
                 tokenizer=tokenizer, split_info=info)
