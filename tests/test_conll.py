"""CoNLL files, their tagging rows and the NER datasets (jmed.data.conll)."""

import dataclasses
import os

import numpy as np
import pytest

from jmed.configs import DataConfig, TextConfig
from jmed.data import conll
from jmed.errors import ConfigError, DataError, MissingDataError
from jmed.text import tokenizer as jtokenizer

REAL_NER = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')
TEXT = TextConfig(vocab_size=1000, min_frequency=1, max_length=16)


def write(path, text):
  path.write_text(text, encoding='utf-8')
  return str(path)


def sentences_text(rng, n, types=('Disease',), letters='abcdAB', lengths=(2, 9)):
  """n random tagged sentences (IOB2) of words over few letters, as file text."""
  words = sorted({''.join(rng.choice(list(letters), rng.integers(1, 5))) for _ in range(200)})
  blocks = []
  for _ in range(n):
    lines, inside = [], None
    for _ in range(rng.integers(*lengths)):
      r = rng.random()
      if r < 0.2:
        inside = str(rng.choice(types))
        tag = f'B-{inside}'
      elif r < 0.35 and inside:
        tag = f'I-{inside}'
      else:
        inside, tag = None, 'O'
      lines.append(f'{rng.choice(words)}\t{tag}')
    blocks.append('\n'.join(lines))
  return '\n\n'.join(blocks) + '\n'


@pytest.fixture
def corpus_dir(tmp_path):
  rng = np.random.default_rng(0)
  folder = tmp_path / 'mine'
  folder.mkdir()
  for name, n in (('train.tsv', 30), ('dev.tsv', 6), ('test.tsv', 8)):
    write(folder / name, sentences_text(rng, n))
  return folder


# ---------------------------------------------------------------- read


def test_read_format(tmp_path):
  path = write(tmp_path / 'a.tsv',
               '-DOCSTART-\tO\n\nThe\tO\nBRCA1\tB-GENE\ngene\tI-GENE\r\n\n\n\n'
               'x\tNN\tS-Disease\n.\tO')
  assert conll.read(path) == [(['The', 'BRCA1', 'gene'], ['O', 'B-GENE', 'I-GENE']),
                              (['x', '.'], ['S-Disease', 'O'])]
  assert conll.tag_names(conll.read(path)) == ('O', 'B-GENE', 'I-GENE', 'S-Disease')
  assert conll.tag_names([(['a'], ['B-X'])]) == ('O', 'B-X')


@pytest.mark.parametrize('text, line, what', [
    ('a\tO\nb\tX-Disease\n', 2, "tag 'X-Disease'"),
    ('a\tO\n\nb\tB-\n', 3, "tag 'B-'"),
    ('a\tO\nb O\n', 2, 'expected token<TAB>tag'),
    ('a\tO\n\tO\n', 2, 'empty token'),
])
def test_read_errors_name_file_and_line(tmp_path, text, line, what):
  path = write(tmp_path / 'bad.tsv', text)
  with pytest.raises(DataError, match=f'bad.tsv, line {line}: .*{what}'):
    conll.read(path)


def test_read_missing_empty_and_binary(tmp_path):
  with pytest.raises(MissingDataError, match='nope.tsv'):
    conll.read(str(tmp_path / 'nope.tsv'))
  with pytest.raises(DataError, match='empty.tsv: no sentence'):
    conll.read(write(tmp_path / 'empty.tsv', '\n\n-DOCSTART-\tO\n\n'))
  (tmp_path / 'latin.tsv').write_bytes(b'caf\xe9\tO\n')
  with pytest.raises(DataError, match='latin.tsv: not UTF-8'):
    conll.read(str(tmp_path / 'latin.tsv'))


def test_read_untagged(tmp_path):
  path = write(tmp_path / 'p.tsv', 'a\nb\n\nc\n')
  with pytest.raises(DataError, match='p.tsv, line 1: expected token<TAB>tag'):
    conll.read(path)
  assert conll.read(path, tags=False) == [(['a', 'b'], None), (['c'], None)]
  assert conll.read(write(tmp_path / 't.tsv', 'a\tO\n'), tags=False) == [(['a'], ['O'])]
  with pytest.raises(DataError, match='mixed.tsv: line 2 has a tag but line 1 has none'):
    conll.read(write(tmp_path / 'mixed.tsv', 'a\nb\tO\n'), tags=False)


def test_looks_like(tmp_path, corpus_dir):
  assert conll.looks_like(str(corpus_dir))
  assert conll.looks_like(write(tmp_path / 'x.tsv', 'a\tB-X\n'))
  assert not conll.looks_like(write(tmp_path / 'y.tsv', 'text\tlabel\nhello\t1\n'))
  assert not conll.looks_like(str(tmp_path))


# ---------------------------------------------------------------- ids


def test_word_ids_and_chars():
  sentences = [(['Aspirin', 'and', 'tumour', 'and'], None), (['ASPIRIN', 'é'], None)]
  tok = conll.train_word_tokenizer(sentences, TEXT)
  ids = conll.word_ids(tok, ['aspirin', 'AND', 'unseen', 'Tumour'])
  assert ids.dtype == np.int32
  assert ids[0] == tok.token_to_id('aspirin') and ids[1] == tok.token_to_id('and')
  assert ids[2] == jtokenizer.UNK_ID and ids[3] == tok.token_to_id('tumour')
  chars = conll.char_vocab(sentences)
  assert list(chars.values()) == list(range(2, 2 + len(chars)))
  assert sorted(chars) == list(chars) and 'A' in chars and 'a' in chars  # case kept
  assert conll.char_vocab(sentences, min_count=2).keys() == set('AIadinru')
  assert conll.chars_from_string(conll.chars_string(chars)) == chars


def test_encode_shapes_padding_and_cutting():
  sentences = [(['Ab', 'c'], ['B-X', 'O']), (list('abcdefghij'), ['O'] * 9 + ['B-X']),
               (['z'], ['O'])]
  tok = conll.train_word_tokenizer(sentences, TEXT)
  chars = conll.char_vocab(sentences[:1])  # A, b, c
  tag_ids = {'O': 0, 'B-X': 1}
  inputs, labels, of_row = conll.encode(sentences, tok, chars, tag_ids, 4, 3)
  assert inputs.shape == (5, 4, 4) and inputs.dtype == np.int32
  assert labels.shape == (5, 4) and labels.dtype == np.int32
  np.testing.assert_array_equal(of_row, [0, 1, 1, 1, 2])
  np.testing.assert_array_equal(labels[0], [1, 0, -1, -1])
  np.testing.assert_array_equal(labels[3], [0, 1, -1, -1])  # 'i', 'j'
  np.testing.assert_array_equal(inputs[0, 0], [tok.token_to_id('ab'), chars['A'], chars['b'], 0])
  np.testing.assert_array_equal(inputs[0, 2:], 0)
  np.testing.assert_array_equal(inputs[1, 0, 1:], [1, 0, 0])  # 'a' not in chars: unknown
  assert (inputs[:, :, 0] > 0).sum() == 13
  x0, y0, _ = conll.encode(sentences, tok, chars, None, 16, 0)
  assert x0.shape == (3, 16, 1) and y0 is None
  with pytest.raises(DataError, match=r"sentence 1, token 10 \('j'\): tag 'B-X' is not one"):
    conll.encode(sentences[1:], tok, chars, {'O': 0}, 4, 3)
  assert conll.row_ids(of_row) == ['sentence 1', 'sentence 2', 'sentence 2, part 2',
                                   'sentence 2, part 3', 'sentence 3']


def test_row_length():
  sentences = [(['a'] * 9, None), (['a'], None)]
  assert conll.row_length(sentences, 256) == 16
  assert conll.row_length(sentences, 12) == 12
  assert conll.row_length([(['a'] * 8, None)], 256) == 8


# ---------------------------------------------------------------- datasets


def check_dataset(d, max_chars=conll.MAX_CHARS):
  length = d.input_shape[0]
  assert d.task == 'tagging' and d.input_shape == (length, 1 + max_chars)
  assert d.task_kwargs['tags'][0] == 'O' and d.num_classes == len(d.task_kwargs['tags'])
  assert d.preprocessing['tags'] == list(d.task_kwargs['tags'])
  assert d.model_kwargs['vocab_size'] == jtokenizer.vocab_size(d.tokenizer)
  assert d.model_kwargs['num_chars'] == len(d.preprocessing['chars']) + 2
  for inputs, labels in d.splits.values():
    assert labels.min() >= -1 and labels.max() < d.num_classes
    assert np.all(inputs[..., 1:] < d.model_kwargs['num_chars'])
    np.testing.assert_array_equal(labels == -1, inputs[..., 0] == 0)  # padding agrees


def test_load_user_folder_and_featurize(corpus_dir, tmp_path):
  d = conll.load_user(DataConfig(path=str(corpus_dir), source='conll'), text=TEXT)
  check_dataset(d)
  assert d.name == 'mine' and d.sizes == {'train': 30, 'validation': 6, 'test': 8}
  assert d.input_shape[0] == 8  # longest sentence 8 tokens
  assert d.split_info['files']['validation'].endswith('dev.tsv')
  assert d.task_kwargs['tags'] == ('O', 'B-Disease', 'I-Disease')
  run_dir = tmp_path / 'run'
  jtokenizer.save(d.tokenizer, run_dir / conll.TOKENIZER_FILE)
  rows = conll.featurize(str(corpus_dir / 'test.tsv'), DataConfig(), d.preprocessing,
                         str(run_dir))
  np.testing.assert_array_equal(rows.inputs, d.splits['test'][0])
  np.testing.assert_array_equal(rows.labels, d.splits['test'][1])
  assert rows.ids[:2] == ['sentence 1', 'sentence 2'] and len(rows.ids) == 8
  untagged = write(tmp_path / 'new.tsv', 'aa\nBB\n\nzzz\n')
  rows = conll.featurize(untagged, DataConfig(), d.preprocessing, str(run_dir))
  assert rows.labels is None and rows.inputs.shape == (2, 8, 21)
  np.testing.assert_array_equal(rows.inputs[1, 0, :5], [1, 1, 1, 1, 0])  # unknown word, chars
  bad = write(tmp_path / 'bad.tsv', 'aa\tB-Gene\n')
  with pytest.raises(DataError, match="bad.tsv: sentence 1, token 1 .*'B-Gene'"):
    conll.featurize(bad, DataConfig(), d.preprocessing, str(run_dir))
  with pytest.raises(MissingDataError, match='tokenizer.json'):
    conll.featurize(untagged, DataConfig(), d.preprocessing, str(tmp_path))


def test_load_user_one_file_split(tmp_path):
  path = write(tmp_path / 'all.conll', sentences_text(np.random.default_rng(1), 40))
  data = DataConfig(path=path, source='conll', split_seed=3)
  d = conll.load_user(data, text=TEXT)
  check_dataset(d)
  assert d.name == 'all'
  assert d.sizes == {'train': 32, 'validation': 4, 'test': 4}
  assert d.split_info['rule'] == 'random' and d.split_info['seed'] == 3
  again = conll.load_user(data, text=TEXT)
  np.testing.assert_array_equal(again.splits['test'][0], d.splits['test'][0])
  with pytest.raises(ConfigError, match='stratified'):
    conll.load_user(dataclasses.replace(data, split='stratified'), text=TEXT)
  with pytest.raises(DataError, match='split is empty'):
    conll.load_user(DataConfig(path=write(tmp_path / 'one.tsv', 'a\tO\n')), text=TEXT)


def test_load_builtin_layout_long_sentences_and_tokenizer_path(tmp_path):
  folder = tmp_path / 'ner' / 'NCBI-disease-IOB'
  folder.mkdir(parents=True)
  rng = np.random.default_rng(2)
  for name in ('train.tsv', 'devel.tsv', 'test.tsv'):
    write(folder / name, sentences_text(rng, 10, lengths=(2, 30)))
  d = conll.load('ncbi_disease', str(tmp_path), TEXT, max_chars=0)
  check_dataset(d, max_chars=0)
  assert d.input_shape == (16, 1) and d.split_info['cut_sentences'] > 0
  assert d.sizes['train'] == 10 + sum(len(t) > 16 for t, _ in conll.read(folder / 'train.tsv'))
  path = tmp_path / 'tok.json'
  jtokenizer.save(d.tokenizer, path)
  again = conll.load('ncbi_disease', str(tmp_path), TEXT, max_chars=0, tokenizer_path=str(path))
  np.testing.assert_array_equal(again.splits['test'][0], d.splits['test'][0])
  if hasattr(TEXT, 'char_length'):  # TextConfig's defaults for both
    via_text = conll.load('ncbi_disease', str(tmp_path), dataclasses.replace(
        TEXT, char_length=0, tokenizer_path=str(path), vocab_size=3))
    np.testing.assert_array_equal(via_text.splits['test'][0], d.splits['test'][0])
  with pytest.raises(MissingDataError, match=r'BC2GM-IOB: no train.tsv'):
    conll.load('bc2gm', str(tmp_path), TEXT)
  with pytest.raises(DataError, match='Unknown NER corpus'):
    conll.load('jnlpba', str(tmp_path), TEXT)


def test_tag_missing_from_train_is_an_error(tmp_path):
  folder = tmp_path / 'f'
  folder.mkdir()
  write(folder / 'train.tsv', 'a\tO\nb\tB-X\n')
  write(folder / 'devel.tsv', 'a\tO\n')
  write(folder / 'test.tsv', 'a\tB-Y\n')
  with pytest.raises(DataError, match="f/test: sentence 1, token 1 .*'B-Y'"):
    conll.load_user(DataConfig(path=str(folder)), text=TEXT)


def test_real_ncbi_disease():
  if not os.path.isdir(os.path.join(REAL_NER, 'ner', 'NCBI-disease-IOB')):
    pytest.skip('real NER data not found')
  d = conll.load('ncbi_disease', REAL_NER, TextConfig())
  check_dataset(d)
  assert d.sizes == {'train': 5424, 'validation': 923, 'test': 940}
  assert d.input_shape == (128, 21) and d.task_kwargs['tags'] == ('O', 'B-Disease', 'I-Disease')
  assert (d.splits['train'][1] == 1).sum() == 5134  # B-Disease mentions (data README)


def test_user_conll_refuses_another_task(tmp_path):
  path = write(tmp_path / 'notes.conll', 'Fever\tB-Sign\nstarted\tO\n')
  with pytest.raises(ConfigError, match="task 'binary' does not apply to CoNLL data"):
    conll.load_user(DataConfig(path=path, task='binary'))
