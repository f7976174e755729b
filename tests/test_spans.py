"""jmed.text.spans: hand-worked entity scores and agreement with seqeval."""

import warnings

import numpy as np
import pytest

from jmed.text import spans


def test_entities_iob2_and_iobes():
  assert spans.entities(['B-D', 'I-D', 'O', 'B-G', 'B-G', 'I-G']) == {
      ('D', 0, 2), ('G', 3, 4), ('G', 4, 6)}
  # I-X after O or after another type starts an entity (conlleval).
  assert spans.entities(['O', 'I-D', 'I-G', 'I-G']) == {('D', 1, 2), ('G', 2, 4)}
  assert spans.entities(['S-D', 'B-G', 'I-G', 'E-G', 'E-G', 'O']) == {
      ('D', 0, 1), ('G', 1, 4), ('G', 4, 5)}
  assert spans.entities([]) == set() and spans.entities(['O']) == set()
  assert spans.entities(['B-Gene-or-protein']) == {('Gene-or-protein', 0, 1)}
  with pytest.raises(ValueError, match='token 2'):
    spans.entities(['O', 'X-D'])


def test_hand_worked_scores():
  true = [['B-D', 'I-D', 'O', 'B-G'], ['O', 'B-D', 'O']]
  pred = [['B-D', 'I-D', 'O', 'O'], ['O', 'B-D', 'I-D']]
  # true: D(0,2), G(3,4), D(1,2); pred: D(0,2), D(1,3) -> 1 correct of 2 predicted, 3 actual.
  scores = spans.entity_scores(true, pred)
  assert scores['precision'] == pytest.approx(1 / 2)
  assert scores['recall'] == pytest.approx(1 / 3)
  assert scores['f1'] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
  assert scores['per_type']['D'] == pytest.approx(
      {'precision': 0.5, 'recall': 0.5, 'f1': 0.5, 'support': 2})
  assert scores['per_type']['G'] == {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 1}
  perfect = spans.entity_scores(true, true)
  assert perfect['f1'] == 1.0
  empty = spans.entity_scores([['O']], [['O']])
  assert empty == {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'per_type': {}}


def test_length_mismatch_names_sentence():
  with pytest.raises(ValueError, match='sentence 2'):
    spans.entity_scores([['O'], ['O', 'O']], [['O'], ['O']])
  with pytest.raises(ValueError, match='2 true sentences but 1'):
    spans.entity_scores([['O'], ['O']], [['O']])


@pytest.mark.parametrize('scheme', ['BIO', 'BIOES'])
def test_matches_seqeval(scheme):
  metrics = pytest.importorskip('seqeval.metrics')
  from seqeval.metrics.sequence_labeling import precision_recall_fscore_support
  rng = np.random.default_rng(len(scheme))
  names = ['O'] + [f'{p}-{t}' for p in scheme if p != 'O' for t in ('Disease', 'Gene')]

  def corpus():
    return [list(rng.choice(names, rng.integers(0, 12))) for _ in range(40)]

  for _ in range(5):
    true, pred = corpus(), corpus()
    pred = [p[:len(t)] + list(rng.choice(names, max(0, len(t) - len(p)))) for t, p in
            zip(true, pred)]
    got = spans.entity_scores(true, pred)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      assert got['precision'] == pytest.approx(metrics.precision_score(true, pred))
      assert got['recall'] == pytest.approx(metrics.recall_score(true, pred))
      assert got['f1'] == pytest.approx(metrics.f1_score(true, pred))
      p, r, f, s = precision_recall_fscore_support(true, pred, average=None)
    per_type = got['per_type']
    assert sorted(per_type) == ['Disease', 'Gene']
    np.testing.assert_allclose([per_type[k]['precision'] for k in sorted(per_type)], p)
    np.testing.assert_allclose([per_type[k]['recall'] for k in sorted(per_type)], r)
    np.testing.assert_allclose([per_type[k]['f1'] for k in sorted(per_type)], f)
    np.testing.assert_array_equal([per_type[k]['support'] for k in sorted(per_type)], s)
