"""Records (jmed.data.records) and streaming (jmed.data.stream): a dataset written to ArrayRecord
shards loads back equal, streams the batches the in-memory pipeline gives (from any batch on,
reading only the rows asked for), refuses bad directories with one error naming the file, and
trains to the very same parameters as the in-memory dataset."""

import dataclasses
import importlib.util
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest

from jmed import data as jdata
from jmed.configs import DataConfig, TrainConfig
from jmed.data import pipeline, records, stream, user
from jmed.errors import ConfigError, DataError, MissingDataError, RunDirError
from jmed.train import loop

from conftest import REPO

SIZES = {'train': 300, 'validation': 100, 'test': 100}


@pytest.fixture(scope='module')
def small(data_dir):
  """The first rows of each PneumoniaMNIST split (float32 pixels k / 255, int32 labels)."""
  dataset = jdata.load_dataset('pneumoniamnist', data_dir=str(data_dir))
  return dataclasses.replace(dataset, splits={
      split: tuple(a[:SIZES[split]] for a in dataset.splits[split]) for split in SIZES})


@pytest.fixture(scope='module')
def written(small, tmp_path_factory):
  """A records directory of `small`, 64 examples per shard (5 train shards)."""
  out = tmp_path_factory.mktemp('records') / 'pneumoniamnist'
  records.write(small, out, examples_per_shard=64, progress=False)
  return out


def _copy(written, tmp_path):
  return shutil.copytree(written, tmp_path / 'copy')


def _dataset_of(inputs, labels, **model_kwargs):
  return jdata.Dataset(name='x', splits={'train': (inputs, labels)}, num_classes=2,
                       task='binary', input_shape=inputs.shape[1:], model_kwargs=model_kwargs)


def test_round_trip_equals_the_dataset(small, written):
  loaded = records.load(written)
  for field in ('name', 'task', 'num_classes', 'input_shape', 'model_kwargs', 'task_kwargs',
                'preprocessing', 'split_info', 'tokenizer'):
    assert getattr(loaded, field) == getattr(small, field), field
  assert loaded.sizes == SIZES
  for split, (inputs, labels) in small.splits.items():
    got, got_labels = loaded.splits[split]
    assert isinstance(got, records.RecordArray) and got.encoding == 'uint8/255'
    assert (got.shape, got.dtype, got.ndim) == (inputs.shape, inputs.dtype, inputs.ndim)
    np.testing.assert_array_equal(np.asarray(got), inputs)  # bit for bit
    np.testing.assert_array_equal(got_labels, labels)
    assert got_labels.dtype == labels.dtype
  spec = json.loads((written / 'spec.json').read_text())
  assert [s['count'] for s in spec['splits']['train']['shards']] == [64] * 4 + [44]


def test_inputs_that_are_not_pixels_are_stored_raw(tmp_path, monkeypatch):
  """Float features and int32 token ids round-trip as raw bytes; float32 pixels whose first
  chunk is k / 255 but whose later rows are not make 'auto' write the split again, raw."""
  rng = np.random.default_rng(0)
  pixels = np.divide(rng.integers(0, 256, (40, 4, 4, 1)), 255, dtype=np.float32)
  pixels[30, 0, 0, 0] = 0.5  # not k / 255: found in a later chunk
  tokens = rng.integers(0, 50, (40, 6)).astype(np.int32)
  labels = (np.arange(40) % 2).astype(np.int32)
  monkeypatch.setattr(records, 'CHUNK_BYTES', 10 * pixels[0].nbytes)  # 10 rows per chunk
  for name, inputs, kwargs in [('pixels', pixels, {}),
                               ('tokens', tokens, {'vocab_size': 50})]:
    records.write(_dataset_of(inputs, labels, **kwargs), tmp_path / name, examples_per_shard=16,
                  progress=False)
    got = records.load(tmp_path / name).splits['train'][0]
    assert got.encoding == 'raw' and got.dtype == inputs.dtype
    np.testing.assert_array_equal(np.asarray(got), inputs)
  with pytest.raises(DataError, match='not all k / 255'):
    records.write(_dataset_of(pixels, labels), tmp_path / 'forced', encoding='uint8/255',
                  progress=False)


def test_indexing_reads_exactly_the_rows_asked_for(small, written):
  inputs = records.load(written).splits['validation'][0]
  expected = small.splits['validation'][0]
  start = inputs.rows_read
  np.testing.assert_array_equal(inputs[7], expected[7])
  np.testing.assert_array_equal(inputs[-1], expected[-1])
  np.testing.assert_array_equal(inputs[3:30:4], expected[3:30:4])
  index = np.array([99, 0, 64, 63, 0])  # across shards, repeated, any order
  np.testing.assert_array_equal(inputs[index], expected[index])
  np.testing.assert_array_equal(inputs[list(index)], expected[index])
  mask = np.arange(100) % 7 == 0
  np.testing.assert_array_equal(inputs[mask], expected[mask])
  assert inputs[np.array([], int)].shape == (0, 28, 28, 1)
  assert inputs.rows_read - start == 1 + 1 + 7 + 5 + 5 + mask.sum()
  with pytest.raises(IndexError):
    inputs[np.array([100])]
  with pytest.raises(IndexError):
    inputs[np.array([[1]])]


@pytest.mark.parametrize('rows', [slice(None), slice(0, 16), slice(16, 32)])
def test_stream_gives_the_batches_of_the_in_memory_pipeline(small, written, rows):
  inputs, labels = records.load(written).splits['train']
  memory = small.splits['train']
  got = list(stream.train_batches(inputs, labels, 32, seed=3, epoch=2, rows=rows,
                                  num_threads=2, prefetch=3))
  want = list(pipeline.train_batches(*memory, 32, seed=3, epoch=2, rows=rows))
  assert len(got) == len(want) == 300 // 32
  for a, b in zip(got, want):
    for key in b:
      assert a[key].dtype == b[key].dtype
      np.testing.assert_array_equal(a[key], b[key])


def test_stream_resumes_at_any_batch(written):
  inputs, labels = records.load(written).splits['train']
  full = list(stream.train_batches(inputs, labels, 32, seed=1, epoch=0))
  for k in (0, 4, 9):
    tail = list(stream.train_batches(inputs, labels, 32, seed=1, epoch=0, start=k))
    assert len(tail) == 9 - k
    for a, b in zip(tail, full[k:]):
      np.testing.assert_array_equal(a['inputs'], b['inputs'])
  middle = list(stream.train_batches(inputs, labels, 32, seed=1, epoch=0, start=2, stop=5))
  assert [m['labels'].tolist() for m in middle] == [b['labels'].tolist() for b in full[2:5]]
  with pytest.raises(ValueError, match='start'):
    stream.train_batches(inputs, labels, 32, seed=1, epoch=0, start=10)
  # The in-memory pipeline starts at a batch too, reading none before it.
  counted = records.load(written).splits['train'][0]
  before = counted.rows_read  # loading validates a sample
  memory = list(pipeline.train_batches(counted, labels, 32, seed=1, epoch=0, start=4))
  assert counted.rows_read - before == 5 * 32 and len(memory) == 5
  for a, b in zip(memory, full[4:]):
    np.testing.assert_array_equal(a['inputs'], b['inputs'])
  with pytest.raises(ValueError, match='start'):
    pipeline.train_batches(inputs, labels, 32, seed=1, epoch=0, start=-1)


def test_a_process_reads_only_its_rows_of_each_batch(written):
  inputs, labels = records.load(written).splits['train']
  start = inputs.rows_read
  batches = list(stream.train_batches(inputs, labels, 32, seed=0, epoch=0, rows=slice(0, 16)))
  assert [len(b['inputs']) for b in batches] == [16] * 9
  assert inputs.rows_read - start == 16 * 9  # not 32 per batch, not the 300 of the split
  start = inputs.rows_read
  list(stream.train_batches(inputs, labels, 32, seed=0, epoch=0, rows=slice(16, 32), start=3,
                            stop=5))
  assert inputs.rows_read - start == 16 * 2  # nothing before `start`, nothing read ahead of `stop`


def _truncate(path):
  shard = path / 'train-00001-of-00005.array_record'
  shard.write_bytes(shard.read_bytes()[:shard.stat().st_size // 2])
  return shard


def _corrupt(path):
  shard = path / 'validation-00000-of-00002.array_record'
  raw = bytearray(shard.read_bytes())
  raw[len(raw) // 3:len(raw) // 3 + 64] = bytes(64)
  shard.write_bytes(bytes(raw))
  return shard


def _drop_spec(path):
  (path / 'spec.json').unlink()
  return path / 'spec.json'


def _bad_json(path):
  (path / 'spec.json').write_text('{"format": ')
  return path / 'spec.json'


def _wrong_shape(path):
  spec = json.loads((path / 'spec.json').read_text())
  spec['input_shape'] = [28, 28, 3]
  (path / 'spec.json').write_text(json.dumps(spec))
  return path / 'train-00000-of-00005.array_record'  # the first shard checked


def _drop_shard(path):
  shard = path / 'test-00001-of-00002.array_record'
  shard.unlink()
  return shard


def _drop_labels(path):
  (path / 'validation_labels.npy').unlink()
  return path / 'validation_labels.npy'


@pytest.mark.parametrize('damage, error', [
    (_drop_spec, MissingDataError), (_bad_json, DataError), (_truncate, DataError),
    (_corrupt, DataError), (_wrong_shape, DataError), (_drop_shard, MissingDataError),
    (_drop_labels, MissingDataError)])
def test_a_damaged_directory_is_one_error_naming_the_file(written, tmp_path, damage, error):
  path = _copy(written, tmp_path)
  culprit = damage(path)
  with pytest.raises(error, match=re.escape(str(culprit))):
    records.load(path)


def test_a_wrong_directory_is_one_error_naming_it(written, tmp_path):
  with pytest.raises(MissingDataError, match=re.escape(str(tmp_path / 'none'))):
    records.load(tmp_path / 'none')
  (tmp_path / 'file').write_text('x')
  with pytest.raises(DataError, match=re.escape(f'{tmp_path / "file"}: not a directory')):
    records.load(tmp_path / 'file')
  with pytest.raises(MissingDataError, match='not a records directory'):
    records.load(tmp_path)  # a directory without spec.json
  with pytest.raises(RunDirError, match='not empty'):
    records.write(records.load(written), written, progress=False)


def test_data_flag_finds_records_and_refuses_flags_that_do_not_apply(written):
  data = DataConfig(path=str(written))
  assert user.resolve_source(data) == 'records'
  cfg = TrainConfig(data=data)
  assert isinstance(loop.load_dataset(cfg).splits['train'][0], records.RecordArray)
  with pytest.raises(ConfigError, match='data.label_column'):
    loop.load_dataset(dataclasses.replace(cfg, data=dataclasses.replace(data, label_column='y')))


def test_export_script_writes_records_or_one_error_line(data_dir, tmp_path, capsys):
  spec = importlib.util.spec_from_file_location('export_script',
                                                REPO / 'scripts' / 'export_records.py')
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  out = tmp_path / 'out'
  assert script.main(['--dataset', 'breastmnist', '--data-dir', str(data_dir), '--out', str(out),
                      '--no-progress']) == 1  # not in the shared data: one line
  assert 'error: ' in capsys.readouterr().err and not os.path.exists(out / 'spec.json')
  assert script.main(['--dataset', 'pneumoniamnist', '--data-dir', str(data_dir), '--out',
                      str(out), '--examples-per-shard', '2000', '--no-progress']) == 0
  printed = capsys.readouterr().out
  assert 'train: 4708 examples in 3 shard(s), uint8/255' in printed
  assert records.load(out).sizes == {'train': 4708, 'validation': 524, 'test': 624}


def test_fit_on_records_equals_fit_in_memory(small, written, tmp_path):
  """2 epochs of the seed CNN with dropout and augmentation: in memory at once, and on records
  stopped mid-epoch (step 12 of 18) and resumed; the same parameters and metrics, bit for bit."""
  cfg = TrainConfig(model='seed_cnn', epochs=2, batch_size=32, eval_batch_size=100,
                    steps_per_dispatch=2, dropout_rate=0.2, augment='chest_xray',
                    progress=False, output_dir=str(tmp_path / 'memory'))
  memory_state, memory = loop.train_and_evaluate(cfg, small)
  streamed = records.load(written)
  cfg = dataclasses.replace(cfg, output_dir=str(tmp_path / 'records'))
  loop.train_and_evaluate(dataclasses.replace(cfg, max_steps=12), streamed)
  state, summary = loop.train_and_evaluate(dataclasses.replace(cfg, resume=True), streamed)
  assert summary['steps'] == memory['steps'] == 18
  for a, b in zip(jax.tree.leaves(memory_state.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for key in ('test_loss', 'test_auroc', 'last_test_loss'):
    assert summary[key] == memory[key], key
  logs = [[json.loads(line) for line in (tmp_path / run / 'metrics.jsonl').read_text().splitlines()]
          for run in ('memory', 'records')]
  assert [r['step'] for r in logs[1]] == [9, 12, 18]  # epoch 1 in two parts
  assert logs[1][0]['train_loss'] == logs[0][0]['train_loss']
  assert logs[1][-1]['val_auroc'] == logs[0][-1]['val_auroc']
