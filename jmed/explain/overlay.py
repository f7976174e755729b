"""PNG figures of explanations: heat maps over images, attention over tokens (matplotlib, Agg).

Figures are built with `matplotlib.figure.Figure` directly (rendered by Agg), so nothing here
touches pyplot's global state or needs a display.
"""

import os
from typing import Mapping, Optional, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

REDUCTIONS = ('abs_max', 'abs_sum', 'sum', 'positive')


def normalize_map(attributions, *, reduce: str = 'abs_max',
                  percentile: float = 99.0) -> np.ndarray:
  """Per-pixel attributions to displayable maps in [0, 1].

  Args:
    attributions: [batch, height, width, channels] (or [batch, height, width]).
    reduce: over channels and signs: 'abs_max' (max |a|, the usual saliency map), 'abs_sum'
      (sum |a|), 'sum' (signed sum, then |.|), 'positive' (sum, negatives clipped to 0).
    percentile: each map is divided by this percentile of its values and clipped to 1, so a
      few extreme pixels do not wash out the rest (100: divide by the maximum).

  Returns:
    float32 [batch, height, width] in [0, 1] (all zeros where a map is zero).
  """
  if reduce not in REDUCTIONS:
    raise ValueError(f'reduce must be one of {REDUCTIONS}, got {reduce!r}.')
  if not 0 < percentile <= 100:
    raise ValueError(f'percentile must be in (0, 100], got {percentile}.')
  a = np.asarray(attributions, np.float32)
  if a.ndim == 3:
    a = a[..., None]
  if a.ndim != 4:
    raise ValueError(f'attributions must be [batch, height, width(, channels)], got shape '
                     f'{a.shape}.')
  if reduce == 'abs_max':
    maps = np.abs(a).max(-1)
  elif reduce == 'abs_sum':
    maps = np.abs(a).sum(-1)
  elif reduce == 'sum':
    maps = np.abs(a.sum(-1))
  else:
    maps = np.maximum(a.sum(-1), 0)
  scale = np.percentile(maps.reshape(len(maps), -1), percentile, axis=1)[:, None, None]
  scale = np.where(scale > 0, scale, maps.max(axis=(1, 2), keepdims=True))
  return np.clip(np.divide(maps, scale, out=np.zeros_like(maps), where=scale > 0), 0, 1)


def _show_image(ax, image):
  image = np.clip(np.asarray(image, np.float32), 0, 1)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  ax.imshow(image, cmap='gray' if image.ndim == 2 else None, vmin=0, vmax=1)


def _heat(m, cmap: str, alpha: float) -> np.ndarray:
  """RGBA [h, w, 4] of map `m` in [0, 1]: colour from `cmap`, opacity alpha * m (0: clear)."""
  m = np.clip(np.asarray(m, np.float32), 0, 1)
  rgba = np.asarray(matplotlib.colormaps[cmap](m), np.float32)
  rgba[..., 3] = alpha * m
  return rgba


def save_overlays(path: str, image, maps: Mapping[str, np.ndarray], *,
                  title: Optional[str] = None, cmap: str = 'jet', alpha: float = 0.7,
                  dpi: int = 100) -> str:
  """Writes one PNG: the image, then each map as a heat map over it, side by side.

  Args:
    path: the PNG file to write (its folder is created).
    image: [height, width, channels] (1 or 3 channels) or [height, width], values in [0, 1].
    maps: panel title -> map [height, width] in [0, 1] (e.g. from `normalize_map` or Grad-CAM).
    title: figure title, e.g. the label and the prediction.
    cmap: matplotlib colormap of the heat maps.
    alpha: opacity of the heat map where it is 1 (it fades out to 0 with the map).
    dpi: resolution.

  Returns:
    `path`.
  """
  image = np.asarray(image)
  for name, m in maps.items():
    if np.shape(m) != image.shape[:2]:
      raise ValueError(f'map {name!r} has shape {np.shape(m)}, the image {image.shape[:2]}.')
  panels = 1 + len(maps)
  fig = Figure(figsize=(2.4 * panels, 2.8 if title else 2.5), dpi=dpi)
  axes = fig.subplots(1, panels, squeeze=False)[0]
  _show_image(axes[0], image)
  axes[0].set_title('input', fontsize=9)
  for ax, (name, m) in zip(axes[1:], maps.items()):
    _show_image(ax, image)
    ax.imshow(_heat(m, cmap, alpha))
    ax.set_title(name, fontsize=9)
  for ax in axes:
    ax.set_axis_off()
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, path)


def save_attention(path: str, tokens: Sequence[str], relevance,
                   layer_maps: Optional[Mapping[str, np.ndarray]] = None, *,
                   title: Optional[str] = None, cmap: str = 'viridis', dpi: int = 100) -> str:
  """Writes one PNG: per-token relevance as a bar chart, then each layer's attention matrix.

  Args:
    path: the PNG file to write (its folder is created).
    tokens: the L token strings shown (e.g. the real tokens of one document).
    relevance: [L] relevance per token (e.g. `token_relevance` of the rollout).
    layer_maps: panel title -> [L, L] attention (queries x keys), e.g. one layer's weights
      averaged over heads.
    title: figure title.
    cmap: colormap of the attention matrices.
    dpi: resolution.

  Returns:
    `path`.
  """
  tokens = list(tokens)
  relevance = np.asarray(relevance, np.float32)
  if relevance.shape != (len(tokens),):
    raise ValueError(f'relevance must be [{len(tokens)}] (one per token), got shape '
                     f'{relevance.shape}.')
  layer_maps = dict(layer_maps or {})
  for name, m in layer_maps.items():
    if np.shape(m) != (len(tokens), len(tokens)):
      raise ValueError(f'attention {name!r} has shape {np.shape(m)}, expected '
                       f'{(len(tokens), len(tokens))}.')
  width = max(6.0, 0.18 * len(tokens))
  fig = Figure(figsize=(width, 2.5 + width * len(layer_maps) / 2), dpi=dpi)
  grid = fig.add_gridspec(1 + len(layer_maps), 1, height_ratios=[1] + [2] * len(layer_maps))
  ax = fig.add_subplot(grid[0])
  ax.bar(np.arange(len(tokens)), relevance, color='tab:red')
  ax.set_xticks(np.arange(len(tokens)), tokens, rotation=90, fontsize=6)
  ax.set_xlim(-0.5, len(tokens) - 0.5)
  ax.set_ylabel('relevance', fontsize=8)
  for i, (name, m) in enumerate(layer_maps.items()):
    ax = fig.add_subplot(grid[1 + i])
    ax.imshow(np.asarray(m, np.float32), cmap=cmap, vmin=0, aspect='auto')
    ax.set_title(name, fontsize=9)
    ax.set_xticks(np.arange(len(tokens)), tokens, rotation=90, fontsize=5)
    ax.set_yticks(np.arange(len(tokens)), tokens, fontsize=5)
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, path)


def _save(fig, path: str) -> str:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, format='png')
  return path
