"""The D-MPNN and its packed graphs: featurization of known molecules, the model's shape,
gradients, padding and atom-order invariance, one compiled program per budget, 4 devices == 1
device, and a short real ESOL run."""

import dataclasses
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmed import configs
from jmed.data import graphs
from jmed.errors import DataError
from jmed.models import MODELS, DMPNN

from conftest import packed_graphs, run_on_forced_devices

Chem = pytest.importorskip('rdkit.Chem')

SMILES = ('CCO', 'c1ccccc1O', 'CC(=O)N[C@@H](C)C(=O)O', '[Na+].[Cl-]', 'C#N', 'C/C=C/Cl')


def _mols(smiles=SMILES):
  return [Chem.MolFromSmiles(s) for s in smiles]


def _tiny(**kw):
  return DMPNN(num_classes=2, **dict(dict(hidden_size=16, ffn_hidden=16), **kw))


def test_known_molecules_counts_features_and_reverse_bonds():
  ethanol, phenol, _, salt, cyanide, _ = graphs.graphs(_mols())
  assert (len(ethanol.atoms), len(ethanol.source)) == (3, 4)  # 2 bonds, both directions
  assert (len(phenol.atoms), len(phenol.source)) == (7, 14)
  assert (len(salt.atoms), len(salt.source)) == (2, 0)
  np.testing.assert_array_equal(ethanol.atoms[:, 0], [5, 5, 7])  # atomic numbers 6, 6, 8
  np.testing.assert_array_equal(ethanol.atoms[:, 4], [3, 2, 1])  # Hs: CH3, CH2, OH
  assert phenol.atoms[:6, 6].all() and not phenol.atoms[6, 6]  # aromatic ring, not the O
  assert set(phenol.bonds[:, 0]) == {0, 3}  # single (C-O), aromatic
  assert cyanide.bonds[0, 0] == 2  # triple
  np.testing.assert_allclose(ethanol.atoms[2, 7], 0.15999, atol=1e-4)  # mass / 100
  for g in (ethanol, phenol):
    r = g.reverse
    np.testing.assert_array_equal(r[r], np.arange(len(r)))
    np.testing.assert_array_equal(g.source[r], g.target)
    np.testing.assert_array_equal(g.target[r], g.source)
  assert graphs.ATOM_FEATURES == 133 and graphs.BOND_FEATURES == 14  # Chemprop's sizes


def test_pack_layout_masks_budget_and_unpack():
  graph_list = graphs.graphs(_mols())
  rows = graphs.budget(graph_list)
  assert rows == 16  # N-acetylalanine: 8 bonds, 16 directed
  packed = graphs.pack(graph_list, rows + 2)
  assert packed.shape == (len(SMILES), rows + 2, graphs.WIDTH) and packed.dtype == np.float32
  parts = graphs.unpack(packed)
  assert parts.atom_mask.sum(1).tolist() == [len(g.atoms) for g in graph_list]
  assert parts.bond_mask.sum(1).tolist() == [len(g.source) for g in graph_list]
  np.testing.assert_array_equal(parts.reverse[1, :14], graph_list[1].reverse)
  assert not packed[0, 4:].any()  # ethanol: nothing past its 3 atoms and 4 bonds
  with pytest.raises(DataError, match=r'mols.csv, row 2: 7 atoms and 14 directed bonds do not '
                                      r'fit the padding budget of 10 rows'):
    graphs.pack(graph_list[:2], 10, names=['mols.csv, row 1', 'mols.csv, row 2'])
  with_descriptors, info = graphs.featurize(_mols()[:3], with_descriptors=True)
  d = len(info['descriptor_mean'])
  assert d > 100 and with_descriptors.shape[1] == info['graph_rows'] + graphs.descriptor_rows(d)
  assert np.abs(graphs.unpack(with_descriptors, d).descriptors).max() <= 5


def test_output_shape_and_every_parameter_gets_gradient():
  x = jnp.asarray(graphs.pack(graphs.graphs(_mols()), 16))
  model = _tiny(dropout_rate=0.1)
  assert MODELS['dmpnn'] is DMPNN
  variables = jax.jit(model.init)(jax.random.key(0), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (len(SMILES), 2)

  def loss(params):
    out = model.apply({'params': params}, x, train=True, rngs={'dropout': jax.random.key(1)})
    return jnp.sum(out ** 2)

  grads = jax.jit(jax.grad(loss))(variables['params'])
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)


def test_outputs_ignore_padding_and_atom_order_and_readouts_agree():
  mols = _mols()
  model = _tiny(depth=4)
  forward = jax.jit(model.apply)
  x = graphs.pack(graphs.graphs(mols), 16)
  variables = jax.jit(model.init)(jax.random.key(0), x)
  expected = forward(variables, x)
  padded = forward(variables, graphs.pack(graphs.graphs(mols), 40))
  rng = np.random.default_rng(0)
  shuffled = [Chem.RenumberAtoms(m, rng.permutation(m.GetNumAtoms()).tolist()) for m in mols]
  permuted = forward(variables, graphs.pack(graphs.graphs(shuffled), 16))
  np.testing.assert_allclose(padded, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(permuted, expected, rtol=1e-5, atol=1e-6)
  assert np.abs(np.diff(np.asarray(expected), axis=0)).max() > 1e-4  # molecules differ
  # With a one-layer head, sum readout = atoms x mean readout (same parameters).
  mean, total = _tiny(ffn_layers=1), _tiny(ffn_layers=1, readout='sum')
  variables = jax.jit(mean.init)(jax.random.key(0), x)
  bias = variables['params']['output']['bias']
  atoms = np.array([m.GetNumAtoms() for m in mols])[:, None]
  np.testing.assert_allclose(jax.jit(total.apply)(variables, x) - bias,
                             atoms * (jax.jit(mean.apply)(variables, x) - bias),
                             rtol=1e-4, atol=1e-5)


def test_one_program_per_budget_and_empty_inputs():
  model = _tiny()
  traces = []

  @jax.jit
  def forward(variables, x):
    traces.append(x.shape)
    return model.apply(variables, x)

  x = packed_graphs(rows=16)
  variables = jax.jit(model.init)(jax.random.key(0), x)
  first = forward(variables, x)
  other = graphs.pack(graphs.graphs(_mols(SMILES[:3])), 16)[[2, 1, 0]]
  forward(variables, other)
  assert len(traces) == 1  # new molecules, same budget: the compiled program is reused
  assert np.isfinite(np.asarray(first)).all()
  # All-zero inputs (a restored run's sample, evaluation padding): finite outputs.
  assert np.isfinite(np.asarray(forward(variables, np.zeros_like(x)))).all()


_TRAIN_STEPS = textwrap.dedent('''
    import numpy as np, jax, optax
    from jmed.models.dmpnn import DMPNN
    from jmed.train import parallel, steps
    from jmed.train.state import create_train_state

    def train_steps(batches):
      mesh = parallel.make_mesh()
      model = DMPNN(num_classes=1, hidden_size=16, ffn_hidden=16, dropout_rate=0.2)
      tx = optax.adam(1e-2)
      state = jax.jit(lambda sample: create_train_state(model, tx, sample, 0))(
          batches['inputs'][0, :1])
      state = parallel.replicate(state, mesh)
      train = parallel.data_parallel(steps.bind(steps.train_steps, 'regression'), mesh,
                                     batch_axis=1)
      state, metrics = train(state, parallel.shard_batch(batches, mesh, batch_axis=1))
      leaves = jax.tree.leaves(jax.device_get(state.params))
      return {'flat': np.concatenate([np.ravel(x) for x in leaves]),
              'loss': np.asarray(metrics['loss_sum']), 'devices': len(jax.devices())}
''')
_PARALLEL_WORKER = _TRAIN_STEPS + textwrap.dedent('''
    import sys
    np.savez(sys.argv[2], **train_steps(dict(np.load(sys.argv[1]))))
''')


def test_four_devices_equal_one_device(tmp_path):
  """A data-parallel D-MPNN step (dropout on) on 4 forced CPU devices (a fresh process)
  equal the same steps on this process's single device."""
  smiles = list(SMILES) + ['CCCCCC', 'c1ccncc1']
  x = graphs.pack(graphs.graphs(_mols(smiles)), 16)
  batches = {'inputs': x[None],  # [steps, batch, rows, 17]
             'labels': np.random.default_rng(0).normal(size=(1, 8, 1)).astype(np.float32)}
  path = tmp_path / 'batches.npz'
  np.savez(path, **batches)
  four, _ = run_on_forced_devices(tmp_path, 4, _PARALLEL_WORKER, path)
  scope = {}
  exec(_TRAIN_STEPS, scope)  # pylint: disable=exec-used
  one = scope['train_steps'](batches)
  assert int(one['devices']) == 1 and int(four['devices']) == 4
  np.testing.assert_allclose(four['loss'], one['loss'], rtol=1e-5)
  np.testing.assert_allclose(four['flat'], one['flat'], rtol=1e-4, atol=1e-5)


def test_short_real_esol_run_beats_the_mean(data_dir, tmp_path):
  """A small D-MPNN through `fit` on real ESOL (random split): test RMSE well below the
  standard deviation of the test labels (what predicting the mean scores)."""
  from jmed.data import datasets
  from jmed.train.loop import fit
  recipe = configs.MOLECULE_RECIPES['esol']['dmpnn']
  cfg = dataclasses.replace(
      recipe, epochs=8, batch_size=32, data_dir=str(data_dir), progress=False,
      output_dir=str(tmp_path / 'run'), steps_per_dispatch=1,
      molecule=dataclasses.replace(recipe.molecule, features='graph'),  # no descriptors: faster
      optimizer=dataclasses.replace(recipe.optimizer, learning_rate=3e-3),
      model_kwargs={'hidden_size': 32, 'ffn_hidden': 32})
  dataset = datasets.load_dataset('esol', str(data_dir), molecule=cfg.molecule)
  summary = fit(cfg, dataset)
  baseline = float(np.std(dataset.splits['test'][1]))
  assert summary['test_rmse'] < 0.6 * baseline, (summary['test_rmse'], baseline)


def test_user_smiles_file_as_graphs_then_featurized_alike(tmp_path):
  """--data mols.csv --molecule-features graph_descriptors: packed graphs with descriptors,
  the budget and descriptor statistics in preprocessing (JSON-able), the model's
  num_descriptors in model_kwargs; a later file is featurized as training did, and one with a
  larger molecule enlarges the budget."""
  import json
  from jmed.configs import DataConfig, MoleculeConfig
  from jmed.data import moleculenet
  from jmed.data import user
  path = tmp_path / 'mols.csv'
  path.write_text('mol,y\n' + ''.join(f'{s},{i % 3}.5\n' for i, s in enumerate(SMILES * 5)))
  data = DataConfig(path=str(path), smiles_column='mol', label_column='y')
  dataset = moleculenet.load_user(data, molecule=MoleculeConfig(features='graph_descriptors'))
  preprocessing = json.loads(json.dumps(dataset.preprocessing))
  d = dataset.model_kwargs['num_descriptors']
  assert preprocessing['graph_rows'] == 16 and len(preprocessing['descriptor_mean']) == d > 100
  assert dataset.input_shape == (16 + graphs.descriptor_rows(d), graphs.WIDTH)
  cfg = configs.TrainConfig(data=data)
  rows = user.featurize(str(path), cfg, preprocessing, str(tmp_path))
  assert rows.inputs.shape == (len(SMILES) * 5, *dataset.input_shape)
  for x in dataset.splits['train'][0]:  # each training input, featurized again alike
    assert any(np.array_equal(x, r) for r in rows.inputs)
  bigger = tmp_path / 'new.csv'
  bigger.write_text('mol\nCCCCCCCCCCCCCCCCCCCC\nCCO\n')
  rows = user.featurize(str(bigger), cfg, preprocessing, str(tmp_path))
  assert rows.inputs.shape[1] == 38 + graphs.descriptor_rows(d) and rows.labels is None
