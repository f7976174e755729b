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
from jax.experimental import multihost_utils
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


def local_rows(batch_size: int, mesh: Mesh) -> slice:
  """The rows of a global batch of `batch_size` that this process feeds: its devices' slices.

  One process feeds them all (`slice(0, batch_size)`). With several, process p of P feeds a
  contiguous block of `batch_size // P` rows, in the order of the mesh's devices, so the global
  batch is the one a single process would have fed.
  """
  check_batch_size(batch_size, mesh)
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  blocks = sorted({(index[0].start or 0, index[0].stop or batch_size)
                   for index in sharding.addressable_devices_indices_map((batch_size,)).values()})
  start, stop = blocks[0][0], blocks[-1][1]
  if sum(b - a for a, b in blocks) != stop - start:
    raise ValueError(f'this process\'s devices hold rows {blocks} of the global batch, which '
                     'are not contiguous; order the mesh devices by process.')
  return slice(start, stop)


def to_host(tree):
  """NumPy copies of a pytree of step outputs, whole on every process.

  Replicated arrays are read from a local copy; arrays sharded across processes (per-example
  outputs such as probabilities) are gathered from all processes in global batch order.
  """
  def fetch(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(fetch, tree)


def replicate(tree, mesh: Mesh):
  """Places every leaf of `tree` whole on every device of the mesh.

  With several processes each one passes the same values (e.g. a state initialised from the
  same seed) and places them on its own devices.
  """
  sharding = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    x = jax.numpy.asarray(x)  # Python scalars (a fresh state's step) take JAX's dtypes
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree)


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
