"""A run's logs: metrics.jsonl, TensorBoard events (tensorboardX) and curves.png."""

import dataclasses
import glob
import json
import struct
import subprocess
import sys

import pytest

from conftest import REPO
from jmed import configs, plots
from jmed.configs import OptimizerConfig, TrainConfig
from jmed.optim import make_schedule
from jmed.train import logs, loop
from jmed.train.loop import fit


def read_events(logdir) -> list:
  """(step, tag, value) of every scalar in the TensorBoard event files under `logdir`.

  Event files are TFRecords: a uint64 length, its masked CRC, the `Event` proto, its CRC.
  """
  from tensorboardX.proto import event_pb2
  scalars = []
  for path in sorted(glob.glob(f'{logdir}/events.out.tfevents.*')):
    with open(path, 'rb') as f:
      data = f.read()
    i = 0
    while i < len(data):
      (n,) = struct.unpack('<Q', data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      i += 12 + n + 4
      scalars += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
  return scalars


def test_scalars_name_every_number_of_a_record():
  record = {'epoch': 0, 'step': 10, 'train_loss': 0.5, 'train_accuracy': 0.75,
            'train_clipped_fraction': 0.2, 'epoch_seconds': 1.0, 'images_per_sec': 320.0,
            'val_auroc': 0.8, 'val_loss': 0.6, 'val_auroc_per_label': [0.7, 0.9],
            'val_dice': None, 'epsilon': 1.5, 'best_epoch': 0}
  assert logs.scalars(record, learning_rate=0.01) == {
      'train/loss': 0.5, 'train/accuracy': 0.75, 'train/clipped_fraction': 0.2,
      'images_per_sec': 320.0, 'val/auroc': 0.8, 'val/loss': 0.6, 'privacy/epsilon': 1.5,
      'learning_rate': 0.01}
  ensemble = {'epoch': 0, 'step': 4, 'train_loss': [0.5, 0.7], 'val_loss': 0.4}
  assert logs.scalars(ensemble) == {'train/loss/member_0': 0.5, 'train/loss/member_1': 0.7,
                                    'val/loss': 0.4}


def test_tensorboard_log_writes_scalars_at_their_step(tmp_path):
  schedule = make_schedule(OptimizerConfig(learning_rate=0.1, schedule='cosine'), 20)
  log = logs.TensorBoardLog(str(tmp_path / 'tb'), schedule)
  log.write({'epoch': 0, 'step': 10, 'train_loss': 2.0, 'val_auroc': 0.6})
  log.write({'epoch': 1, 'step': 20, 'train_loss': 1.0, 'val_auroc': 0.7})
  log.close()
  events = {(step, tag): value for step, tag, value in read_events(tmp_path / 'tb')}
  assert events[(10, 'train/loss')] == 2.0 and events[(20, 'train/loss')] == 1.0
  assert events[(20, 'val/auroc')] == pytest.approx(0.7)
  assert events[(10, 'learning_rate')] == pytest.approx(0.05)  # half-way down the cosine
  assert events[(20, 'learning_rate')] == pytest.approx(0.0)
  nothing = logs.TensorBoardLog(None, schedule)  # processes other than the primary
  nothing.write({'epoch': 0, 'step': 1, 'train_loss': 1.0})
  nothing.close()


def test_metrics_log_drops_records_past_the_restored_step(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  log = logs.MetricsLog(path)
  for step in (5, 10, 15):
    log.write({'epoch': step // 5 - 1, 'step': step})
  log.close()
  logs.MetricsLog(path, resumed_step=10).close()
  assert [r['step'] for r in logs.read_records(path)] == [5, 10]
  assert logs.read_records(str(tmp_path / 'missing.jsonl')) == []


def test_training_curves_png(tmp_path):
  records = [{'epoch': e, 'step': 4 * e + 4, 'train_loss': [1.0 - e / 10, 1.1 - e / 10],
              'val_loss': 0.9 - e / 20, 'val_auroc': 0.6 + e / 20, 'best_epoch': e}
             for e in range(3)]
  for metric, path in (('auroc', tmp_path / 'a.png'), ('loss', tmp_path / 'b.png'),
                       ('auroc', tmp_path / 'empty.png')):
    plots.training_curves(records if path.name != 'empty.png' else [], str(path), metric)
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  with pytest.raises(ValueError, match='png'):
    plots.training_curves(records, str(tmp_path / 'a.pdf'), 'auroc')


def test_logs_module_imports_no_tensorboardx_or_matplotlib():
  code = ('import sys, jmed.train.logs, jmed.train.loop, jmed.models\n'
          'print(sorted({m.split(".")[0] for m in sys.modules} & {"tensorboardX", "matplotlib"}))')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=300, cwd=REPO, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().splitlines()[-1] == '[]'


def test_fit_writes_tensorboard_events_curves_and_preprocessing(tmp_path, data_dir):
  """Per epoch: train loss and metrics, validation metrics, learning rate, examples/s; a
  dataset's preprocessing and split go to preprocessing.json and summary.json."""
  out = tmp_path / 'run'
  cfg = TrainConfig(model='mlp', dataset='metabric', data_dir=str(data_dir), epochs=2,
                    batch_size=256, eval_batch_size=400, model_kwargs={'hidden': [8]},
                    optimizer=OptimizerConfig(name='adam', learning_rate=1e-3,
                                              schedule='warmup_cosine', warmup_steps=2),
                    steps_per_dispatch=1, output_dir=str(out), progress=False)
  split = {'rule': 'random', 'seed': 0, 'sizes': {'train': 1}}
  dataset = dataclasses.replace(loop.load_dataset(cfg), split_info=split,
                                preprocessing={'source': 'deepsurv', 'mean': [0.5]})
  summary = fit(cfg, dataset)
  assert summary['split'] == split
  saved = json.loads((out / 'preprocessing.json').read_text())
  assert saved['dataset'] == {'name': 'metabric', 'task': 'survival', 'num_classes': 1,
                              'input_shape': [9], 'model_kwargs': {}}
  assert (saved['task_fields'], saved['source'], saved['mean']) == ({}, 'deepsurv', [0.5])
  steps = summary['steps']
  events = {(step, tag): value for step, tag, value in read_events(out / 'tensorboard')}
  tags = {tag for _, tag in events}
  assert {'train/loss', 'val/loss', 'val/c_index', 'learning_rate', 'images_per_sec'} <= tags
  records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records] == [steps // 2, steps]
  for record in records:
    assert events[(record['step'], 'train/loss')] == pytest.approx(record['train_loss'])
    assert events[(record['step'], 'val/c_index')] == pytest.approx(record['val_c_index'])
  schedule = make_schedule(cfg.optimizer, steps)
  assert events[(steps // 2, 'learning_rate')] == pytest.approx(float(schedule(steps // 2)))
  assert (out / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_a_data_path_loads_the_users_file(monkeypatch):
  from jmed.data import user
  monkeypatch.setattr(user, 'load', lambda cfg: ('user', cfg.data.path))
  cfg = TrainConfig(data=configs.DataConfig(path='patients.csv'))
  assert loop.load_dataset(cfg) == ('user', 'patients.csv')
