"""Tests of jmed.text and jmed.data.medical_abstracts on the real corpus."""

import json
import os
from pathlib import Path
import re

import numpy as np
import pytest

from conftest import run_without_tensorflow
from jmed import text
from jmed.data import medical_abstracts
from jmed.data import medmnist
from jmed.errors import DataError, MissingDataError

DATA_DIR = Path(os.environ.get('JMED_DATA_DIR') or
                Path(__file__).resolve().parents[1].parent / 'shared' / 'data')
MANUAL_DIR = DATA_DIR / 'medical_abstracts'

needs_abstracts = pytest.mark.skipif(
    not (MANUAL_DIR / medical_abstracts.TEST_FILE).is_file(),
    reason=f'{MANUAL_DIR} not found (set JMED_DATA_DIR to the shared data '
    'root).')

CLASS_COUNTS = [633, 299, 385, 610, 961]  # The official test file's.
SEED0_COUNTS = {  # Documented in the module docstring.
    'train': [443, 209, 269, 427, 673],
    'validation': [63, 30, 39, 61, 96],
    'test': [127, 60, 77, 122, 192],
}
UNSEEN = 'cardioneuroblastomatous'  # Not an English word; common letters.


@pytest.fixture(scope='module')
def corpus():
  if not (MANUAL_DIR / medical_abstracts.TEST_FILE).is_file():
    pytest.skip(f'{MANUAL_DIR} not found (set JMED_DATA_DIR)')
  return medical_abstracts.read_csv(MANUAL_DIR)


@pytest.fixture(scope='module')
def abstracts(corpus):
  """200 real abstracts of the training split."""
  texts, labels = corpus
  train = medical_abstracts.split_indices(labels)['train'][:200]
  return [texts[i] for i in train]


@pytest.fixture(scope='module')
def tokenizers_(abstracts):
  return {kind: text.train_tokenizer(abstracts, kind=kind, vocab_size=2000)
          for kind in text.KINDS}


# --- Tokenizers --------------------------------------------------------------


@needs_abstracts
@pytest.mark.parametrize('kind', text.KINDS)
def test_special_tokens_come_first(tokenizers_, kind):
  tok = tokenizers_[kind]
  assert (text.PAD_ID, text.UNK_ID) == (0, 1)
  assert tok.token_to_id(text.PAD) == text.PAD_ID
  assert tok.token_to_id(text.UNK) == text.UNK_ID
  size = text.vocab_size(tok)
  assert 100 < size <= 2000 if kind == 'word' else 100 < size
  assert tok.get_vocab_size() == size


@needs_abstracts
@pytest.mark.parametrize('kind', text.KINDS)
def test_encode_pads_and_truncates(tokenizers_, abstracts, kind):
  tok = tokenizers_[kind]
  ids = text.encode(tok, ['The patient.', abstracts[0], ''], max_length=32)
  assert ids.shape == (3, 32) and ids.dtype == np.int32
  short = tok.encode('The patient.', add_special_tokens=False).ids
  assert len(short) == 3  # 'the', 'patient', '.'
  assert ids[0].tolist() == short + [text.PAD_ID] * 29
  assert (ids[1] != text.PAD_ID).all()  # An abstract is > 32 tokens long.
  assert (ids[2] == text.PAD_ID).all()
  np.testing.assert_array_equal(text.lengths(ids), [3, 32, 0])
  assert text.lengths(ids).dtype == np.int32
  full = text.encode(tok, abstracts[:1], max_length=2048)
  assert 32 < text.lengths(full)[0] < 2048
  np.testing.assert_array_equal(full[0, :32], ids[1])  # Keeps the head.
  assert text.encode(tok, [], max_length=8).shape == (0, 8)
  # The tokenizer itself is left without padding or truncation.
  assert tok.padding is None and tok.truncation is None


@needs_abstracts
def test_unseen_word_is_unk_for_words_but_pieces_for_wordpiece(tokenizers_):
  word, pieces = tokenizers_['word'], tokenizers_['wordpiece']
  assert UNSEEN not in word.get_vocab()
  assert text.encode(word, [UNSEEN], 4)[0].tolist() == [text.UNK_ID, 0, 0, 0]
  encoding = pieces.encode(UNSEEN, add_special_tokens=False)
  assert len(encoding.ids) > 1 and text.UNK_ID not in encoding.ids
  assert all(t.startswith('##') for t in encoding.tokens[1:])
  assert ''.join(t.removeprefix('##') for t in encoding.tokens) == UNSEEN
  assert pieces.decode(encoding.ids) == UNSEEN


@needs_abstracts
def test_normalization_lowercases_and_strips_accents(abstracts):
  tok = text.train_tokenizer(abstracts, kind='word')
  ids = text.encode(tok, ['Patients PATIENTS patients', 'pàtients'], 3)
  assert len(set(ids[0].tolist())) == 1 and ids[0, 0] != text.UNK_ID
  assert ids[1, 0] == ids[0, 0]  # Accents are stripped.
  cased = text.train_tokenizer(abstracts, kind='word', lowercase=False,
                               min_frequency=1)
  ids = text.encode(cased, ['Patients patients'], 2)[0]
  assert ids[0] != ids[1] and text.UNK_ID not in ids


@needs_abstracts
@pytest.mark.parametrize('kind', text.KINDS)
def test_save_load_round_trip(tokenizers_, abstracts, tmp_path, kind):
  tok = tokenizers_[kind]
  path = tmp_path / 'sub' / f'{kind}.json'
  text.save(tok, path)
  loaded = text.load(path)
  batch = abstracts[:20] + [UNSEEN, '']
  np.testing.assert_array_equal(text.encode(loaded, batch, 64),
                                text.encode(tok, batch, 64))
  assert text.vocab_size(loaded) == text.vocab_size(tok)
  assert json.loads(path.read_text())['model']['type'] == (
      'WordLevel' if kind == 'word' else 'WordPiece')


def test_tokenizer_file_errors_name_the_path(tmp_path):
  missing = tmp_path / 'nope.json'
  with pytest.raises(MissingDataError, match=re.escape(str(missing))):
    text.load(missing)
  bad = tmp_path / 'bad.json'
  bad.write_text('{"not": "a tokenizer"')
  with pytest.raises(DataError, match=re.escape(str(bad))):
    text.load(bad)


def test_train_tokenizer_rejects_bad_arguments():
  texts = ['a small text', 'another small text']
  with pytest.raises(ValueError, match='kind'):
    text.train_tokenizer(texts, kind='bpe')
  with pytest.raises(ValueError, match='no texts'):
    text.train_tokenizer([])
  with pytest.raises(ValueError, match='vocab_size'):
    text.train_tokenizer(texts, vocab_size=2)
  with pytest.raises(ValueError, match='single string'):
    text.train_tokenizer('a small text')
  tok = text.train_tokenizer(texts, min_frequency=1)
  with pytest.raises(ValueError, match='max_length'):
    text.encode(tok, texts, 0)


# --- Medical Abstracts -------------------------------------------------------


@needs_abstracts
def test_read_csv(corpus):
  texts, labels = corpus
  assert len(texts) == len(labels) == medical_abstracts.NUM_ROWS == 2_888
  assert labels.dtype == np.int32
  assert np.bincount(labels).tolist() == CLASS_COUNTS
  assert all(isinstance(t, str) and len(t) > 100 for t in texts)
  assert texts[0].startswith('Obstructive sleep apnea following topical')
  assert labels[0] == 2  # condition_label 3, nervous system diseases.
  assert medical_abstracts.read_class_names(MANUAL_DIR) == (
      medical_abstracts.CLASS_NAMES)
  assert len(medical_abstracts.CLASS_NAMES) == 5


@needs_abstracts
def test_split_is_stratified_disjoint_covering_and_seeded(corpus):
  _, labels = corpus
  splits = medical_abstracts.split_indices(labels, seed=0)
  assert list(splits) == ['train', 'validation', 'test']
  assert {k: len(v) for k, v in splits.items()} == medical_abstracts.SIZES
  for name, fraction in zip(splits, medical_abstracts.FRACTIONS):
    index = splits[name]
    assert index.dtype == np.int64 and (np.diff(index) > 0).all()
    counts = np.bincount(labels[index], minlength=5)
    assert np.abs(counts - fraction * np.array(CLASS_COUNTS)).max() <= 1
    assert counts.tolist() == SEED0_COUNTS[name]
  np.testing.assert_array_equal(np.sort(np.concatenate(list(splits.values()))),
                                np.arange(len(labels)))
  again = medical_abstracts.split_indices(labels, seed=0)
  for name in splits:
    np.testing.assert_array_equal(again[name], splits[name])
  other = medical_abstracts.split_indices(labels, seed=1)
  assert {k: len(v) for k, v in other.items()} == medical_abstracts.SIZES
  assert not np.array_equal(other['test'], splits['test'])
  for name in splits:  # Another seed is stratified too.
    counts = np.bincount(labels[other[name]], minlength=5)
    assert np.abs(counts - np.array(SEED0_COUNTS[name])).max() <= 1


def test_split_rejects_bad_fractions():
  labels = np.arange(100) % 2
  with pytest.raises(DataError, match='fractions'):
    medical_abstracts.split_indices(labels, fractions=(0.7, 0.2, 0.2))
  with pytest.raises(DataError, match='fractions'):
    medical_abstracts.split_indices(labels, fractions=(0.9, 0.1))


@needs_abstracts
def test_tfds_builder_equals_offline(tmp_path):
  splits = medical_abstracts.load(data_dir=str(DATA_DIR),
                                  tfds_dir=str(tmp_path))
  offline = medical_abstracts.load_offline(MANUAL_DIR)
  assert list(splits) == list(offline) == ['train', 'validation', 'test']
  for name, (texts, labels) in splits.items():
    assert texts == offline[name][0]
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, offline[name][1])
    assert np.bincount(labels).tolist() == SEED0_COUNTS[name]
  # Built from the local CSV into a folder keyed by its location and content.
  key = medmnist.source_dir(tmp_path, MANUAL_DIR / medical_abstracts.TEST_FILE)
  prepared = Path(key) / 'medical_abstracts' / '1.0.0'
  assert len(list(prepared.glob('*.array_record*'))) == 3
  info = json.loads((prepared / 'features.json').read_text())
  assert 'ClassLabel' in json.dumps(info)
  other = medical_abstracts.load_offline(MANUAL_DIR, seed=1)
  assert other['test'][0] != offline['test'][0]


@needs_abstracts
def test_tfds_builder_builds_and_reads_without_tensorflow(tmp_path):
  """Prepares and reads in a fresh interpreter where TF cannot be imported."""
  report = run_without_tensorflow("""
      from jmed.data import medical_abstracts
      splits = medical_abstracts.load(sys.argv[1], tfds_dir=sys.argv[2])
      print(json.dumps({'sizes': {k: len(v[0]) for k, v in splits.items()},
                        'tf_loaded': 'tensorflow' in sys.modules}))
  """, DATA_DIR, tmp_path)
  assert report == {'sizes': medical_abstracts.SIZES, 'tf_loaded': False}


def test_missing_file_names_path(tmp_path):
  expected = tmp_path / medical_abstracts.TEST_FILE
  with pytest.raises(MissingDataError, match=re.escape(str(expected))):
    medical_abstracts.read_csv(tmp_path)
  expected = tmp_path / 'medical_abstracts' / medical_abstracts.TEST_FILE
  with pytest.raises(MissingDataError, match=re.escape(str(expected))):
    medical_abstracts.load(data_dir=str(tmp_path), tfds_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError):  # MissingDataError is one too.
    medical_abstracts.load_offline(tmp_path)


@pytest.mark.parametrize('rows, message', [
    ('1,"A fine abstract."\n7,"Bad label."\n',
     'row 2 (line 3).*condition_label'),
    ('1,"A fine abstract."\n,"No label."\n',
     'row 2 (line 3).*condition_label'),
    ('2,"A fine abstract."\n3,"  "\n', 'row 2 (line 3).*empty'),
])
def test_bad_rows_name_file_and_row(tmp_path, rows, message):
  path = tmp_path / medical_abstracts.TEST_FILE
  path.write_text('condition_label,medical_abstract\n' + rows)
  with pytest.raises(DataError, match=re.escape(str(path)) + '.*' +
                     message.replace('(', r'\(').replace(')', r'\)')):
    medical_abstracts.read_csv(tmp_path)


def test_bad_header_and_empty_file(tmp_path):
  path = tmp_path / medical_abstracts.TEST_FILE
  path.write_text('label,medical_abstract\n1,"Text."\n')
  with pytest.raises(DataError, match='missing column.*condition_label'):
    medical_abstracts.read_csv(tmp_path)
  path.write_text('condition_label,medical_abstract\n')
  with pytest.raises(DataError, match='no rows'):
    medical_abstracts.read_csv(tmp_path)
  path.write_text('condition_label,medical_abstract\n1,"Fine."\n')
  texts, labels = medical_abstracts.read_csv(tmp_path)
  assert texts == ['Fine.'] and labels.tolist() == [0]


class _FakeDownloads:
  """A DownloadManager without a manual dir whose download is a local file."""

  def __init__(self, path):
    self.path, self.urls = path, []

  @property
  def manual_dir(self):
    raise AssertionError('no manual dir')

  def download(self, url):
    self.urls.append(url)
    return self.path


@needs_abstracts
def test_builder_downloads_without_manual_file(tmp_path):
  builder = medical_abstracts.MedicalAbstracts(data_dir=str(tmp_path),
                                               file_format='array_record')
  downloads = _FakeDownloads(MANUAL_DIR / medical_abstracts.TEST_FILE)
  # pylint: disable=protected-access
  generators = builder._split_generators(downloads)
  assert downloads.urls == [medical_abstracts.URL.format(
      filename=medical_abstracts.TEST_FILE)]
  assert downloads.urls[0].startswith('https://raw.githubusercontent.com/')
  examples = list(generators['validation'])
  offline = medical_abstracts.load_offline(MANUAL_DIR)['validation']
  assert [e['text'] for _, e in examples] == offline[0]
  assert [e['label'] for _, e in examples] == offline[1].tolist()
  # A download that is not the official file is refused.
  tampered = tmp_path / 'tampered.csv'
  tampered.write_text('condition_label,medical_abstract\n1,"Text."\n')
  with pytest.raises(DataError, match='SHA-256'):
    builder._split_generators(_FakeDownloads(tampered))
