"""Linear-chain conditional random field (Lafferty et al., 2001) for sequence tagging.

A path y_1..y_n of tags over a sentence of n real tokens scores

  score(y) = start[y_1] + sum_t emissions[t, y_t] + sum_{t>1} transitions[y_{t-1}, y_t]
             + end[y_n]

and p(y | x) = exp(score(y)) / Z with log Z = `log_partition` (forward algorithm). Training
maximizes `log_likelihood`; decoding takes the best path with `viterbi`.

All functions are pure, batched and jit-able. Sentences are right-padded: `mask [batch, length]`
is true on the real tokens, which come first (a prefix of each row); emissions and tags at padded
positions never change a result, and an all-padding row scores 0. Computation is in float32
whatever the emissions' dtype (bf16 logits included).

Constrained decoding: `constraints(tag_names)` gives -1e4 penalties for transitions that the
IOB2 / IOBES scheme forbids (I-X after O, a sentence starting with I-X, ...); pass `CRF(tags=...)`
to add them to the learned scores.
"""

from typing import Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PENALTY = -1e4


def _prepare(emissions, mask, transitions, start, end):
  """float32 copies of the scores and a bool mask."""
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return f32(emissions), jnp.asarray(mask, bool), f32(transitions), f32(start), f32(end)


def sequence_score(emissions, tags, mask, transitions, start, end):
  """Score of the given tag paths.

  Args:
    emissions: [batch, length, tags] per-token tag scores.
    tags: int [batch, length] tag ids (anything, e.g. -1, at padded positions).
    mask: bool [batch, length], true on the real tokens (a prefix of each row).
    transitions: [tags, tags]; transitions[i, j] scores tag i followed by tag j.
    start: [tags] score of the first tag; end: [tags] score of the last real tag.

  Returns:
    float32 [batch]: score(tags) (0 for an all-padding row).
  """
  emissions, mask, transitions, start, end = _prepare(emissions, mask, transitions, start, end)
  num_tags = emissions.shape[-1]
  tags = jnp.clip(jnp.asarray(tags, jnp.int32), 0, num_tags - 1)
  maskf = mask.astype(jnp.float32)
  emitted = jnp.take_along_axis(emissions, tags[..., None], -1)[..., 0]  # [b, L]
  score = (emitted * maskf).sum(1)
  score += start[tags[:, 0]] * maskf[:, 0]
  moved = transitions[tags[:, :-1], tags[:, 1:]]  # [b, L - 1]
  score += (moved * maskf[:, 1:]).sum(1)
  last = jnp.maximum(mask.sum(1) - 1, 0)
  last_tags = jnp.take_along_axis(tags, last[:, None], 1)[:, 0]
  return score + end[last_tags] * maskf[:, 0]


def _forward(emissions, mask, transitions, start, reduce, backpointers=False):
  """alpha [batch, tags] after the last real token: `reduce` (logsumexp or max) over the paths
  ending in each tag; and, if `backpointers`, int32 [length - 1, batch, tags], the best previous
  tag of each tag at steps 1..length-1 (else None)."""
  alpha = start[None] + emissions[:, 0]

  def step(alpha, inputs):
    emitted, real = inputs  # [b, T], [b]
    scores = alpha[:, :, None] + transitions[None]  # [b, from, to]
    new = reduce(scores, axis=1) + emitted
    best = jnp.argmax(scores, 1).astype(jnp.int32) if backpointers else None
    return jnp.where(real[:, None], new, alpha), best

  xs = (jnp.swapaxes(emissions[:, 1:], 0, 1), jnp.swapaxes(mask[:, 1:], 0, 1))
  return jax.lax.scan(step, alpha, xs)


def log_partition(emissions, mask, transitions, start, end):
  """log Z: logsumexp of the scores of all tag paths (forward algorithm, in log space).

  Args: as `sequence_score`, without tags.

  Returns:
    float32 [batch] (0 for an all-padding row).
  """
  emissions, mask, transitions, start, end = _prepare(emissions, mask, transitions, start, end)
  alpha, _ = _forward(emissions, mask, transitions, start, jax.nn.logsumexp)
  return jnp.where(mask[:, 0], jax.nn.logsumexp(alpha + end[None], 1), 0.0)


def log_likelihood(emissions, tags, mask, transitions, start, end):
  """log p(tags | emissions) = sequence_score - log_partition, float32 [batch] (<= 0)."""
  return (sequence_score(emissions, tags, mask, transitions, start, end)
          - log_partition(emissions, mask, transitions, start, end))


def viterbi(emissions, mask, transitions, start, end):
  """The highest-scoring tag path of each row.

  Args: as `sequence_score`, without tags.

  Returns:
    (tags int32 [batch, length] with -1 at padded positions, score float32 [batch] of that path,
    0 for an all-padding row).
  """
  emissions, mask, transitions, start, end = _prepare(emissions, mask, transitions, start, end)
  alpha, backpointers = _forward(emissions, mask, transitions, start, jnp.max, True)
  final = alpha + end[None]
  best_last = jnp.argmax(final, 1).astype(jnp.int32)

  def back(tag, inputs):
    """tag: the best tag at step t (at a padded step: the best last real tag)."""
    pointers, real = inputs  # [b, T], [b]
    previous = jnp.take_along_axis(pointers, tag[:, None], 1)[:, 0]
    return jnp.where(real, previous, tag), tag

  xs = (backpointers, jnp.swapaxes(mask[:, 1:], 0, 1))
  first, later = jax.lax.scan(back, best_last, xs, reverse=True)  # later: steps 1..L-1
  tags = jnp.concatenate([first[:, None], jnp.swapaxes(later, 0, 1)], 1)
  tags = jnp.where(mask, tags, -1)
  score = jnp.where(mask[:, 0], final.max(1), 0.0)
  return tags, score


def _parse(tag: str) -> Tuple[str, str]:
  """(prefix, type) of 'P-TYPE', ('O', '') for 'O'."""
  if tag == 'O':
    return 'O', ''
  if len(tag) > 2 and tag[0] in 'BIES' and tag[1] == '-':
    return tag[0], tag[2:]
  raise ValueError(f'tag {tag!r} is neither \'O\' nor B-/I-/E-/S-TYPE.')


def allowed_transitions(tags: Sequence[str]) -> np.ndarray:
  """bool [T, T]: whether tag i may be followed by tag j under the tags' scheme.

  IOB2 (no E-/S- tag): I-X only after B-X or I-X. IOBES (some E- or S- tag): I-X and E-X only
  after B-X or I-X; after B-X or I-X only I-X or E-X; O, B-* and S-* only after O, E-* or S-*.
  """
  parsed = [_parse(t) for t in tags]
  iobes = any(p in 'ES' for p, _ in parsed)
  allowed = np.ones((len(tags), len(tags)), bool)
  for i, (p, x) in enumerate(parsed):
    for j, (q, y) in enumerate(parsed):
      inside = p in 'BI'  # an entity of type x continues after tag i
      if q in 'IE':
        allowed[i, j] = inside and x == y
      elif iobes:
        allowed[i, j] = not inside
  return allowed


def allowed_starts(tags: Sequence[str]) -> np.ndarray:
  """bool [T]: tags a sentence may start with (not I-X, nor E-X)."""
  return np.array([_parse(t)[0] not in 'IE' for t in tags])


def allowed_ends(tags: Sequence[str]) -> np.ndarray:
  """bool [T]: tags a sentence may end with (IOBES: not B-X nor I-X; IOB2: any)."""
  parsed = [_parse(t)[0] for t in tags]
  iobes = any(p in 'ES' for p in parsed)
  return np.array([not (iobes and p in 'BI') for p in parsed])


def constraints(tags: Sequence[str], penalty: float = PENALTY) -> Dict[str, np.ndarray]:
  """Scores to add to a CRF's parameters so that decoding keeps to the tag scheme:
  {'transitions' [T, T], 'start' [T], 'end' [T]}, float32, 0 where allowed, `penalty` elsewhere."""
  to_scores = lambda ok: np.where(ok, 0.0, penalty).astype(np.float32)
  return {'transitions': to_scores(allowed_transitions(tags)),
          'start': to_scores(allowed_starts(tags)), 'end': to_scores(allowed_ends(tags))}


class CRF(nn.Module):
  """The learned scores of a linear-chain CRF.

  Attributes:
    num_tags: T.
    tags: optional tag names (len T); if given, transitions the IOB2 / IOBES scheme forbids get
      a fixed -1e4 penalty (`constraints`) on top of the learned scores.
    init_scale: std of the normal initializer (0: zeros).
  """

  num_tags: int
  tags: Optional[Tuple[str, ...]] = None
  init_scale: float = 0.0

  @nn.compact
  def __call__(self) -> Dict[str, jnp.ndarray]:
    """-> {'transitions': float32 [T, T], 'start': [T], 'end': [T]}, to pass to the functions
    above as `**scores`."""
    init = (nn.initializers.normal(self.init_scale) if self.init_scale
            else nn.initializers.zeros)
    scores = {'transitions': self.param('transitions', init, (self.num_tags, self.num_tags),
                                        jnp.float32),
              'start': self.param('start', init, (self.num_tags,), jnp.float32),
              'end': self.param('end', init, (self.num_tags,), jnp.float32)}
    if self.tags is not None:
      if len(self.tags) != self.num_tags:
        raise ValueError(f'CRF: {len(self.tags)} tag names for num_tags={self.num_tags}.')
      penalties = constraints(self.tags)
      scores = {k: v + jnp.asarray(penalties[k]) for k, v in scores.items()}
    return scores
