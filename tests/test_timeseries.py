"""Tests of jmed.data.timeseries: JSONL, GRU-D packing, MNIST stand-in."""

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmed.data import mnist
from jmed.data import timeseries as ts
from jmed.errors import DataError, MissingDataError

MNIST_DIR = Path(os.environ.get('JMED_DATA_DIR') or Path(__file__).resolve(
).parents[1].parent / 'shared' / 'data') / 'mnist'
NAN = np.nan

# Che et al. (2018), Fig. 2: times s, one feature's mask and its delta.
PAPER_TIMES = [0.0, 0.1, 0.6, 1.6, 2.2, 2.5, 3.1]
PAPER_MASK = [1, 0, 1, 0, 0, 1, 1]
PAPER_DELTA = [0.0, 0.1, 0.6, 1.0, 1.6, 1.9, 0.6]


@pytest.fixture(scope='module')
def images_labels():
  if not (MNIST_DIR / 't10k-images-idx3-ubyte.gz').is_file():
    pytest.skip(f'real MNIST not found at {MNIST_DIR}; set JMED_DATA_DIR')
  images, labels = mnist.load_offline(MNIST_DIR)['train']
  return images[:500], labels[:500]


def _paper_record():
  """Feature 0: the paper's mask (missing 2 steps in a row at t=3,4);
  feature 1: never observed; feature 2: always observed."""
  t = len(PAPER_TIMES)
  values = np.full((t, 3), NAN)
  values[np.array(PAPER_MASK, bool), 0] = [1.0, 2.0, 3.0, 4.0]
  values[:, 2] = np.arange(t) * 10.0
  return ts.Record(id='paper', times=PAPER_TIMES, values=values, label=1)


def _records():
  return [
      ts.Record('a', [0.0, 1.0, 3.0], [[1.0, NAN], [NAN, 5.0], [3.0, 7.0]], 0),
      ts.Record('b', [2.0, 2.5], [[NAN, NAN], [5.0, 6.0]], 1),
      ts.Record('c', [0.0, 1.0, 2.0, 4.0, 8.0],
                [[0.0, 1.0], [1.0, NAN], [NAN, NAN], [2.0, 3.0], [NAN, 4.0]],
                2),
  ]


def test_delta_matches_hand_computed_example():
  record = _paper_record()
  delta = ts.time_since_observed(record.times, ~np.isnan(record.values))
  np.testing.assert_allclose(delta[:, 0], PAPER_DELTA, atol=1e-12)
  np.testing.assert_allclose(delta[:, 1], PAPER_TIMES, atol=1e-12)  # s_t - s_1.
  np.testing.assert_allclose(delta[:, 2], np.diff(PAPER_TIMES, prepend=0.0),
                             atol=1e-12)
  # The same through pack, in units of time_scale = 0.5.
  inputs, labels = ts.pack([record], 8, np.zeros(3), np.ones(3),
                           time_scale=0.5)
  _, _, observed, packed_delta = ts.unpack(inputs)
  np.testing.assert_allclose(packed_delta[0, :7, 0], np.array(PAPER_DELTA) * 2,
                             atol=1e-6)
  np.testing.assert_array_equal(observed[0, :7, 0], PAPER_MASK)
  assert labels.tolist() == [1] and labels.dtype == np.int32


def test_delta_recursion_on_random_masks():
  rng = np.random.default_rng(0)
  times = np.cumsum(rng.uniform(0.1, 2.0, 40))
  mask = rng.random((40, 5)) < 0.3
  expected = np.zeros((40, 5))
  for t in range(1, 40):
    expected[t] = times[t] - times[t - 1] + np.where(mask[t - 1], 0,
                                                     expected[t - 1])
  np.testing.assert_allclose(ts.time_since_observed(times, mask), expected,
                             atol=1e-9)


def test_pack_unpack_round_trip():
  records = _records()
  mean, std = ts.feature_stats(records)
  inputs, labels = ts.pack(records, 6, mean, std)
  assert inputs.shape == (3, 6, 7) and inputs.dtype == np.float32
  valid, values, observed, delta = ts.unpack(inputs)
  assert valid.shape == (3, 6) and values.shape == observed.shape == (3, 6, 2)
  assert labels.tolist() == [0, 1, 2]
  for i, record in enumerate(records):
    t = record.num_steps
    mask = ~np.isnan(record.values)
    np.testing.assert_array_equal(observed[i, :t], mask)
    restored = np.where(observed[i, :t] > 0, values[i, :t] * std + mean, NAN)
    np.testing.assert_allclose(restored, record.values, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        delta[i, :t], ts.time_since_observed(record.times, mask), rtol=1e-6)


def test_padding_is_zero_and_step_valid_counts_steps():
  records = _records()
  inputs, _ = ts.pack(records, 7, *ts.feature_stats(records))
  valid, _, _, _ = ts.unpack(inputs)
  lengths = [r.num_steps for r in records]
  np.testing.assert_array_equal(valid.sum(1), lengths)
  for i, t in enumerate(lengths):
    assert (valid[i, :t] == 1).all()
    assert not inputs[i, t:].any()


def test_truncation_keeps_last_or_first_steps():
  record = _paper_record()  # 7 steps.
  full, _ = ts.pack([record], 7, np.zeros(3), np.ones(3))
  last, _ = ts.pack([record], 3, np.zeros(3), np.ones(3))
  first, _ = ts.pack([record], 3, np.zeros(3), np.ones(3), truncate='first')
  np.testing.assert_array_equal(last[0], full[0, 4:])
  np.testing.assert_array_equal(first[0], full[0, :3])
  # Deltas come from the whole record: the first kept step of feature 0 was
  # last observed 2 steps before the cut (PAPER_DELTA[4] = 1.6, not 0).
  np.testing.assert_allclose(ts.unpack(last)[3][0, 0, 0], 1.6, rtol=1e-6)
  _, values, _, _ = ts.unpack(last)
  np.testing.assert_array_equal(values[0, :, 2], [40.0, 50.0, 60.0])
  with pytest.raises(ValueError, match='truncate'):
    ts.pack([record], 3, np.zeros(3), np.ones(3), truncate='middle')


def test_standardisation_uses_only_observed_values():
  records = [
      ts.Record('x', [0.0, 1.0, 2.0], [[1.0, NAN, 4.0], [NAN, NAN, 4.0],
                                       [3.0, NAN, 4.0]], 0),
      ts.Record('y', [0.0], [[NAN, NAN, 4.0]], 1),
  ]
  mean, std = ts.feature_stats(records)
  np.testing.assert_allclose(mean, [2.0, 0.0, 4.0])  # NaN rows do not count.
  # Population std of {1, 3} is 1; never observed -> 1; constant -> 1.
  np.testing.assert_allclose(std, [1.0, 1.0, 1.0])
  mean, std = ts.feature_stats(_records())
  observed_0, observed_1 = [1.0, 3.0, 5.0, 0.0, 1.0, 2.0], [5, 7, 6, 1, 3, 4]
  np.testing.assert_allclose(mean, [np.mean(observed_0), np.mean(observed_1)])
  np.testing.assert_allclose(std, [np.std(observed_0), np.std(observed_1)])
  inputs, _ = ts.pack(records, 3, [2.0, 0.0, 4.0], [1.0, 1.0, 1.0])
  _, values, observed, _ = ts.unpack(inputs)
  np.testing.assert_allclose(values[0, :, 0], [-1.0, 0.0, 1.0])
  assert not values[observed == 0].any()  # Unobserved -> 0 (= the mean).


def test_write_read_round_trip_with_nan(tmp_path):
  records = _records()
  records[0] = ts.Record('a', [0.1, 1 / 3, 1e9], records[0].values, -7)
  path = tmp_path / 'series.jsonl'
  ts.write_jsonl(records, path)
  lines = path.read_text().splitlines()
  assert len(lines) == 3 and 'null' in lines[0] and 'NaN' not in lines[0]
  assert json.loads(lines[0])['values'][0] == [1.0, None]
  back = ts.read_jsonl(path)
  assert [r.id for r in back] == [r.id for r in records]
  for a, b in zip(back, records):
    assert a.label == b.label
    np.testing.assert_array_equal(a.times, b.times)  # Bit-exact floats.
    np.testing.assert_array_equal(a.values, b.values)  # NaN == NaN here.
  assert len(ts.read_jsonl(path, num_features=2)) == 3
  paper = tmp_path / 'paper.jsonl'
  ts.write_jsonl([_paper_record()], paper)
  (back,) = ts.read_jsonl(paper)
  np.testing.assert_array_equal(back.values, _paper_record().values)
  with pytest.raises(DataError, match=r'line 1: values\[0\] has 3 features '
                     'but num_features is 2'):
    ts.read_jsonl(paper, num_features=2)


def _line(**overrides):
  obj = {'id': 'p', 'times': [0.0, 1.0], 'values': [[1.0, None], [2.0, 3.0]],
         'label': 0}
  obj.update(overrides)
  for key in [k for k, v in obj.items() if v is KeyError]:
    del obj[key]
  return json.dumps(obj)


@pytest.mark.parametrize('bad, message', [
    ('{"id": "p", "times": [0.0,', 'invalid JSON'),
    ('[1, 2]', 'expected a JSON object'),
    ('{"id": "q", "times": [0.0], "values": [[NaN, 1.0]], "label": 0}',
     'invalid JSON: NaN is not valid JSON'),
    (_line(label=KeyError), 'missing key.s. label'),
    (_line(times=[0.0, 0.0]), 'strictly increasing'),
    (_line(times=[1.0, 0.5]), 'strictly increasing'),
    (_line(values=[[1.0, 2.0], [3.0]]), r'values\[1\] has 1 features'),
    (_line(values=[[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]),
     r'has 3 features but the first record \(line 1\) has 2'),
    (_line(values=[[1.0, 2.0]]), 'one row per time'),
    (_line(values=[[1.0, '2'], [3.0, 4.0]]), 'numbers or null'),
    (_line(label=1.0), 'label must be an integer'),
    (_line(label=True), 'label must be an integer'),
    (_line(label='1'), 'label must be an integer'),
    (_line(times=[], values=[]), 'times must be a non-empty list'),
    (_line(id=3), 'id must be a string'),
    (_line(id='a'), "id 'a' repeats line 1"),
])
def test_read_errors_name_file_and_line(tmp_path, bad, message):
  path = tmp_path / 'bad.jsonl'
  good = _line(id='a')
  path.write_text(f'{good}\n\n{bad}\n')  # The bad record is on line 3.
  with pytest.raises(DataError, match=message) as caught:
    ts.read_jsonl(path)
  assert f'{path}, line 3: ' in str(caught.value)


def test_missing_file_names_path(tmp_path):
  path = tmp_path / 'absent.jsonl'
  with pytest.raises(MissingDataError, match=str(path)):
    ts.read_jsonl(path)
  with pytest.raises(FileNotFoundError):
    ts.read_jsonl(path)


def test_unpack_works_on_jax_arrays():
  inputs, _ = ts.pack(_records(), 5, *ts.feature_stats(_records()))
  parts = ts.unpack(jnp.asarray(inputs))
  assert all(isinstance(p, jax.Array) for p in parts)
  for jax_part, np_part in zip(parts, ts.unpack(inputs)):
    np.testing.assert_array_equal(np.asarray(jax_part), np_part)
  jitted = jax.jit(lambda x: ts.unpack(x)[3].sum())(jnp.asarray(inputs))
  np.testing.assert_allclose(jitted, ts.unpack(inputs)[3].sum(), rtol=1e-6)
  with pytest.raises(ValueError, match='1 \\+ 3F'):
    ts.unpack(np.zeros((2, 3, 6)))


def test_irregular_mnist_on_real_images(images_labels, tmp_path):
  images, labels = images_labels
  records = ts.irregular_mnist(images, labels, seed=0)
  again = ts.irregular_mnist(images, labels, seed=0)
  other = ts.irregular_mnist(images, labels, seed=1)
  assert len(records) == 500
  for a, b in zip(records, again):
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.values, b.values)
  assert any(a.times.shape != b.times.shape or (a.times != b.times).any()
             for a, b in zip(records, other))
  # The first k records do not depend on how many images follow.
  head = ts.irregular_mnist(images[:7], labels[:7], seed=0)
  for a, b in zip(head, records):
    np.testing.assert_array_equal(a.values, b.values)

  kept_rows = observed = 0
  for i, record in enumerate(records):
    assert record.id == f'mnist-{i}' and record.label == labels[i]
    assert record.num_steps >= 2 and record.num_features == 28
    assert (np.diff(record.times) > 0).all()
    rows = record.times.astype(int)
    np.testing.assert_array_equal(rows, record.times)
    assert rows.min() >= 0 and rows.max() <= 27
    seen = ~np.isnan(record.values)
    np.testing.assert_array_equal(
        record.values[seen], images[i, rows, :, 0][seen] / 255.0)
    kept_rows += record.num_steps
    observed += seen.sum()
  assert all(((r.values >= 0) & (r.values <= 1))[~np.isnan(r.values)].all()
             for r in records)
  keep_rate = kept_rows / (500 * 28)
  drop_rate = 1 - observed / (kept_rows * 28)
  assert abs(keep_rate - 0.5) < 0.02, keep_rate
  assert abs(drop_rate - 0.3) < 0.01, drop_rate
  sparse = ts.irregular_mnist(images[:50], labels[:50], seed=0, keep_rows=0.0,
                              drop_pixels=1.0)
  assert all(r.num_steps == 2 and np.isnan(r.values).all() for r in sparse)

  # End to end: JSONL file -> stats on 'train' -> packed GRU-D inputs.
  path = tmp_path / 'mnist.jsonl'
  ts.write_jsonl(records, path)
  back = ts.read_jsonl(path, num_features=28)
  mean, std = ts.feature_stats(back[:400])
  inputs, packed_labels = ts.pack(back[400:], 20, mean, std)
  assert inputs.shape == (100, 20, 85)
  np.testing.assert_array_equal(packed_labels, labels[400:])
  valid = ts.unpack(inputs)[0]
  np.testing.assert_array_equal(
      valid.sum(1), [min(r.num_steps, 20) for r in records[400:]])
