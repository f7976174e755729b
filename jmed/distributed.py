"""Multi-host start-up: `jax.distributed.initialize()` when the run spans several processes.

JAX's own runtime is the distributed engine: after `initialize`, `jax.devices()` lists every
device of every process, the one-axis mesh of `jmed.train.parallel` spans them all, and XLA
inserts the cross-host all-reduce. Each process then feeds only its own rows of every global
batch (`jmed.train.parallel.local_rows`); metrics and JSON files are written by process 0
(`is_primary`), while orbax writes checkpoints from every process together.

Call `initialize` before any other JAX call that touches devices.
"""

import importlib.util
import os
from typing import Optional

import jax

from jmed.errors import ConfigError

MODES = ('auto', 'on', 'off')


def detect_cluster(environ=None) -> Optional[str]:
  """The multi-process launcher this process runs under, read from the environment alone.

  Returns 'slurm' (SLURM with more than one task), 'mpi' (Open MPI with more than one rank),
  'tpu' (a Cloud TPU VM: JAX reads the slice's workers from the TPU metadata; a single-host VM
  simply becomes one process) or None (a plain single-process run).
  """
  env = os.environ if environ is None else environ
  if 'SLURM_JOB_ID' in env and int(env.get('SLURM_NTASKS', env.get('SLURM_NPROCS', '1'))) > 1:
    return 'slurm'
  if 'OMPI_MCA_orte_hnp_uri' in env and int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1:
    return 'mpi'
  if environ is None and importlib.util.find_spec('libtpu') is not None:
    return 'tpu'
  if 'TPU_WORKER_HOSTNAMES' in env:
    return 'tpu'
  return None


def initialize(mode: str = 'auto', coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None, process_id: Optional[int] = None) -> dict:
  """Joins this process to a multi-process JAX run when there is one; returns `describe()`.

  Args:
    mode: 'auto' initialises when coordinator flags are given or `detect_cluster` finds a
      launcher; 'on' always calls `jax.distributed.initialize` (JAX's own cluster detection,
      an error if it finds none); 'off' never does (one process with its local devices).
    coordinator_address: 'host:port' of process 0, for clusters JAX cannot detect. Needs
      `num_processes` and `process_id` too.
    num_processes: total number of processes.
    process_id: this process's index in [0, num_processes).
  """
  if mode not in MODES:
    raise ConfigError(f'distributed mode must be one of {MODES}, got {mode!r}.')
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if mode == 'off':
      raise ConfigError('coordinator flags were given but distributed mode is off.')
    if any(v is None for v in explicit):
      raise ConfigError('a multi-process run needs all of coordinator_address ("host:port"), '
                       f'num_processes and process_id; got {explicit}.')
    if not 0 <= process_id < num_processes:
      raise ConfigError(f'process_id must be in [0, {num_processes}), got {process_id}.')
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif mode == 'on' or (mode == 'auto' and detect_cluster()):
    jax.distributed.initialize()
  return describe()


def describe() -> dict:
  """This process's place in the run: index, count, local and global device counts."""
  return {'process_index': jax.process_index(), 'process_count': jax.process_count(),
          'local_devices': jax.local_device_count(), 'global_devices': jax.device_count(),
          'platform': jax.devices()[0].platform}


def is_primary() -> bool:
  """Whether this process writes the run's logs and JSON files (process 0)."""
  return jax.process_index() == 0
