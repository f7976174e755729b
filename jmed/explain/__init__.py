"""jmed.explain: saliency, SmoothGrad, integrated gradients, Grad-CAM, attention maps, overlays.

Every function takes the model's `apply_fn` (or the model) and variables explicitly; see
`scripts/explain.py` for PNG overlays of a trained run.
"""

from jmed.explain.attention import attention_maps
from jmed.explain.attention import attention_rollout
from jmed.explain.attention import collect
from jmed.explain.attention import token_relevance
from jmed.explain.gradcam import feature_layers
from jmed.explain.gradcam import gradcam
from jmed.explain.gradcam import layer_gradients
from jmed.explain.gradients import Completeness
from jmed.explain.gradients import integrated_gradients
from jmed.explain.gradients import resolve_targets
from jmed.explain.gradients import saliency
from jmed.explain.gradients import select_scores
from jmed.explain.gradients import smoothgrad
from jmed.explain.gradients import target_scores
from jmed.explain.overlay import normalize_map
from jmed.explain.overlay import save_attention
from jmed.explain.overlay import save_overlays

__all__ = [
    'Completeness',
    'attention_maps',
    'attention_rollout',
    'collect',
    'feature_layers',
    'gradcam',
    'integrated_gradients',
    'layer_gradients',
    'normalize_map',
    'resolve_targets',
    'saliency',
    'save_attention',
    'save_overlays',
    'select_scores',
    'smoothgrad',
    'target_scores',
    'token_relevance',
]
