"""D-MPNN: the directed message-passing network of Chemprop (Yang et al., "Analyzing learned
molecular representations for property prediction", J. Chem. Inf. Model. 59, 3370 (2019)).

Its input is the packed graph array of `jmed.data.graphs` (`[batch, rows, 17]`, one molecule per
row block, padded to a fixed budget). Messages live on directed bonds v -> w:

  h0_vw = ReLU(a_vw),                a_vw = W_i [x_v, e_vw]          (no bias, as Chemprop)
  m_vw  = sum_{k in N(v) \\ w} h_kv = (sum of h over the bonds into v) - h_wv
  h_vw  = ReLU(a_vw + W_m m_vw)      (depth - 1 times; Chemprop adds the pre-activation a_vw)
  h_v   = ReLU(W_a [x_v, sum of h over the bonds into v])
  h_mol = mean (or sum) of h_v over the real atoms [, RDKit descriptors]
  out   = FFN(h_mol): `ffn_layers` dense layers (ReLU, dropout between), `num_classes` outputs.

Per molecule, the bond-to-atom sum is a `jax.ops.segment_sum` over target atoms and the
atom-to-bond and reverse-bond lookups are gathers; the batch is flattened into one graph with
offset indices, so a batch costs one scatter and two gathers per step. Padding atoms and bonds
are masked to zero, so outputs do not depend on the budget or the atom order.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmed.data import graphs

READOUTS = ('mean', 'sum')


def _one_hot_features(parts, dtype):
  """Chemprop's atom features [batch, rows, 133] and bond features [batch, rows, 14]."""
  atoms = [jax.nn.one_hot(parts.atom_codes[..., i], n, dtype=dtype)
           for i, n in enumerate(graphs.ATOM_CATEGORIES)]
  atoms = jnp.concatenate(atoms + [parts.atom_floats.astype(dtype)], -1)
  c = parts.bond_codes
  bonds = jnp.concatenate([
      jax.nn.one_hot(c[..., 0], graphs.BOND_CATEGORIES[0], dtype=dtype),
      c[..., 1:3].astype(dtype),
      jax.nn.one_hot(c[..., 3], graphs.BOND_CATEGORIES[3], dtype=dtype)], -1)
  return atoms, bonds


class DMPNN(nn.Module):
  """Directed message passing over packed molecular graphs (module docstring).

  Attributes:
    num_classes: outputs (logits, or regression targets).
    hidden_size: message and atom hidden size (Chemprop: 300).
    depth: message-passing steps, counting the initial message (Chemprop: 3).
    readout: 'mean' or 'sum' of the atom states.
    ffn_layers: dense layers of the head, the output layer included (Chemprop: 2).
    ffn_hidden: width of the head's hidden layers (Chemprop: the hidden size, 300).
    num_descriptors: molecule features packed after the graph (`jmed.data.graphs`), joined to
      the readout before the head; 0: none.
    dropout_rate: dropout on messages, atom states and in the head while training.
    dtype: computation dtype; outputs are float32.
  """

  num_classes: int
  hidden_size: int = 300
  depth: int = 3
  readout: str = 'mean'
  ffn_layers: int = 2
  ffn_hidden: int = 300
  num_descriptors: int = 0
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    """Maps packed graphs [batch, rows, 17] to outputs [batch, num_classes]."""
    if inputs.ndim != 3:
      raise ValueError(f'D-MPNN expects packed graphs [batch, rows, {graphs.WIDTH}], got '
                       f'shape {inputs.shape}.')
    if self.readout not in READOUTS:
      raise ValueError(f'readout must be one of {READOUTS}, got {self.readout!r}.')
    if self.depth < 1:
      raise ValueError(f'depth must be >= 1, got {self.depth}.')
    parts = graphs.unpack(inputs, self.num_descriptors)  # indices exact: from float32
    x_atoms, x_bonds = _one_hot_features(parts, self.dtype)
    batch, rows = x_atoms.shape[:2]
    atom_mask = parts.atom_mask.astype(self.dtype)[..., None]
    bond_mask = parts.bond_mask.astype(self.dtype)[..., None]
    # The batch as one graph: molecule b's row r is flat row b * rows + r.
    offset = (jnp.arange(batch, dtype=jnp.int32) * rows)[:, None]
    source = (parts.source + offset).reshape(-1)
    target = (parts.target + offset).reshape(-1)
    reverse = (parts.reverse + offset).reshape(-1)
    flat = lambda x: x.reshape(batch * rows, x.shape[-1])

    def into_atoms(h):  # [batch * rows, H] bond states -> their sum at each target atom
      return jax.ops.segment_sum(h, target, num_segments=batch * rows)

    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    x_source = flat(x_atoms)[source]
    a = nn.Dense(self.hidden_size, use_bias=False, dtype=self.dtype, name='W_i')(
        jnp.concatenate([x_source, flat(x_bonds)], -1))
    mask = flat(bond_mask)
    h = nn.relu(a) * mask
    w_m = nn.Dense(self.hidden_size, use_bias=False, dtype=self.dtype, name='W_m')
    for _ in range(self.depth - 1):
      m = into_atoms(h)[source] - h[reverse]
      h = dropout(nn.relu(a + w_m(m))) * mask
    incoming = into_atoms(h).reshape(batch, rows, -1)
    atoms = nn.relu(nn.Dense(self.hidden_size, dtype=self.dtype, name='W_a')(
        jnp.concatenate([x_atoms, incoming], -1)))
    atoms = dropout(atoms) * atom_mask
    self.sow('intermediates', 'atom_states', atoms)
    molecule = atoms.sum(1)
    if self.readout == 'mean':
      molecule = molecule / jnp.maximum(atom_mask.sum(1), 1)
    if self.num_descriptors:
      molecule = jnp.concatenate([molecule, parts.descriptors.astype(self.dtype)], -1)
    for i in range(self.ffn_layers - 1):
      molecule = dropout(molecule)
      molecule = nn.relu(nn.Dense(self.ffn_hidden, dtype=self.dtype, name=f'ffn_{i}')(molecule))
    molecule = dropout(molecule)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='output')(molecule).astype(
        jnp.float32)
