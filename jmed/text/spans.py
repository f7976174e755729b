"""Entity spans from IOB2 / IOBES tag sequences, and entity-level precision, recall and F1.

Spans follow conlleval (the semantics of `seqeval`'s default, non-strict mode), so scores are
comparable with published NER results:

  entities(['B-Disease', 'I-Disease', 'O', 'S-Gene'])
  # {('Disease', 0, 2), ('Gene', 3, 4)}             (type, start, end exclusive)

A chunk starts at B-X or S-X, at I-X / E-X after O, E-*, S-* or a tag of another type, and ends
before O, B-*, S-*, a tag of another type, or after E-X / S-X. So an I-X with no B-X before it
starts an entity (lenient decoding of ill-formed predictions). An entity is correct only if its
type, start and end all match a true entity exactly.
"""

import collections
from typing import Dict, Sequence, Set, Tuple

PREFIXES = ('B', 'I', 'E', 'S')

Span = Tuple[str, int, int]


def _split(tag: str, where: str) -> Tuple[str, str]:
  """('O', '') for 'O', else (prefix, type) of 'P-TYPE'; ValueError naming `where` otherwise."""
  if tag == 'O':
    return 'O', ''
  if len(tag) > 2 and tag[0] in PREFIXES and tag[1] == '-':
    return tag[0], tag[2:]
  raise ValueError(f'{where}: tag {tag!r} is neither \'O\' nor one of '
                   f'{"/".join(p + "-TYPE" for p in PREFIXES)}.')


def _ends(prev: str, prev_type: str, tag: str, type_: str) -> bool:
  """Whether the chunk open at the previous token ends before this one."""
  if prev == 'O':
    return False
  return prev in 'ES' or tag in 'BSO' or prev_type != type_


def _starts(prev: str, prev_type: str, tag: str, type_: str) -> bool:
  """Whether a chunk starts at this token."""
  if tag == 'O':
    return False
  return tag in 'BS' or prev in 'OES' or prev_type != type_


def entities(tags: Sequence[str], where: str = 'tags') -> Set[Span]:
  """The entities of one sentence's tags [length] as {(type, start, end_exclusive)}.

  `where` names the sequence in the ValueError raised for a malformed tag.
  """
  spans = set()
  prev, prev_type, begin = 'O', '', 0
  for i, tag in enumerate(list(tags) + ['O']):
    cur, type_ = _split(tag, f'{where}, token {i + 1}') if i < len(tags) else ('O', '')
    if _ends(prev, prev_type, cur, type_):
      spans.add((prev_type, begin, i))
    if _starts(prev, prev_type, cur, type_):
      begin = i
    prev, prev_type = cur, type_
  return spans


def _prf(correct: int, predicted: int, actual: int) -> Dict[str, float]:
  """Precision, recall and F1 (each 0 where undefined, as seqeval does)."""
  precision = correct / predicted if predicted else 0.0
  recall = correct / actual if actual else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {'precision': precision, 'recall': recall, 'f1': f1}


def entity_scores(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Dict:
  """Entity-level scores of predicted tag sequences against true ones (one per sentence).

  Args:
    true: [sentences][length] gold tag names.
    pred: [sentences][length] predicted tag names, each the same length as its gold sentence.

  Returns:
    {'precision', 'recall', 'f1': micro-averaged over all entities (exact type and span match),
     'per_type': {type: {'precision', 'recall', 'f1', 'support' (number of true entities)}}}
    for every type found in `true` or `pred`, sorted by type.

  Raises:
    ValueError: different numbers of sentences, a sentence whose lengths differ, or a bad tag.
  """
  if len(true) != len(pred):
    raise ValueError(f'entity_scores: {len(true)} true sentences but {len(pred)} predicted.')
  counts = collections.defaultdict(lambda: [0, 0, 0])  # type -> [correct, predicted, actual]
  for n, (t, p) in enumerate(zip(true, pred)):
    if len(t) != len(p):
      raise ValueError(f'entity_scores: sentence {n + 1} has {len(t)} true tags but {len(p)} '
                       'predicted.')
    gold = entities(t, f'true sentence {n + 1}')
    guess = entities(p, f'predicted sentence {n + 1}')
    for span in gold & guess:
      counts[span[0]][0] += 1
    for span in guess:
      counts[span[0]][1] += 1
    for span in gold:
      counts[span[0]][2] += 1
  total = [sum(c[i] for c in counts.values()) for i in range(3)]
  scores = _prf(*total)
  scores['per_type'] = {k: dict(_prf(*counts[k]), support=counts[k][2]) for k in sorted(counts)}
  return scores
