"""Data parallelism: `jax.jit` over a one-axis device mesh (the modern form of `pmap`).

Parameters and optimizer state are replicated on every device; each batch is split along its
batch axis. Because the step computes the mean over the *global* batch, XLA inserts the gradient
all-reduce itself and the result equals a one-device run on the same batch (up to float
summation order). Dropout keys are folded per step in `train_step`; with JAX's partitionable
threefry each device draws the bits of its own slice of the global mask, so the masks too are
those of a one-device run. Works unchanged across hosts after `jax.distributed.initialize()`.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices=None) -> Mesh:
  """A one-axis mesh named 'data' over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """Raises if the global batch cannot be split evenly over the mesh's devices."""
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(
        f'Global batch size {batch_size} is not divisible by the {n} devices; use a multiple '
        f'of {n} (e.g. {max(n, batch_size // n * n)}).')


def replicate(tree, mesh: Mesh):
  """Places every leaf of `tree` whole on every device of the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch, mesh: Mesh, batch_axis: int = 0):
  """Splits host arrays along `batch_axis` over the mesh.

  Each process passes its own slice of the global batch (the whole batch on one host).
  """
  spec = P(*([None] * batch_axis), DATA_AXIS)
  sharding = NamedSharding(mesh, spec)

  def put(x):
    x = np.asarray(x)
    check_batch_size(x.shape[batch_axis] * jax.process_count(), mesh)
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, batch)


def data_parallel(step_fn, mesh: Mesh, *, batch_axis: int = 0, donate_state: bool = True):
  """jit-compiles `step_fn(state, batch) -> (state, outputs)` for a data-parallel run.

  The state stays replicated; outputs come back replicated (metric sums over the global batch)
  except per-example outputs, which keep the batch sharding XLA picks.
  """
  replicated = NamedSharding(mesh, P())
  return jax.jit(step_fn, out_shardings=(replicated, None),
                 donate_argnums=(0,) if donate_state else ())
