"""A run's per-epoch logs: metrics.jsonl (one JSON object per epoch) and TensorBoard events.

Both are written by the primary process only; the others get writers that write nothing.
tensorboardX is imported when the first TensorBoard writer is made, not with this module.
"""

import json
import math
import os
from typing import Callable, Dict, List, Optional

# Record keys that are not scalars to plot (or are plotted under their own tag).
_BOOKKEEPING = ('epoch', 'step', 'best_epoch', 'epoch_seconds')


class MetricsLog:
  """Appends one JSON object per line to `path` (flushed at once: nothing lost on a crash).

  On resume (`resumed_step` not None) records past the restored step are dropped first: an
  epoch logged just before an interruption, whose checkpoint was not saved, is run and logged
  again. With `path` None (processes other than 0 of a multi-host run) nothing is written.
  """

  def __init__(self, path: Optional[str], resumed_step: Optional[int] = None):
    self._file = None
    if path is None:
      return
    kept = []
    if resumed_step is not None and os.path.exists(path):
      with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)['step'] <= resumed_step]
    self._file = open(path, 'w')
    self._file.writelines(kept)
    self._file.flush()

  def write(self, record: dict) -> None:
    if self._file:
      self._file.write(json.dumps(record) + '\n')
      self._file.flush()

  def close(self) -> None:
    if self._file:
      self._file.close()


def read_records(path: str) -> List[dict]:
  """The records of a metrics.jsonl file, in order ([] if it does not exist)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def scalars(record: dict, learning_rate: Optional[float] = None) -> Dict[str, float]:
  """TensorBoard tag -> value of one epoch's metrics-log record.

  'train/<metric>' for the training loss and each train_* mean, 'val/<metric>' for every
  scalar validation metric (per-class or per-label lists are left out), 'learning_rate',
  'images_per_sec' (examples/s of the epoch) and 'privacy/epsilon' under DP-SGD. An
  ensemble's per-member train values become 'train/<metric>/member_<m>'.
  """
  out = {}
  for key, value in record.items():
    if key in _BOOKKEEPING:
      continue
    if key.startswith('train_'):
      tag = 'train/' + key[len('train_'):]
    elif key.startswith('val_'):
      tag = 'val/' + key[len('val_'):]
    elif key == 'epsilon':
      tag = 'privacy/epsilon'
    else:
      tag = key
    if isinstance(value, list) and key.startswith('train_'):  # ensemble: one per member
      out.update({f'{tag}/member_{m}': v for m, v in enumerate(value) if _is_number(v)})
    elif _is_number(value):
      out[tag] = float(value)
  if learning_rate is not None:
    out['learning_rate'] = float(learning_rate)
  return out


def _is_number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


class TensorBoardLog:
  """Writes each epoch's record as TensorBoard scalars (see `scalars`) at its global step.

  Args:
    logdir: the event files' folder (<output_dir>/tensorboard), or None to write nothing.
    learning_rate: the optimizer's schedule, step -> learning rate (`jmed.optim.make_schedule`).
    resumed_step: on resume, the restored step: TensorBoard then hides the events an earlier
      process wrote past it (they are logged again).
  """

  def __init__(self, logdir: Optional[str], learning_rate: Optional[Callable] = None,
               resumed_step: Optional[int] = None):
    self._writer = None
    self._learning_rate = learning_rate
    if logdir is None:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    purge = resumed_step + 1 if resumed_step is not None else None
    self._writer = SummaryWriter(logdir, purge_step=purge)

  def write(self, record: dict) -> None:
    if self._writer is None:
      return
    step = int(record['step'])
    rate = float(self._learning_rate(step)) if self._learning_rate else None
    for tag, value in scalars(record, rate).items():
      self._writer.add_scalar(tag, value, step)
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
