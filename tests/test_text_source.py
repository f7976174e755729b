"""The 'text' source (jmed.data.text_files.load_user / featurize) on users' text tables.

The Medical Abstracts test file, written as JSON Lines or CSV with other column names and a
split column holding the built-in split, must give the built-in dataset's token ids and labels;
small synthetic tables cover the other tasks and the errors.
"""

import csv
import json

import numpy as np
import pytest

from jmed import data
from jmed.configs import DataConfig, TextConfig, TrainConfig
from jmed.data import medical_abstracts, text_files, user

TEXT = TextConfig(vocab_size=2000, max_length=64)  # small: fast
SPLITS = ('train', 'validation', 'test')


@pytest.fixture(scope='module')
def corpus(data_dir):
  """(texts, labels 1..5 as in the file, split of each row as the built-in loader splits)."""
  with open(data_dir / 'medical_abstracts' / medical_abstracts.TEST_FILE, newline='',
            encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  labels = np.array([int(r['condition_label']) for r in rows])
  part = np.empty(len(rows), object)
  for split, index in medical_abstracts.split_indices(labels - 1).items():
    part[index] = split
  return [r['medical_abstract'] for r in rows], labels, part


@pytest.fixture(scope='module')
def builtin(data_dir, tmp_path_factory):
  return data.load_dataset('medical_abstracts', data_dir=str(data_dir),
                           tfds_dir=str(tmp_path_factory.mktemp('tfds')), text=TEXT)


@pytest.fixture(scope='module')
def abstracts(corpus, tmp_path_factory):
  """The corpus as JSON Lines: 'abstract', 'diagnosis' (1..5), 'part' (the built-in split)."""
  texts, labels, part = corpus
  path = tmp_path_factory.mktemp('user') / 'abstracts.jsonl'
  with open(path, 'w', encoding='utf-8') as f:
    for text, label, split in zip(texts, labels, part):
      f.write(json.dumps({'abstract': text, 'diagnosis': int(label), 'part': split}) + '\n')
  return path


def _write_csv(path, header, rows):
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return path


def _config(path, **fields):
  return DataConfig(path=str(path), **fields)


def test_jsonl_with_other_names_is_the_builtin_dataset(abstracts, builtin):
  dataset = text_files.load_user(
      _config(abstracts, text_column='abstract', label_column='diagnosis', split_column='part'),
      text=TEXT)
  assert dataset.name == 'abstracts' and dataset.task == builtin.task == 'multiclass'
  assert dataset.num_classes == 5 and dataset.input_shape == (64,)
  assert dataset.model_kwargs == builtin.model_kwargs
  assert dataset.tokenizer.get_vocab() == builtin.tokenizer.get_vocab()
  assert dataset.split_info['rule'] == 'column' and dataset.split_info['column'] == 'part'
  assert dataset.preprocessing['labels']['classes'] == ['1', '2', '3', '4', '5']
  for split in SPLITS:
    for ours, theirs in zip(dataset.splits[split], builtin.splits[split]):
      assert ours.dtype == theirs.dtype
      np.testing.assert_array_equal(ours, theirs)


def test_csv_with_class_names_and_a_split_column(corpus, builtin, tmp_path):
  """Class names as text (sorted: ids differ from the built-in's, the classes do not); the
  column named 'split' is found without a flag; source 'auto' picks 'text'."""
  texts, labels, part = corpus
  names = np.array(medical_abstracts.CLASS_NAMES)[labels - 1]
  path = _write_csv(tmp_path / 'notes.csv', ['text', 'condition', 'split'],
                    zip(texts, names, part))
  cfg = TrainConfig(text=TEXT, data=_config(path, label_column='condition'))
  assert user.resolve_source(cfg.data) == 'text'
  dataset = user.load(cfg)
  classes = np.array(dataset.preprocessing['labels']['classes'])
  assert list(classes) == sorted(medical_abstracts.CLASS_NAMES)
  for split in SPLITS:
    np.testing.assert_array_equal(dataset.splits[split][0], builtin.splits[split][0])
    np.testing.assert_array_equal(classes[dataset.splits[split][1]],
                                  np.array(medical_abstracts.CLASS_NAMES)[
                                      builtin.splits[split][1]])


def test_featurize_round_trip(abstracts, tmp_path):
  """The test rows alone, in a file of their own: featurize encodes them as training did,
  from run_dir/tokenizer.json; without the label column the labels are None."""
  cfg = TrainConfig(text=TEXT, data=_config(abstracts, text_column='abstract',
                                            label_column='diagnosis', split_column='part'))
  dataset = user.load(cfg)
  dataset.tokenizer.save(str(tmp_path / 'tokenizer.json'))  # as the training loop does
  preprocessing = json.loads(json.dumps(dataset.preprocessing))  # JSON-able, as saved
  assert preprocessing['source'] == 'text' and preprocessing['text_column'] == 'abstract'
  test_rows = [json.loads(line) for line in abstracts.read_text('utf-8').splitlines()]
  test_rows = [r for r in test_rows if r['part'] == 'test']
  test_file = tmp_path / 'test.jsonl'
  test_file.write_text(''.join(json.dumps(r) + '\n' for r in test_rows), 'utf-8')
  rows = user.featurize(str(test_file), cfg, preprocessing, str(tmp_path))
  np.testing.assert_array_equal(rows.inputs, dataset.splits['test'][0])
  np.testing.assert_array_equal(rows.labels, dataset.splits['test'][1])
  assert rows.ids[:2] == ['row 1', 'row 2'] and len(rows.ids) == 578
  unlabelled = tmp_path / 'new.jsonl'
  unlabelled.write_text(''.join(json.dumps({'abstract': r['abstract']}) + '\n'
                                for r in test_rows[:3]), 'utf-8')
  rows = user.featurize(str(unlabelled), cfg, preprocessing, str(tmp_path))
  assert rows.labels is None
  np.testing.assert_array_equal(rows.inputs, dataset.splits['test'][0][:3])


NOTES = ['chest pain and shortness of breath', 'fever with cough', 'severe headache at night',
         'abdominal pain after meals', 'rash on both arms', 'blurred vision and dizziness',
         'persistent dry cough', 'swollen ankles and fatigue', 'nausea and vomiting',
         'joint pain in the knees', 'sore throat and fever', 'back pain when lifting']


def test_binary_and_multilabel_tables(tmp_path):
  rows = [(note, 'yes' if i % 2 else 'no', i % 2, '' if i % 4 == 0 else (i // 2) % 2,
           'train' if i < 8 else 'validation' if i < 10 else 'test')
          for i, note in enumerate(NOTES)]
  path = _write_csv(tmp_path / 'notes.csv', ['note', 'urgent', 'pain', 'fever', 'split'], rows)
  binary = text_files.load_user(_config(path, text_column='note', label_column='urgent'),
                                text=TextConfig(vocab_size=100, min_frequency=1,
                                                max_length=8))
  assert binary.task == 'binary' and binary.preprocessing['labels']['classes'] == ['no', 'yes']
  np.testing.assert_array_equal(binary.splits['train'][1], [0, 1, 0, 1, 0, 1, 0, 1])
  multi = text_files.load_user(_config(path, text_column='note', label_column='pain,fever'),
                               text=TextConfig(vocab_size=100, min_frequency=1, max_length=8))
  assert multi.task == 'multilabel' and multi.num_classes == 2
  labels = np.concatenate([multi.splits[s][1] for s in SPLITS])
  assert labels.shape == (12, 2) and (labels[:, 1] == -1).sum() == 3  # empty: missing


def test_empty_text_and_unseen_class_are_named(tmp_path):
  rows = [(note, i % 3, 'train' if i < 8 else 'validation' if i < 10 else 'test')
          for i, note in enumerate(NOTES)]
  rows[4] = ('  ', 1, 'train')
  path = _write_csv(tmp_path / 'notes.csv', ['note', 'kind', 'split'], rows)
  config = _config(path, text_column='note', label_column='kind')
  with pytest.raises(data.DataError, match=r"notes.csv, row 5, column 'note': the text is empty"):
    text_files.load_user(config, text=TEXT)
  rows[4] = ('a fine note', 1, 'train')
  rows[11] = (NOTES[11], 7, 'test')
  _write_csv(path, ['note', 'kind', 'split'], rows)
  with pytest.raises(data.DataError, match=r"notes.csv, row 12, column 'kind': class '7' is "
                                           'not among the training classes'):
    text_files.load_user(config, text=TEXT)
  with pytest.raises(data.DataError, match=r"no column 'text' \(given by --text-column\)"):
    text_files.load_user(_config(path, label_column='kind'), text=TEXT)
