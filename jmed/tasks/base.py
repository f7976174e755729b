"""`Task`: what every task kind defines, and the defaults most kinds share.

A task kind is a frozen dataclass; an instance is hashable, so it is a static argument of the
jit-compiled steps. Class attributes describe the kind; fields hold what a kind learns from the
training labels (`Regression`'s target scale), set by `fit_to`.
"""

import dataclasses
from typing import ClassVar, Dict, FrozenSet, Sequence, Tuple

import jax
import numpy as np

from jmed.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class Task:
  """One kind of supervised problem: its loss, predictions, metrics and label checks.

  Class attributes:
    name: the kind's name, as in `Dataset.task` and `summary.json`.
    metric_names: host metrics `evaluate` returns (plus 'loss'), in report order.
    default_metric: the validation metric `select_metric('auto')` picks the checkpoint by.
    minimized: metrics where lower is better; every other metric is maximised.
    per_example_loss: whether an example's loss depends on that example alone, so DP-SGD's
      per-example gradients apply (the Cox loss couples the examples of a batch).
    probabilistic: whether predictions are class probabilities (calibration, NLL, predictive
      entropy, MC dropout and ensemble uncertainty apply).
    spatial_labels: whether labels are maps aligned with the inputs (segmentation), so an
      image-only augmentation would misalign them.
    label_dtype: NumPy dtype of the labels.
    class_names: whether labels are one class per example, so a table's label column holds
      class names (single-label classification).
    role_outputs: the model's outputs of a kind with `column_roles` (survival's one risk score,
      a treatment effect's two potential outcomes); unused by other kinds.
    column_roles: what each label column of a table means when a kind reads several columns
      in fixed roles (survival's time and event); empty: one column per output.
  """

  name: ClassVar[str] = 'task'
  metric_names: ClassVar[Tuple[str, ...]] = ('loss',)
  default_metric: ClassVar[str] = 'loss'
  minimized: ClassVar[FrozenSet[str]] = frozenset({'loss'})
  per_example_loss: ClassVar[bool] = True
  probabilistic: ClassVar[bool] = False
  spatial_labels: ClassVar[bool] = False
  label_dtype: ClassVar[type] = np.int32
  class_names: ClassVar[bool] = False
  column_roles: ClassVar[Tuple[str, ...]] = ()
  role_outputs: ClassVar[int] = 0

  # ---------------------------------------------------------------- labels (host)

  def label_shape(self, num_outputs: int, input_shape: Sequence[int]) -> Tuple[int, ...]:
    """The per-example label shape for a model with `num_outputs` outputs."""
    raise NotImplementedError

  def check_outputs(self, num_outputs: int, where: str) -> None:
    """Raises `DataError` if a model with `num_outputs` outputs cannot serve this task."""
    if num_outputs < 1:
      raise DataError(f'{where}: {self.name} needs at least 1 output, got {num_outputs}.')

  def check_labels(self, labels: np.ndarray, num_outputs: int, input_shape: Sequence[int],
                   where: str) -> None:
    """Raises `DataError` naming `where` unless `labels` [n, *label_shape] fit this task."""
    shape = (len(labels), *self.label_shape(num_outputs, input_shape))
    if labels.dtype != self.label_dtype or labels.shape != shape:
      raise DataError(f'{where}: {self.name} labels are {labels.dtype} {labels.shape}, '
                      f'expected {np.dtype(self.label_dtype).name} {list(shape)}.')
    self._check_values(labels, num_outputs, where)

  def _check_values(self, labels: np.ndarray, num_outputs: int, where: str) -> None:
    """Checks label values once the layout is right."""

  def parse_label(self, cell: str):
    """The label of one text cell (e.g. a CSV column); raises ValueError saying what is
    allowed."""
    raise ValueError(f'{self.name} labels are not read from a single column.')

  def fit_to(self, train_labels: np.ndarray) -> 'Task':
    """This task with whatever it learns from the training labels (default: nothing)."""
    del train_labels
    return self

  def summary(self) -> Dict:
    """What `fit_to` learned, for summary.json (default: nothing)."""
    return {}

  def class_weights(self, labels: np.ndarray, num_outputs: int) -> Tuple[float, ...]:
    """Balanced per-class loss weights from the training labels (single-label tasks only)."""
    raise ConfigError(f"class_weights 'balanced' applies to single-label classification "
                      f"('binary', 'multiclass'), not to task {self.name!r}.")

  # ---------------------------------------------------------------- on device (jit-able)

  def loss(self, outputs: jax.Array, labels: jax.Array, valid=None) -> jax.Array:
    """Per-example loss [batch]; `valid` [batch] (1 real, 0 padding) matters only to losses
    that couple examples."""
    raise NotImplementedError

  def example_weights(self, labels: jax.Array, class_weights) -> jax.Array:
    """Per-example loss weights [batch] for `class_weights` (one weight per class)."""
    raise ConfigError(f'task {self.name!r} takes no class weights.')

  def train_metrics(self, outputs: jax.Array, labels: jax.Array) -> Dict[str, jax.Array]:
    """Per-example values [batch] whose means are logged as `train_<name>` (default: none)."""
    del outputs, labels
    return {}

  def predict(self, outputs: jax.Array) -> jax.Array:
    """What a prediction is, from the model's outputs (probabilities, risk, values, ...)."""
    raise NotImplementedError

  # ---------------------------------------------------------------- on the host

  def baseline(self, train_predictions: np.ndarray, train_labels: np.ndarray):
    """What predictions on new rows need from the training split's predictions, JSON-able
    (survival's baseline hazard); None for kinds that need nothing."""
    del train_predictions, train_labels
    return None

  def prediction_table(self, predictions: np.ndarray, names: Sequence[str],
                       baseline=None) -> Dict[str, np.ndarray]:
    """predictions.csv's columns of a split's predictions [n, outputs]: 'predicted_<name>'
    per output, `names` naming the outputs (classes, labels or targets)."""
    del baseline
    predictions = np.asarray(predictions)
    return {f'predicted_{name}': predictions[:, i] for i, name in enumerate(names)}

  def label_table(self, labels: np.ndarray, classes=None) -> Dict[str, np.ndarray]:
    """predictions.csv's columns of a file's own labels [n, ...]: 'label' (by class name when
    `classes` names them) for one label per row, else 'label_<i>' per label column."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
      return {'label': np.asarray(classes, dtype=object)[labels] if classes else labels}
    return {f'label_{i}': labels[:, i] for i in range(labels.shape[1])}

  def evaluate(self, predictions: np.ndarray, labels: np.ndarray) -> Dict:
    """Metrics of a whole split's predictions; may include its own 'loss' where the per-batch
    loss is not the split's (the Cox loss)."""
    raise NotImplementedError

  def combine(self, member_predictions: np.ndarray) -> np.ndarray:
    """An ensemble's prediction from its members' [members, n, ...]: their mean."""
    return np.mean(member_predictions, axis=0)

  def select_metric(self, name: str = 'auto') -> str:
    """The validation metric that picks the best checkpoint: 'auto' is `default_metric`."""
    if name == 'auto':
      return self.default_metric
    if name not in self.metric_names:
      raise ConfigError(f'select_metric {name!r} does not apply to task {self.name!r}; '
                        f'choose auto or one of: {", ".join(self.metric_names)}.')
    return name

  def lower_is_better(self, metric: str) -> bool:
    """Whether a smaller value of `metric` is better."""
    return metric in self.minimized


@dataclasses.dataclass(frozen=True)
class Classifier(Task):
  """What classification kinds share: class probabilities out, the metrics a clinician asks
  for (accuracy, AUROC, AUPRC, sensitivity, specificity, F1, calibration), AUROC picking the
  checkpoint, int32 labels."""

  metric_names = ('accuracy', 'auroc', 'auprc', 'sensitivity', 'specificity', 'f1', 'ece',
                  'loss')
  default_metric = 'auroc'
  minimized = frozenset({'loss', 'ece'})
  probabilistic = True
  label_dtype = np.int32

  def prediction_table(self, predictions, names, baseline=None) -> Dict[str, np.ndarray]:
    """'prob_<name>' per class (or label), and for single-label kinds 'predicted': the most
    probable class's name."""
    del baseline
    predictions = np.asarray(predictions)
    table = {f'prob_{name}': predictions[:, i] for i, name in enumerate(names)}
    if self.class_names:
      table['predicted'] = np.asarray(names, dtype=object)[np.argmax(predictions, -1)]
    return table


def check_range(labels: np.ndarray, low, high, where: str, what: str = 'labels') -> None:
  """Raises `DataError` unless every label lies in [low, high]."""
  if labels.size and (labels.min() < low or labels.max() > high):
    raise DataError(f'{where}: {what} outside [{low}, {high}]: found values in '
                    f'[{labels.min()}, {labels.max()}].')
