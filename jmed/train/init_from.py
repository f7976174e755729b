"""Starting a model from another run's parameters (e.g. a classifier from a pretrained MLM).

  pretrained = pretrained_params('runs/mlm_biomed')
  params, report = merge(state.params, pretrained)   # Embed_0, TransformerEncoder_0, ...

Parameters are matched by their '/'-joined path ('TransformerEncoder_0/block0/attention/query/
kernel') and shape; everything else keeps its fresh initialisation. Only the parameters are read
from the checkpoint: no model, dataset or optimizer of the pretrained run is needed.
"""

import os
from typing import Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jmed.errors import ConfigError, MissingDataError
from jmed.train import restore


def pretrained_params(run_dir: str, which: str = 'best'):
  """The parameters of a jmed run: its best checkpoint (else its latest), as a nested dict of
  arrays on one device.

  Raises:
    MissingDataError: `run_dir` is not a run directory (no config.json) or holds no checkpoint.
  """
  restore.read_config(run_dir)  # a clear error for a path that is not a run directory
  directory = restore.checkpoint_dir(run_dir, which)
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with ocp.CheckpointManager(os.path.abspath(directory),
                             item_handlers=ocp.PyTreeCheckpointHandler()) as manager:
    step = manager.latest_step()
    metadata = manager.item_metadata(step)
    tree = getattr(metadata, 'tree', metadata)  # orbax's metadata wrapper, or the tree itself
    if 'params' not in tree:
      raise MissingDataError(f'{directory}/{step} holds no parameters (found {sorted(tree)}).')
    target = {'params': jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding),
        tree['params'])}
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True))
  return restored['params']


def flatten(params) -> Dict[str, object]:
  """{'/'-joined path: leaf} of a parameter pytree."""
  return {_path(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def _path(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
                  for k in path)


def merge(params, pretrained) -> Tuple[object, Dict[str, List[str]]]:
  """`params` with every leaf whose path and shape `pretrained` shares taken from it.

  Args:
    params: the new model's (freshly initialised) parameters.
    pretrained: another model's parameters (e.g. `pretrained_params(run_dir)`).

  Returns:
    (params, report): the merged parameters (same structure and dtypes as `params`; loaded
    values cast to each leaf's dtype) and {'loaded': [paths], 'skipped': ['path: reason', ...]
    (leaves of `params` kept as initialised), 'unused': [paths of `pretrained` not loaded]}.

  Raises:
    ConfigError: no leaf matched (different architectures), naming a few paths of each side.
  """
  source = flatten(pretrained)
  loaded, skipped = [], []

  def take(path, leaf):
    name = _path(path)
    value = source.get(name)
    if value is None:
      skipped.append(f'{name}: not in the pretrained parameters')
      return leaf
    if tuple(np.shape(value)) != tuple(np.shape(leaf)):
      skipped.append(f'{name}: shape {list(np.shape(leaf))} != pretrained '
                     f'{list(np.shape(value))}')
      return leaf
    loaded.append(name)
    return jnp.asarray(value, dtype=jnp.result_type(leaf))

  merged = jax.tree_util.tree_map_with_path(take, params)
  if not loaded:
    mine = list(flatten(params))
    raise ConfigError(
        'init_from: no parameter of the pretrained run fits this model (matching by path and '
        f'shape). This model has {len(mine)} parameters, e.g. {", ".join(mine[:4])}; the '
        f'pretrained run has {len(source)}, e.g. {", ".join(list(source)[:4])}. Use the same '
        'architecture (model, embed_dim, num_layers, ...) as the pretrained run.')
  used = set(loaded)
  return merged, {'loaded': loaded, 'skipped': skipped,
                  'unused': [name for name in source if name not in used]}


def tokenizer_path(run_dir: str) -> str:
  """`run_dir`/tokenizer.json, the tokenizer a pretrained text run used.

  Raises:
    MissingDataError: the run has none (not a text run).
  """
  path = os.path.join(run_dir, 'tokenizer.json')
  if not os.path.isfile(path):
    raise MissingDataError(f'{path} not found: init_from needs the pretrained run\'s tokenizer '
                           '(only text runs write one).')
  return path
