"""The 'text' source: a table (CSV, TSV, Parquet or JSON Lines) with a text column and label
columns, as token ids.

`DataConfig.text_column` names the text, `DataConfig.label_column` the label (class names may
be any strings or whole numbers: 'binary' or 'multiclass'; several 0/1 columns, empty cells
missing: 'multilabel'; see `jmed.data.labels`). Rows are split by the file's split column,
else by `DataConfig.split` (`jmed.data.splits`; 'auto' stratifies single-label classes).

A tokenizer (`jmed.text.tokenizer`, `TextConfig`: kind, vocab_size, min_frequency) is learned
from the training rows only, as for the built-in Medical Abstracts, and every text becomes
int32 ids `[max_length]`, truncated and padded with 0. The training loop saves the tokenizer as
`run_dir/tokenizer.json`, from which `featurize` encodes a new file identically.

  python scripts/train.py --data notes.jsonl --text-column note --label-column diagnosis ...

tokenizers and pandas are imported on first use.
"""

import os
from typing import List, Optional

import numpy as np

from jmed.configs import DataConfig, TextConfig
from jmed.data import files
from jmed.data import labels as jlabels
from jmed.data import splits as jsplits
from jmed.data.datasets import Dataset
from jmed.errors import ConfigError, DataError

SOURCE = 'text'
TOKENIZER_FILE = 'tokenizer.json'  # the run's saved tokenizer (written by the training loop)


def load_user(data: DataConfig, *, text: Optional[TextConfig] = None, molecule=None) -> Dataset:
  """A text table as a split `Dataset` of token ids, named after the file's stem.

  Args:
    data: the file (`path`), its text and label columns, task and split.
    text: tokenizer kind, vocab_size, min_frequency and max_length (default: its defaults).
    molecule: unused (the source's common signature).

  Returns:
    The `Dataset`: inputs int32 `[n, max_length]`, labels in the task's layout, `tokenizer`
    the `tokenizers.Tokenizer` learned on 'train' (`model_kwargs` its `vocab_size`),
    `preprocessing` (source, labels, text_column, max_length, tokenizer kind) and
    `split_info`.

  Raises:
    MissingDataError: no such file. ConfigError: a bad split rule or TextConfig value.
    DataError: a missing column, an empty text or label, a class of validation or test the
      training rows lack, or an empty split; naming the file, row and column.
  """
  from jmed.text import tokenizer as jtokenizer  # pylint: disable=g-import-not-at-top
  del molecule
  text = text or TextConfig()
  path = os.fspath(data.path)
  frame = files.read_table(path)
  files.require_columns(frame, [data.text_column], path, '--text-column')
  texts = read_texts(frame, path, data.text_column)
  task = jlabels.infer_task(frame, path, data)
  positions, info = jsplits.assign(frame, path, data,
                                   stratify=jlabels.strata(frame, path, data, task))
  fitted = jlabels.fit_labels(frame.iloc[positions['train']], path, data, task)
  targets = fitted.encode(frame, path)
  tokenizer = _train(jtokenizer, [texts[i] for i in positions['train']], text)
  splits = {s: (jtokenizer.encode(tokenizer, [texts[i] for i in index], text.max_length),
                targets[index])
            for s, index in positions.items()}
  preprocessing = {'source': SOURCE, 'labels': fitted.to_dict(),
                   'text_column': data.text_column, 'max_length': text.max_length,
                   'tokenizer': text.tokenizer, 'vocab_size': jtokenizer.vocab_size(tokenizer)}
  return Dataset(name=files.stem(path), splits=splits, num_classes=fitted.num_classes,
                 task=task, input_shape=(text.max_length,),
                 model_kwargs={'vocab_size': jtokenizer.vocab_size(tokenizer)},
                 tokenizer=tokenizer, preprocessing=preprocessing, split_info=info)


def featurize(path: str, data: DataConfig, preprocessing: dict, run_dir: str, *, text=None,
              molecule=None):
  """A new text table encoded as training did: the tokenizer `run_dir/tokenizer.json`, the
  text column and max_length of `preprocessing`.

  Returns:
    `jmed.data.user.Rows`: token ids int32 `[n, max_length]`, labels when the file has the
    label columns (else None), ids 'row N' (the file's data rows).

  Raises:
    MissingDataError: no tokenizer.json in `run_dir`. DataError: a missing text column, an
      empty text, a class the training rows lack (naming the row and column).
  """
  from jmed.data import user  # pylint: disable=g-import-not-at-top
  from jmed.text import tokenizer as jtokenizer  # pylint: disable=g-import-not-at-top
  del data, text, molecule
  path = os.fspath(path)
  column = preprocessing['text_column']
  fitted = jlabels.Labels.from_dict(preprocessing['labels'])
  tokenizer = jtokenizer.load(os.path.join(run_dir, TOKENIZER_FILE))
  frame = files.read_table(path)
  files.require_columns(frame, [column], path, '--text-column')
  inputs = jtokenizer.encode(tokenizer, read_texts(frame, path, column),
                             preprocessing['max_length'])
  targets = fitted.encode(frame, path) if fitted.present(frame) else None
  return user.Rows(inputs=inputs, labels=targets, ids=[f'row {i + 1}' for i in frame.index])


def read_texts(frame, path: str, column: str) -> List[str]:
  """The cells of `column` as given (whitespace kept).

  Raises:
    DataError: naming the file, row and column of the first empty or missing text.
  """
  empty = files.is_missing(frame[column])
  if empty.any():
    row = frame.index[np.argmax(empty)]
    raise DataError(f'{files.where(path, row, column)}: the text is empty.')
  return [str(value) for value in frame[column].tolist()]


def _train(jtokenizer, texts: List[str], text: TextConfig):
  """The tokenizer of `text` learned from the training texts."""
  try:
    return jtokenizer.from_config(texts, text)
  except ValueError as error:  # an unknown kind or a too small vocab_size
    raise ConfigError(f'text: {error}') from None
