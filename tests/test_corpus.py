"""The masked-LM pretraining corpus (jmed.data.corpus)."""

import logging
import os

import numpy as np
import pytest

from jmed.configs import TextConfig
from jmed.data import corpus
from jmed.errors import ConfigError, DataError, MissingDataError

REAL = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')
TEXT = TextConfig(vocab_size=500, min_frequency=1, max_length=8)


def write(path, sentences, docstart=False):
  path.parent.mkdir(parents=True, exist_ok=True)
  blocks = [('-DOCSTART-\tO\n' if docstart else '')]
  blocks += ['\n'.join(f'{w}\tO' for w in s.split()) + '\n' for s in sentences]
  path.write_text('\n'.join(blocks), encoding='utf-8')


@pytest.fixture
def data_dir(tmp_path):
  ncbi = tmp_path / 'ner' / 'NCBI-disease-IOB'
  words = [f'w{i}' for i in range(40)]
  rng = np.random.default_rng(0)
  train = [' '.join(rng.choice(words, rng.integers(1, 12))) for _ in range(30)]
  write(ncbi / 'train.tsv', train)
  write(ncbi / 'devel.tsv', ['the devel sentence', 'another one .'])
  write(ncbi / 'test.tsv', ['secretword in the test file'])
  jnlpba = tmp_path / 'ner' / 'JNLPBA'
  write(jnlpba / 'devel.tsv', ['IL-2 gene expression', 'NF-kappa B'], docstart=True)
  write(jnlpba / 'test.tsv', ['secretword again'])
  write(tmp_path / 'ner' / 'BC2GM-IOB' / 'train.tsv', ['no devel file here'])
  return tmp_path


def test_texts_never_test_files(data_dir, caplog):
  with caplog.at_level(logging.WARNING):
    texts = corpus.texts(str(data_dir))
  assert list(texts) == ['ncbi_disease', 'jnlpba']
  assert len(texts['ncbi_disease']) == 32 and texts['ncbi_disease'][-1] == 'another one .'
  assert texts['jnlpba'] == ['IL-2 gene expression', 'NF-kappa B']
  assert not any('secretword' in t for items in texts.values() for t in items)
  assert 'BC2GM-IOB/devel.tsv' in caplog.text and 'medical_tc_test.csv' in caplog.text
  assert list(corpus.texts(str(data_dir), sources=['jnlpba'])) == ['jnlpba']
  with pytest.raises(DataError, match='Unknown corpus source'):
    corpus.texts(str(data_dir), sources=['mimic'])
  with pytest.raises(MissingDataError, match='looked for .*NCBI-disease-IOB/train.tsv'):
    corpus.texts(str(data_dir / 'nothing'))


def test_pack():
  rows = corpus.pack([[1, 2], [3, 4, 5], [6], [], list(range(10, 20))], 4)
  np.testing.assert_array_equal(rows, [[1, 2, 0, 0], [3, 4, 5, 6], [10, 11, 12, 13],
                                       [14, 15, 16, 17], [18, 19, 0, 0]])
  assert rows.dtype == np.int32
  assert corpus.pack([], 4).shape == (0, 4)


def test_split_rows():
  parts = corpus.split_rows(100, 0.05, seed=1)
  assert {k: len(v) for k, v in parts.items()} == {'train': 90, 'validation': 5, 'test': 5}
  np.testing.assert_array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(100))
  np.testing.assert_array_equal(corpus.split_rows(100, 0.05, seed=1)['test'], parts['test'])
  assert len(corpus.split_rows(5, 0.05, 0)['test']) == 1
  with pytest.raises(ConfigError, match='too few'):
    corpus.split_rows(2, 0.05, 0)
  with pytest.raises(ConfigError, match='validation_fraction'):
    corpus.split_rows(100, 0.5, 0)


def test_load(data_dir):
  d = corpus.load(str(data_dir), TEXT, validation_fraction=0.1, seed=0)
  vocab = d.model_kwargs['vocab_size']
  assert d.name == 'biomed_corpus' and d.task == 'masked_lm' and d.num_classes == vocab
  assert d.input_shape == (8,) and d.tokenizer.token_to_id('secretword') is None
  assert d.tokenizer.token_to_id('w3') is not None and d.tokenizer.token_to_id('kappa')
  info = d.split_info
  assert info['sources'] == ['ncbi_disease', 'jnlpba']
  assert info['tokens']['jnlpba'] == 9  # 'IL', '-', '2', 'gene', 'expression'; 'NF', '-', ...
  assert sum(d.sizes.values()) == sum(info['rows'].values())
  ids = np.concatenate([x for x, _ in d.splits.values()])
  assert (ids > 0).sum() == sum(info['tokens'].values())  # every token kept once
  for inputs, labels in d.splits.values():
    assert inputs.dtype == np.int32 and inputs.shape[1:] == (8,) and inputs.max() < vocab
    np.testing.assert_array_equal(inputs, labels)
  assert len(d.splits['validation'][0]) == len(d.splits['test'][0]) >= 1
  again = corpus.load(str(data_dir), TEXT, validation_fraction=0.1, seed=0)
  np.testing.assert_array_equal(again.splits['test'][0], d.splits['test'][0])


def test_real_corpus():
  if not os.path.isdir(os.path.join(REAL, 'ner', 'NCBI-disease-IOB')):
    pytest.skip('real data not found')
  texts = corpus.texts(REAL, sources=['ncbi_disease', 'medical_abstracts'])
  assert len(texts['ncbi_disease']) == 5424 + 923
  assert len(texts['medical_abstracts']) == 2021  # the train split of the abstracts
