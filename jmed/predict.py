"""Scoring a new file with a finished run: its saved preprocessing, its model, its task.

A run trained on the user's own data (`scripts/train.py --data FILE`) keeps in its directory
what turns a new file of the same format into inputs exactly as training did
(preprocessing.json, tokenizer.json), so another file can be scored without the training data:

  result = predict_file('runs/my_run', 'new_patients.csv')
  write_csv(result, 'predictions.csv')   # one row per input row: probabilities, risk, ...
  result.metrics                         # the task's metrics, when the file has labels

What a prediction column holds is the task's (`Task.prediction_table`): 'prob_<class>' and
'predicted' for classification, 'predicted_<target>' for regression (in the targets' units),
'risk' and 'survival_at_<t>' for survival (the latter from the training split's Breslow
baseline hazard, so only when the training file can still be read).
"""

import csv
import dataclasses
import logging
from typing import Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jmed.errors import ConfigError, DataError
from jmed.train import restore

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class Predictions:
  """A scored file.

  Attributes:
    ids: [n] the rows' names (the file's data row, an image's path, ...).
    columns: column name -> [n] values, in predictions.csv's order.
    metrics: the task's metrics on the file's labels, or None when it has none.
  """

  ids: List[str]
  columns: Dict[str, np.ndarray]
  metrics: Optional[dict]


def predict_file(run_dir: str, path: str, which: str = 'best',
                 batch_size: int = 256) -> Predictions:
  """Scores file (or folder) `path` with the run in `run_dir`.

  Args:
    run_dir: a run trained on the user's own data (it has preprocessing.json).
    path: a file of the training file's format (label columns optional).
    which: 'best' (the checkpoint validation picked) or 'latest'.
    batch_size: examples per forward pass.

  Raises:
    ConfigError: the run was trained on a built-in dataset (no saved preprocessing).
    DataError: the file does not fit the run (missing columns, unseen classes, ...), naming
      its file, row and column.
  """
  from jmed.data import user  # pylint: disable=g-import-not-at-top
  restore.read_config(run_dir)  # names config.json when run_dir is no run
  preprocessing = restore.read_preprocessing(run_dir)
  if preprocessing is None:
    raise ConfigError(f'{run_dir} has no preprocessing.json: predictions on new files need a '
                      'run trained on a file of your own (scripts/train.py --data FILE).')
  cfg, model, variables = restore.load_run(run_dir, which)
  task = restore.fitted_task(preprocessing)
  rows = user.featurize(path, cfg, preprocessing, run_dir)
  predictions = predict_inputs(model, variables, task, rows.inputs, batch_size)
  baseline = _baseline(cfg, model, variables, task, batch_size)
  columns = task.prediction_table(predictions, output_names(preprocessing), baseline)
  metrics = None
  if rows.labels is not None:
    metrics = task.evaluate(predictions, rows.labels)
    columns = {**columns, **task.label_table(rows.labels, _class_names(preprocessing))}
  return Predictions(ids=list(rows.ids), columns=columns, metrics=metrics)


def predict_inputs(model, variables, task, inputs, batch_size: int = 256) -> np.ndarray:
  """`task.predict` of `model` on every row of `inputs` [n, ...] (a NumPy or lazy array), in
  batches padded to `batch_size` so that one program serves them all."""
  if batch_size < 1:
    raise ConfigError(f'batch_size must be >= 1, got {batch_size}.')
  forward = jax.jit(lambda v, x: task.predict(model.apply(v, x, train=False)))
  outputs = []
  for start in range(0, len(inputs), batch_size):
    batch = np.asarray(inputs[start:start + batch_size])
    rows = len(batch)
    if rows < batch_size:
      batch = np.concatenate([batch, np.zeros((batch_size - rows, *batch.shape[1:]),
                                              batch.dtype)])
    outputs.append(np.asarray(forward(variables, jnp.asarray(batch)))[:rows])
  if not outputs:
    raise DataError('no rows to predict.')
  return np.concatenate(outputs)


def output_names(preprocessing: dict) -> List[str]:
  """Names of the model's outputs: class names, label columns or target columns."""
  names = _class_names(preprocessing) or (preprocessing.get('labels') or {}).get('columns')
  if names:
    return [str(name) for name in names]
  return [str(i) for i in range(preprocessing['dataset']['num_classes'])]


def _class_names(preprocessing: dict):
  """The training rows' class names (single-label classification), else None."""
  return (preprocessing.get('labels') or {}).get('classes') or preprocessing.get('classes')


def _baseline(cfg, model, variables, task, batch_size: int):
  """`task.baseline` of the training split, for kinds that have one (survival), else None.

  The training file is read again; when it is gone the prediction goes on without it."""
  from jmed import tasks  # pylint: disable=g-import-not-at-top
  if type(task).baseline is tasks.Task.baseline:
    return None
  from jmed.train import loop  # pylint: disable=g-import-not-at-top
  try:
    dataset = loop.load_dataset(cfg)
  except DataError as error:  # MissingDataError included
    _LOG.warning('No survival curves: the training data cannot be read (%s).', error)
    return None
  inputs, labels = dataset.splits['train']
  return task.baseline(predict_inputs(model, variables, task, inputs, batch_size), labels)


def write_csv(predictions: Predictions, path: str) -> None:
  """predictions.csv: 'id', then `predictions.columns`, one line per row."""
  names = list(predictions.columns)
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['id', *names])
    for i, row_id in enumerate(predictions.ids):
      writer.writerow([row_id, *(_cell(predictions.columns[name][i]) for name in names)])


def _cell(value):
  if isinstance(value, (float, np.floating)):
    return f'{float(value):.6g}'
  if isinstance(value, np.integer):
    return int(value)
  return value
