"""Orbax checkpoints: an interrupted run resumed from its latest checkpoint equals an
uninterrupted one."""

import json

import jax
import numpy as np

from conftest import subset
from jmed.configs import OptimizerConfig, TrainConfig
from jmed.models import SeedCNN
from jmed.optim import make_optimizer
from jmed.train import checkpoint
from jmed.train.loop import fit
from jmed.train.state import create_train_state


def _cfg(out, **kw):
  # 320 images / 32 = 10 steps per epoch; 3 steps per dispatch so dispatches straddle epochs.
  return TrainConfig(dataset='mnist', epochs=2, batch_size=32, eval_batch_size=50,
                     optimizer=OptimizerConfig(name='sgd', learning_rate=0.05, momentum=0.9),
                     dropout_rate=0.2, steps_per_dispatch=3, checkpoint_every=4,
                     output_dir=str(out), progress=False, **kw)


def _final_params(out):
  tx = make_optimizer(OptimizerConfig(momentum=0.9))
  template = create_train_state(SeedCNN(dropout_rate=0.2), tx, np.zeros((1, 28, 28, 1)), 0)
  manager = checkpoint.make_manager(str(out / 'checkpoints'))
  state = checkpoint.restore_latest(manager, template)
  return int(state.step), state


def test_resume_mid_epoch_equals_uninterrupted_run(tmp_path, mnist):
  small = subset(mnist, 320, 100)
  full = fit(_cfg(tmp_path / 'full'), dataset=small)

  interrupted = tmp_path / 'interrupted'
  fit(_cfg(interrupted, max_steps=13), dataset=small)  # stops inside epoch 1
  step, _ = _final_params(interrupted)
  assert step == 13
  with open(interrupted / 'metrics.jsonl', 'a') as f:  # logged, but its checkpoint was lost
    f.write(json.dumps({'epoch': 1, 'step': 16}) + '\n')
  resumed = fit(_cfg(interrupted, resume=True), dataset=small)

  assert resumed['steps'] == full['steps'] == 20
  step_a, a = _final_params(tmp_path / 'full')
  step_b, b = _final_params(interrupted)
  assert step_a == step_b == 20
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state)), jax.tree.leaves((b.params,
                                                                              b.opt_state))):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(jax.random.key_data(a.rng), jax.random.key_data(b.rng))
  assert resumed['test_loss'] == full['test_loss']
  # The metrics log of the resumed run keeps the lines written up to the restored step.
  lines = [json.loads(l) for l in (interrupted / 'metrics.jsonl').read_text().splitlines()]
  assert [(l['epoch'], l['step']) for l in lines] == [(0, 10), (1, 13), (1, 20)]


def test_checkpoints_every_n_steps(tmp_path, mnist):
  fit(_cfg(tmp_path, max_steps=9), dataset=subset(mnist, 320, 50))
  manager = checkpoint.make_manager(str(tmp_path / 'checkpoints'), keep=10)
  # Saved at dispatch ends crossing multiples of 4 (steps 6, 9) and at the stop (9); keep=2.
  assert manager.all_steps() == [6, 9]
