"""Multi-label training end to end on real Tox21 labels: masked sigmoid loss, per-label metrics,
best checkpoint by validation AUROC, early stopping."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import real_data_dir
from jmed import data as jdata
from jmed import tasks
from jmed.configs import OptimizerConfig, TrainConfig
from jmed.train.loop import fit

MULTILABEL = tasks.get('multilabel')

needs_tox21 = pytest.mark.skipif(not (real_data_dir() / 'moleculenet' / 'tox21.csv').exists(),
                                 reason='tox21.csv not found under the data root')


def test_masked_sigmoid_loss_ignores_missing_labels():
  logits = jnp.array([[2.0, -1.0, 0.5], [0.3, 0.0, -3.0]])
  labels = jnp.array([[1, -1, 0], [-1, -1, 1]])
  got = MULTILABEL.loss(logits, labels)
  full = optax.sigmoid_binary_cross_entropy(logits, jnp.clip(labels, 0, 1).astype(jnp.float32))
  observed = np.asarray(labels) >= 0
  np.testing.assert_allclose(got, (np.asarray(full) * observed).sum(-1) / 3, rtol=1e-6)
  grad = jax.grad(lambda z: MULTILABEL.loss(z, labels).sum())(logits)
  assert np.all(np.asarray(grad)[~observed] == 0), 'a missing label must not move its logit'
  assert np.all(np.asarray(grad)[observed] != 0)


def test_multilabel_accuracy_counts_observed_labels_only():
  logits = jnp.array([[2.0, -1.0, 0.5], [0.3, 0.0, -3.0], [1.0, 1.0, 1.0]])
  labels = jnp.array([[1, -1, 1], [-1, -1, 1], [-1, -1, -1]])
  accuracy = MULTILABEL.train_metrics(logits, labels)['accuracy']
  np.testing.assert_allclose(accuracy, [1.0, 0.0, 1.0])  # no observed label: nothing wrong


@needs_tox21
def test_tox21_multilabel_fit_learns_and_keeps_the_best_checkpoint(tmp_path):
  dataset = jdata.load_dataset('tox21', data_dir=str(real_data_dir()))
  assert dataset.task == 'multilabel' and dataset.num_classes == 12
  out = tmp_path / 'run'
  cfg = TrainConfig(model='mlp', dataset='tox21', epochs=15, batch_size=128,
                    eval_batch_size=1000, dropout_rate=0.3, early_stopping_patience=2,
                    optimizer=OptimizerConfig(name='adam', learning_rate=1e-3),
                    output_dir=str(out), progress=False)
  summary = fit(cfg, dataset=dataset)

  # Learns: MoleculeNet reports ~0.7-0.8 mean test ROC-AUC for fingerprint models on Tox21.
  assert summary['task'] == 'multilabel'
  assert summary['test_auroc'] > 0.74, summary['test_auroc']
  per_label = summary['test_auroc_per_label']
  assert len(per_label) == 12 and all(0.5 < a < 1 for a in per_label)
  np.testing.assert_allclose(np.mean(per_label), summary['test_auroc'])

  # Best checkpoint: the epoch with the highest validation AUROC, and early stopping after it.
  records = [json.loads(line) for line in open(out / 'metrics.jsonl')]
  best_epoch = max(records, key=lambda r: r['val_auroc'])['epoch']
  assert summary['best']['epoch'] == best_epoch
  assert json.load(open(out / 'best.json'))['epoch'] == best_epoch
  assert summary['stopped_early'] and len(records) == best_epoch + 3
  assert summary['steps'] < cfg.epochs * (len(dataset.splits['train'][0]) // cfg.batch_size)
  if best_epoch != records[-1]['epoch']:  # test metrics come from the best, not the last state
    assert summary['test_loss'] != summary['last_test_loss']


@needs_tox21
def test_missing_labels_are_kept_as_minus_one():
  dataset = jdata.load_dataset('tox21', data_dir=str(real_data_dir()))
  _, labels = dataset.splits['train']
  assert set(np.unique(labels)) == {-1, 0, 1}
  assert 0.1 < (labels == -1).mean() < 0.25


@needs_tox21
def test_resumed_run_remembers_its_best_checkpoint(tmp_path):
  """Stopped after 3 of 4 epochs and resumed: same best epoch and test metrics as one run."""
  dataset = jdata.load_dataset('tox21', data_dir=str(real_data_dir()))
  steps_per_epoch = len(dataset.splits['train'][0]) // 256

  def run(name, **kw):
    cfg = TrainConfig(model='mlp', dataset='tox21', epochs=4, batch_size=256,
                      eval_batch_size=1000, optimizer=OptimizerConfig(name='adam',
                                                                      learning_rate=3e-3),
                      output_dir=str(tmp_path / name), progress=False, **kw)
    return fit(cfg, dataset=dataset)

  whole = run('whole')
  run('split', max_steps=3 * steps_per_epoch)
  resumed = run('split', resume=True)
  # The best epoch falls before the interruption, so only a remembered best can match.
  assert whole['best']['epoch'] < 3, whole['best']
  assert resumed['best']['epoch'] == whole['best']['epoch']
  np.testing.assert_allclose(resumed['test_auroc'], whole['test_auroc'], rtol=1e-6)
  np.testing.assert_allclose(resumed['last_test_loss'], whole['last_test_loss'], rtol=1e-6)


@needs_tox21
def test_fresh_run_refuses_a_directory_with_another_runs_best_checkpoint(tmp_path):
  import shutil
  dataset = jdata.load_dataset('tox21', data_dir=str(real_data_dir()))
  cfg = TrainConfig(model='mlp', dataset='tox21', epochs=1, batch_size=512, max_steps=2,
                    output_dir=str(tmp_path / 'run'), progress=False)
  fit(cfg, dataset=dataset)
  shutil.rmtree(tmp_path / 'run' / 'checkpoints')  # only best/ is left of the old run
  with pytest.raises(FileExistsError, match='best already holds'):
    fit(cfg, dataset=dataset)
