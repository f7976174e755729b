"""Figures written straight to files with matplotlib's Agg canvas (no pyplot, no display)."""

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from jmed import metrics as jmetrics


def reliability_diagram(confidences, correct, path: str, num_bins: int = jmetrics.NUM_BINS,
                        title: str = 'Reliability diagram') -> dict:
  """Writes a reliability diagram PNG: accuracy per confidence bin against the diagonal.

  Top panel: one bar per non-empty bin at its accuracy, the gap to the bin's mean confidence
  shaded red (overconfident where accuracy < confidence), and the diagonal of perfect
  calibration. Bottom panel: how many predictions fall in each bin (log scale). The title ends
  with the expected calibration error of the same bins (`jmed.metrics`).

  Args:
    confidences: [m] confidences in [0, 1], e.g. from `jmed.metrics.calibration_inputs`.
    correct: [m] bool (or 0/1), whether each prediction was right.
    path: the .png file to write (its folder is created).
    num_bins: equal-width confidence bins, as in `jmed.metrics.reliability_bins`.
    title: the figure title; ', ECE = ...' is appended.

  Returns:
    The `jmed.metrics.reliability_bins` statistics plotted, plus 'ece'.
  """
  if not str(path).lower().endswith('.png'):
    raise ValueError(f'path must name a .png file, got {path!r}.')
  bins = jmetrics.reliability_bins(confidences, correct, num_bins)  # validates the inputs
  ece = jmetrics.expected_calibration_error(confidences, correct, num_bins)
  edges, count = bins['edges'], bins['count']
  full = count > 0
  left, width = edges[:-1][full], np.diff(edges)[full]
  accuracy, confidence = bins['accuracy'][full], bins['confidence'][full]

  fig = Figure(figsize=(5, 6), layout='constrained')
  FigureCanvasAgg(fig)
  top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={'height_ratios': (3, 1)})
  top.bar(left, accuracy, width, align='edge', color='tab:blue', edgecolor='black',
          label='accuracy')
  top.bar(left, confidence - accuracy, width, bottom=accuracy, align='edge', color='tab:red',
          alpha=0.3, edgecolor='tab:red', hatch='//', label='gap to mean confidence')
  top.plot([0, 1], [0, 1], '--', color='gray', label='perfect calibration')
  top.set(ylim=(0, 1), ylabel='accuracy', title=f'{title}, ECE = {ece:.3f}')
  top.legend(loc='upper left', fontsize='small')
  bottom.bar(left, count[full], width, align='edge', color='gray', edgecolor='black')
  bottom.set(xlim=(0, 1), xlabel='confidence', ylabel='predictions', yscale='log')
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fig.savefig(path, dpi=120)
  return {**bins, 'ece': ece}


def training_curves(records, path: str, metric: str) -> None:
  """Writes a PNG of a run's curves per epoch, from its metrics.jsonl records.

  Left: the training loss (mean over the epoch) and the validation loss. Right: the validation
  `metric` that picks the best checkpoint (left out when it is the loss itself), the best
  epoch marked. An ensemble's per-member values are averaged.

  Args:
    records: the metrics log's records, one dict per epoch ('epoch', 'train_loss', 'val_*').
    path: the .png file to write (its folder is created).
    metric: the selection metric's name without the 'val_' prefix, e.g. 'auroc' or 'loss'.
  """
  if not str(path).lower().endswith('.png'):
    raise ValueError(f'path must name a .png file, got {path!r}.')
  panels = [('loss', ('train_loss', 'val_loss'))]
  if metric != 'loss':
    panels.append((f'validation {metric} (selects the checkpoint)', (f'val_{metric}',)))
  fig = Figure(figsize=(5 * len(panels), 3.5), layout='constrained')
  FigureCanvasAgg(fig)
  axes = np.atleast_1d(fig.subplots(1, len(panels)))
  for ax, (title, keys) in zip(axes, panels):
    for key in keys:
      epochs, values = _series(records, key)
      if epochs:
        ax.plot(epochs, values, 'o-', markersize=3, label=key.replace('_', ' '))
    best = [r['best_epoch'] for r in records if r.get('best_epoch') is not None]
    if best and keys[-1] == f'val_{metric}':
      ax.axvline(best[-1] + 1, color='gray', linestyle='--', label=f'best epoch {best[-1] + 1}')
    ax.set(xlabel='epoch', title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize='small')
    else:
      ax.text(0.5, 0.5, 'no epochs logged', ha='center', va='center', transform=ax.transAxes)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)


def _series(records, key: str):
  """(epochs counted from 1, values) of `key` in the records that hold a finite number."""
  epochs, values = [], []
  for record in records:
    value = record.get(key)
    if isinstance(value, list):  # an ensemble: one value per member
      value = float(np.mean(value)) if value and all(
          isinstance(v, (int, float)) for v in value) else None
    if isinstance(value, (int, float)) and np.isfinite(value):
      epochs.append(record['epoch'] + 1)
      values.append(float(value))
  return epochs, values


def segmentation_overlays(images, masks, predictions, folder: str, prefix: str = 'test'):
  """Writes `<folder>/<prefix>_<i>.png` per image: the image, its ground truth and the predicted
  mask side by side, the masks also outlined on the image, with the image's foreground Dice.

  Args:
    images: [n, height, width, channels] in [0, 1] (1 or 3 channels; volumes [n, depth, height,
      width, channels] are shown at their middle slice).
    masks: [n, height, width] int class ids (or [n, depth, height, width]).
    predictions: predicted class ids, the shape of `masks`.
    folder: created if missing.
    prefix: file name prefix.

  Returns:
    The paths written.
  """
  images, masks, predictions = (np.asarray(a) for a in (images, masks, predictions))
  if images.ndim == 5:  # volumes: the middle slice
    middle = images.shape[1] // 2
    images, masks, predictions = images[:, middle], masks[:, middle], predictions[:, middle]
  os.makedirs(folder, exist_ok=True)
  num_classes = int(max(masks.max(initial=0), predictions.max(initial=0))) + 1
  paths = []
  for i, (image, mask, pred) in enumerate(zip(images, masks, predictions)):
    path = os.path.join(folder, f'{prefix}_{i}.png')
    _overlay_figure(image, mask, pred, num_classes).savefig(path, dpi=100)
    paths.append(path)
  return paths


def _overlay_figure(image, mask, pred, num_classes: int) -> Figure:
  shown = image[..., 0] if image.shape[-1] == 1 else np.clip(image, 0, 1)
  height, width = mask.shape
  fig = Figure(figsize=(9, 3.3 * height / width + 0.4), layout='constrained')
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, 3)
  fg_mask, fg_pred = mask > 0, pred > 0
  dice = 2 * np.sum(fg_mask & fg_pred) / max(np.sum(fg_mask) + np.sum(fg_pred), 1)
  panels = [('image (outlines: truth green, prediction red)', None), ('ground truth', mask),
            (f'prediction (foreground Dice {dice:.3f})', pred)]
  for ax, (title, labels) in zip(axes, panels):
    if labels is None:
      ax.imshow(shown, cmap='gray', vmin=0, vmax=1, interpolation='nearest')
      for outlined, colour in ((mask, 'lime'), (pred, 'red')):
        if np.ptp(outlined):
          ax.contour(outlined, levels=np.arange(num_classes - 1) + 0.5, colors=colour,
                     linewidths=0.4)
    else:
      ax.imshow(labels, cmap='viridis', vmin=0, vmax=max(num_classes - 1, 1),
                interpolation='nearest')
    ax.set_title(title, fontsize='small')
    ax.set_axis_off()
  return fig
