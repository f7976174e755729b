"""CoNLL-style token-per-line files and the named-entity recognition datasets built from them.

Format (UTF-8): one token per line, `token<TAB>tag` (with more columns, the first is the token
and the last the tag), a blank line between sentences; lines starting with `-DOCSTART-` are
skipped. A tag is 'O' or 'P-X' with P in B, I, E, S (IOB2 or IOBES) and X the entity type.

A sentence becomes one row of a tagging dataset:

  inputs  int32 [n, L, 1 + C]: column 0 the word id (`word_ids`: the tokenizer's normalizer,
          then a whole-word lookup; 0 = [PAD] after the sentence, 1 = [UNK]), columns 1..C the
          token's first C characters, original case, as char ids (`char_vocab`: 0 pad, 1 unknown).
  labels  int32 [n, L]: tag ids (index into the tag names: 'O' first, then sorted), -1 after the
          sentence.

A sentence longer than L is cut into consecutive pieces of L tokens, one row each;
`encode` returns which sentence each row came from (`sentence_of_row`).

The built-in corpora (`NER_CORPORA`, under `<data_dir>/ner/`, each with train.tsv, devel.tsv and
test.tsv) load with `load`; a user's own files with the source 'conll' (`load_user`,
`featurize`): a folder holding train.tsv, devel.tsv (or dev.tsv, validation.tsv) and test.tsv,
or one file split by sentences (`DataConfig.split`, `split_seed`, fractions).

The word tokenizer (`train_word_tokenizer`, lowercased, `jmed.text.tokenizer`) is learned from
the training sentences, or read from a pretraining run's tokenizer.json (`tokenizer_path`), so a
model pretrained on `jmed.data.corpus` keeps its embeddings. Each CoNLL token is looked up whole:
a token the tokenizer's pre-tokenizer would split (e.g. 'IL-2' when the files do not split it)
is [UNK] unless the training text held it whole.
"""

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from jmed.configs import DataConfig, TextConfig
from jmed.data.datasets import Dataset
from jmed.errors import ConfigError, DataError, MissingDataError

SOURCE = 'conll'
TOKENIZER_FILE = 'tokenizer.json'  # the run's saved tokenizer (written by the training loop)
NER_DIR = 'ner'
NER_CORPORA = {'ncbi_disease': 'NCBI-disease-IOB', 'bc2gm': 'BC2GM-IOB'}
SPLIT_FILES = {'train': ('train.tsv',), 'validation': ('devel.tsv', 'dev.tsv', 'validation.tsv'),
               'test': ('test.tsv',)}
SPLITS = ('train', 'validation', 'test')
DOCSTART = '-DOCSTART-'
PREFIXES = ('B', 'I', 'E', 'S')
OUTSIDE = 'O'
PAD_ID = 0  # word and char padding
UNK_ID = 1  # unknown word or char
CHAR_OFFSET = 2  # the first real char's id
LENGTH_MULTIPLE = 8  # L is the longest sentence rounded up to this
MAX_CHARS = 20
TASKS = ('auto', 'tagging')  # the `DataConfig.task` values CoNLL data accepts

Sentence = Tuple[List[str], Optional[List[str]]]


# ---------------------------------------------------------------- reading


def read(path: str, tags: bool = True) -> List[Sentence]:
  """The sentences of a CoNLL file.

  Args:
    path: the file.
    tags: whether every line must carry a tag. False (prediction files): token-only lines are
      allowed; then each sentence's tags are None unless the whole file is tagged.

  Returns:
    [(tokens, tags)] in file order; tags a list as long as tokens, or None.

  Raises:
    MissingDataError: no such file. DataError: a bad tag, an empty token, a line without a tab
      (when `tags`), a file mixing tagged and untagged lines, undecodable bytes, or no sentence;
      naming the file and line.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MissingDataError(f'CoNLL file not found: {path}')
  sentences, tokens, labels = [], [], []
  tagged_line = untagged_line = None  # first line of each kind, for the mixed-file message
  try:
    with open(path, encoding='utf-8') as f:
      for number, line in enumerate(f, start=1):
        line = line.rstrip('\r\n')
        if not line.strip():
          if tokens:
            sentences.append((tokens, labels))
            tokens, labels = [], []
          continue
        if line.startswith(DOCSTART):
          continue
        columns = line.split('\t')
        token = columns[0]
        if not token.strip():
          raise DataError(f'{path}, line {number}: empty token in {line!r}.')
        if len(columns) < 2:
          if tags:
            raise DataError(f'{path}, line {number}: expected token<TAB>tag, got {line!r}.')
          untagged_line = untagged_line or number
          tag = None
        else:
          tag = columns[-1].strip()
          check_tag(tag, f'{path}, line {number}')
          tagged_line = tagged_line or number
        tokens.append(token)
        labels.append(tag)
  except UnicodeDecodeError as error:
    raise DataError(f'{path}: not UTF-8 text: {error}') from None
  if tokens:
    sentences.append((tokens, labels))
  if not sentences:
    raise DataError(f'{path}: no sentence (token<TAB>tag lines, a blank line between '
                    'sentences).')
  if untagged_line:
    if tagged_line:
      raise DataError(f'{path}: line {tagged_line} has a tag but line {untagged_line} has none; '
                      'tag every token or none.')
    sentences = [(tokens, None) for tokens, _ in sentences]
  return sentences


def check_tag(tag: str, where: str) -> None:
  """Raises DataError naming `where` unless `tag` is 'O' or 'P-X' with P in B, I, E, S."""
  if tag == OUTSIDE:
    return
  prefix, dash, kind = tag.partition('-')
  if prefix not in PREFIXES or not dash or not kind.strip():
    raise DataError(f"{where}: tag {tag!r} is not 'O' or B-, I-, E-, S- and an entity type.")


def tag_names(sentences: Sequence[Sentence]) -> Tuple[str, ...]:
  """The tags of tagged `sentences`: 'O' first (always), then the others sorted."""
  seen = {tag for _, tags in sentences for tag in (tags or ())}
  return (OUTSIDE,) + tuple(sorted(seen - {OUTSIDE}))


def looks_like(path: str) -> bool:
  """Whether `path` is likely CoNLL data: a folder holding train.tsv and test.tsv, a '.conll',
  '.iob', '.bio' file, or a '.tsv' file whose first line is `token<TAB>tag` with a valid tag
  (or a `-DOCSTART-` line)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    return all(os.path.isfile(os.path.join(path, f)) for f in ('train.tsv', 'test.tsv'))
  lower = path.lower()
  if lower.endswith(('.conll', '.iob', '.bio', '.iob2', '.iobes')):
    return True
  if not lower.endswith('.tsv') or not os.path.isfile(path):
    return False
  try:
    with open(path, encoding='utf-8') as f:
      first = next((line.rstrip('\r\n') for line in f if line.strip()), '')
  except (OSError, UnicodeDecodeError):
    return False
  columns = first.split('\t')
  if first.startswith(DOCSTART):
    return True
  try:
    check_tag(columns[-1].strip(), '')
  except DataError:
    return False
  return len(columns) >= 2


# ---------------------------------------------------------------- ids


def word_ids(tokenizer, tokens: Sequence[str], cache: Optional[Dict[str, int]] = None
             ) -> np.ndarray:
  """int32 [len(tokens)]: each token normalized by the tokenizer's normalizer (lowercase, ...)
  and looked up whole in its vocabulary; UNK_ID (1) when absent. `cache` (token -> id) may be
  shared between calls with one tokenizer."""
  cache = {} if cache is None else cache
  normalizer = tokenizer.normalizer
  ids = np.empty(len(tokens), np.int32)
  for i, token in enumerate(tokens):
    if token not in cache:
      word = normalizer.normalize_str(token) if normalizer is not None else token
      found = tokenizer.token_to_id(word)
      cache[token] = UNK_ID if found is None else found
    ids[i] = cache[token]
  return ids


def char_vocab(sentences: Sequence[Sentence], min_count: int = 1) -> Dict[str, int]:
  """char -> id for the chars seen at least `min_count` times in the tokens of `sentences`
  (use the training ones), ids 2, 3, ... in sorted char order; 0 is padding, 1 an unknown
  char, so a char embedding needs `len(vocab) + 2` rows."""
  counts: Dict[str, int] = {}
  for tokens, _ in sentences:
    for token in tokens:
      for char in token:
        counts[char] = counts.get(char, 0) + 1
  kept = sorted(c for c, n in counts.items() if n >= min_count)
  return {c: i + CHAR_OFFSET for i, c in enumerate(kept)}


def chars_string(chars: Dict[str, int]) -> str:
  """The chars of a `char_vocab` in id order (ids 2, 3, ...), as saved in preprocessing."""
  return ''.join(sorted(chars, key=chars.get))


def chars_from_string(text: str) -> Dict[str, int]:
  """The `char_vocab` that `chars_string` wrote."""
  return {c: i + CHAR_OFFSET for i, c in enumerate(text)}


def encode(sentences: Sequence[Sentence], tokenizer, chars: Dict[str, int],
           tag_ids: Optional[Dict[str, int]], max_length: int, max_chars: int
           ) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
  """Sentences as tagging rows; a sentence longer than `max_length` is cut into consecutive
  pieces of `max_length` tokens (the last one shorter), one row each.

  Args:
    sentences: [(tokens, tags or None)].
    tokenizer: a word tokenizer (`word_ids`).
    chars: `char_vocab`.
    tag_ids: tag -> id; None: no labels.
    max_length: L, tokens per row.
    max_chars: C, chars kept per token (0: no char columns).

  Returns:
    (inputs int32 [n, L, 1 + C], labels int32 [n, L] with -1 after each sentence piece or None,
     sentence_of_row int64 [n]: the 0-based sentence each row came from, rows in order).

  Raises:
    DataError: a tag not in `tag_ids` or an untagged sentence when `tag_ids` is given (naming
      the 1-based sentence and token).
  """
  if max_length < 1 or max_chars < 0:
    raise ValueError(f'max_length must be >= 1 and max_chars >= 0, got {max_length}, '
                     f'{max_chars}.')
  pieces = [(s, start) for s, (tokens, _) in enumerate(sentences)
            for start in range(0, len(tokens), max_length)]
  inputs = np.zeros((len(pieces), max_length, 1 + max_chars), np.int32)
  labels = None if tag_ids is None else np.full((len(pieces), max_length), -1, np.int32)
  words: Dict[str, int] = {}
  spelled: Dict[str, np.ndarray] = {}
  for row, (s, start) in enumerate(pieces):
    tokens, tags = sentences[s]
    tokens = tokens[start:start + max_length]
    inputs[row, :len(tokens), 0] = word_ids(tokenizer, tokens, words)
    if max_chars:
      for i, token in enumerate(tokens):
        if token not in spelled:
          spelled[token] = np.asarray([chars.get(c, UNK_ID) for c in token[:max_chars]],
                                      np.int32)
        inputs[row, i, 1:1 + len(spelled[token])] = spelled[token]
    if labels is not None:
      if tags is None:
        raise DataError(f'sentence {s + 1} has no tags.')
      for i, tag in enumerate(tags[start:start + max_length]):
        if tag not in tag_ids:
          raise DataError(f'sentence {s + 1}, token {start + i + 1} ({tokens[i]!r}): tag '
                          f'{tag!r} is not one of the training tags {sorted(tag_ids)}.')
        labels[row, i] = tag_ids[tag]
  return inputs, labels, np.asarray([s for s, _ in pieces], np.int64)


def train_word_tokenizer(sentences: Sequence[Sentence], text: Optional[TextConfig] = None):
  """A lowercased word tokenizer (`jmed.text.tokenizer`, kind 'word', `text.vocab_size`,
  `text.min_frequency`) learned from the tokens of `sentences` (use the training ones).

  Raises:
    ConfigError: a bad vocab_size.
  """
  from jmed.text import tokenizer as jtokenizer  # pylint: disable=g-import-not-at-top
  text = text or TextConfig()
  try:
    return jtokenizer.train_tokenizer([' '.join(tokens) for tokens, _ in sentences],
                                      kind='word', vocab_size=text.vocab_size,
                                      min_frequency=text.min_frequency, lowercase=True)
  except ValueError as error:
    raise ConfigError(f'text: {error}') from None


def row_length(sentences: Sequence[Sentence], cap: int) -> int:
  """L: the longest sentence's length rounded up to a multiple of 8, at most `cap`."""
  longest = max(len(tokens) for tokens, _ in sentences)
  return int(min(-(-longest // LENGTH_MULTIPLE) * LENGTH_MULTIPLE, cap))


# ---------------------------------------------------------------- datasets


def load(name: str, data_dir: str, text: Optional[TextConfig] = None,
         max_chars: Optional[int] = None, tokenizer_path: Optional[str] = None) -> Dataset:
  """A built-in NER corpus (`NER_CORPORA`) from `<data_dir>/ner/<folder>/{train,devel,test}.tsv`.

  Args:
    name: 'ncbi_disease' or 'bc2gm'.
    data_dir: the data root.
    text: `max_length` caps L; `vocab_size`, `min_frequency` of the word tokenizer;
      `char_length` and `tokenizer_path` the defaults of the next two.
    max_chars: C, chars per token (None: `text.char_length`).
    tokenizer_path: a tokenizer.json to use (e.g. of a masked-LM pretraining run) instead of
      learning one from the training sentences (None: `text.tokenizer_path`; '' none).

  Returns:
    The tagging `Dataset` ('train', 'validation' = devel, 'test'); see `build`.

  Raises:
    DataError: an unknown name or a malformed file. MissingDataError: a missing file.
  """
  if name not in NER_CORPORA:
    raise DataError(f'Unknown NER corpus {name!r}; valid: {", ".join(NER_CORPORA)}.')
  if data_dir is None:
    raise MissingDataError(f'{name} is read from local files only: pass data_dir (or set '
                           f'$JMED_DATA_DIR) to the folder holding {NER_DIR}/{NER_CORPORA[name]}/.')
  text = text or TextConfig()
  folder = os.path.join(os.fspath(data_dir), NER_DIR, NER_CORPORA[name])
  paths = split_paths(folder)
  return build(name, {s: read(p) for s, p in paths.items()}, text,
               text.char_length if max_chars is None else max_chars,
               tokenizer_path=(text.tokenizer_path if tokenizer_path is None
                               else tokenizer_path),
               split_info={'rule': 'files', 'files': paths})


def split_paths(folder: str) -> Dict[str, str]:
  """split -> file of a folder holding train.tsv, devel.tsv (or dev.tsv, validation.tsv) and
  test.tsv.

  Raises:
    MissingDataError: naming the folder and the file names looked for.
  """
  paths = {}
  for split, names in SPLIT_FILES.items():
    found = [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]
    if not found:
      raise MissingDataError(f'{folder}: no {" or ".join(names)} (the {split} split).')
    paths[split] = found[0]
  return paths


def build(name: str, sentences: Dict[str, List[Sentence]], text: TextConfig, max_chars: int, *,
          tokenizer=None, tokenizer_path: str = '', split_info: Optional[dict] = None
          ) -> Dataset:
  """The tagging `Dataset` of tagged sentences per split.

  L is the longest sentence of any split rounded up to a multiple of 8, at most
  `text.max_length` (longer sentences are cut into rows, see `encode`). The tokenizer is
  `tokenizer`, else read from `tokenizer_path`, else learned from 'train'; tags and chars come
  from 'train' (a validation or test tag that training lacks is an error).

  Returns:
    Dataset(task 'tagging', inputs int32 [n, L, 1 + C], labels int32 [n, L] (-1 padding),
    num_classes the number of tags, model_kwargs {'vocab_size', 'num_chars' (char embedding
    rows: chars + pad + unknown)}, task_kwargs {'tags'}, preprocessing {'source': 'conll',
    'tags', 'chars', 'max_length', 'max_chars'}, split_info with sentence and row counts).
  """
  from jmed.text import tokenizer as jtokenizer  # pylint: disable=g-import-not-at-top
  if max_chars < 0:
    raise ConfigError(f'max_chars must be >= 0, got {max_chars}.')
  if tokenizer is None:
    tokenizer = (jtokenizer.load(tokenizer_path) if tokenizer_path
                 else train_word_tokenizer(sentences['train'], text))
  tags = tag_names(sentences['train'])
  tag_ids = {t: i for i, t in enumerate(tags)}
  chars = char_vocab(sentences['train'])
  length = row_length([s for split in sentences.values() for s in split], text.max_length)
  splits, rows = {}, {}
  for split, items in sentences.items():
    try:
      inputs, labels, of_row = encode(items, tokenizer, chars, tag_ids, length, max_chars)
    except DataError as error:
      raise DataError(f'{name}/{split}: {error}') from None
    splits[split] = (inputs, labels)
    rows[split] = len(of_row)
  info = dict(split_info or {})
  info.update({'sentences': {s: len(v) for s, v in sentences.items()}, 'sizes': rows,
               'cut_sentences': sum(rows.values()) - sum(len(v) for v in sentences.values())})
  preprocessing = {'source': SOURCE, 'tags': list(tags), 'chars': chars_string(chars),
                   'max_length': length, 'max_chars': max_chars}
  return Dataset(name=name, splits=splits, num_classes=len(tags), task='tagging',
                 input_shape=(length, 1 + max_chars),
                 model_kwargs={'vocab_size': jtokenizer.vocab_size(tokenizer),
                               'num_chars': len(chars) + CHAR_OFFSET},
                 tokenizer=tokenizer, task_kwargs={'tags': tags},
                 preprocessing=preprocessing, split_info=info)


# ---------------------------------------------------------------- the user source 'conll'


def load_user(data: DataConfig, *, text: Optional[TextConfig] = None, molecule=None) -> Dataset:
  """A user's CoNLL data as a tagging `Dataset` (see `build`), named after the folder or file.

  `text.char_length` chars per token; the tokenizer of `text.tokenizer_path` when set.
  `data.path`: a folder holding train.tsv, devel.tsv (or dev.tsv, validation.tsv) and
  test.tsv; or one file whose sentences are split by `data.split` ('auto' and 'random':
  seeded by `data.split_seed`), `validation_fraction` and `test_fraction`
  (`jmed.data.splits.assign` over the sentences).

  Raises:
    MissingDataError: a missing file. DataError: a malformed file or an empty split.
    ConfigError: a rule that needs what sentences lack (stratified, group, scaffold), or a
      task other than 'auto' / 'tagging'.
  """
  import pandas  # pylint: disable=g-import-not-at-top
  from jmed.data import splits as jsplits  # pylint: disable=g-import-not-at-top
  del molecule
  if data.task not in TASKS:
    raise ConfigError(f'task {data.task!r} does not apply to CoNLL data ({data.path}): its '
                      "labels are a tag per token, task 'tagging' (or --task auto).")
  text = text or TextConfig()
  path = os.fspath(data.path)
  if os.path.isdir(path):
    paths = split_paths(path)
    name = os.path.basename(os.path.normpath(path))
    return build(name, {s: read(p) for s, p in paths.items()}, text, text.char_length,
                 tokenizer_path=text.tokenizer_path,
                 split_info={'rule': 'files', 'files': paths})
  sentences = read(path)
  frame = pandas.DataFrame(index=np.arange(len(sentences)))  # one row per sentence, no columns
  positions, info = jsplits.assign(frame, path, data)
  info['unit'] = 'sentence'
  return build(os.path.splitext(os.path.basename(path))[0],
               {s: [sentences[i] for i in np.sort(positions[s])] for s in SPLITS},
               text, text.char_length, tokenizer_path=text.tokenizer_path, split_info=info)


def featurize(path: str, data: DataConfig, preprocessing: dict, run_dir: str, *, text=None,
              molecule=None):
  """A new CoNLL file encoded as training did: `run_dir/tokenizer.json` and the tags, chars,
  max_length and max_chars of `preprocessing`. A folder means its test.tsv.

  Returns:
    `jmed.data.user.Rows`: inputs int32 [n, L, 1 + C], labels int32 [n, L] when every token has
    a tag (else None), ids 'sentence K' (1-based, file order) per row; a sentence cut into
    several rows gives 'sentence K', 'sentence K, part 2', ...

  Raises:
    MissingDataError: no tokenizer.json in `run_dir` or no file. DataError: a malformed file or
      a tag training lacked (naming the sentence and token).
  """
  from jmed.data import user  # pylint: disable=g-import-not-at-top
  from jmed.text import tokenizer as jtokenizer  # pylint: disable=g-import-not-at-top
  del data, text, molecule
  path = os.fspath(path)
  if os.path.isdir(path):
    path = split_paths(path)['test']
  tokenizer = jtokenizer.load(os.path.join(run_dir, TOKENIZER_FILE))
  sentences = read(path, tags=False)
  tagged = sentences[0][1] is not None
  tag_ids = {t: i for i, t in enumerate(preprocessing['tags'])} if tagged else None
  try:
    inputs, labels, of_row = encode(sentences, tokenizer,
                                    chars_from_string(preprocessing['chars']), tag_ids,
                                    preprocessing['max_length'], preprocessing['max_chars'])
  except DataError as error:
    raise DataError(f'{path}: {error}') from None
  return user.Rows(inputs=inputs, labels=labels, ids=row_ids(of_row))


def row_ids(sentence_of_row: np.ndarray) -> List[str]:
  """'sentence K' for each row (K 1-based); later pieces of a cut sentence 'sentence K, part P'."""
  ids, previous, part = [], -1, 0
  for s in sentence_of_row.tolist():
    part = part + 1 if s == previous else 1
    previous = s
    ids.append(f'sentence {s + 1}' + (f', part {part}' if part > 1 else ''))
  return ids
