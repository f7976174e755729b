"""--resume continues only the run in output_dir: same config (but for the run's length, paths,
saving and evaluation knobs), or a ConfigError before anything is written."""

import dataclasses
import json
import os
import shutil

import pytest

from jmed.configs import OptimizerConfig, TrainConfig
from jmed.errors import ConfigError
from jmed.train import loop


def _config(data_dir, output_dir, **changes) -> TrainConfig:
  cfg = TrainConfig(model='mlp', dataset='metabric', data_dir=str(data_dir), epochs=1,
                    batch_size=256, eval_batch_size=400, model_kwargs={'hidden': [8]},
                    optimizer=OptimizerConfig(name='adam', learning_rate=1e-3),
                    steps_per_dispatch=1, output_dir=str(output_dir), progress=False)
  return dataclasses.replace(cfg, **changes)


def _snapshot(run_dir) -> dict:
  """Path -> (size, mtime) of every file under `run_dir`."""
  out = {}
  for root, _, names in os.walk(run_dir):
    for name in names:
      stat = os.stat(os.path.join(root, name))
      out[os.path.join(root, name)] = (stat.st_size, stat.st_mtime_ns)
  return out


@pytest.fixture(scope='module')
def run(data_dir, tmp_path_factory):
  """A finished 1-epoch run: (its directory, its summary)."""
  out = tmp_path_factory.mktemp('resume') / 'run'
  return out, loop.fit(_config(data_dir, out))


def test_resume_with_another_config_is_refused_before_writing(run, data_dir):
  out, _ = run
  before = _snapshot(out)
  config = (out / 'config.json').read_bytes()
  cfg = _config(data_dir, out, resume=True, batch_size=64,
                optimizer=OptimizerConfig(name='adam', learning_rate=0.5))
  with pytest.raises(ConfigError) as error:
    loop.fit(cfg)
  message = str(error.value)
  assert 'optimizer.learning_rate: 0.001 -> 0.5' in message
  assert 'batch_size: 256 -> 64' in message
  assert 'epochs' not in message.split(' in: ')[1].split('. ')[0]  # only the two fields
  assert (out / 'config.json').read_bytes() == config
  assert _snapshot(out) == before


def test_resume_with_more_epochs_continues(run, data_dir, tmp_path):
  out, first = run
  copy = tmp_path / 'run'
  shutil.copytree(out, copy)
  summary = loop.fit(_config(data_dir, copy, resume=True, epochs=2, eval_batch_size=200))
  assert summary['steps'] == 2 * first['steps']
  saved = json.loads((copy / 'config.json').read_text())
  assert (saved['epochs'], saved['eval_batch_size'], saved['resume']) == (2, 200, True)
  records = [json.loads(line) for line in (copy / 'metrics.jsonl').read_text().splitlines()]
  assert [r['epoch'] for r in records] == [0, 1]
  assert (copy / 'curves.png').exists()


def test_resume_without_a_checkpoint_starts_from_scratch(tmp_path, data_dir):
  """One command both starts a run and continues it (preemptible TPUs, SLURM requeues): with
  no checkpoint yet, resume=True trains from step 0 whatever config.json says."""
  started = tmp_path / 'started'  # config.json, but stopped before its first checkpoint
  started.mkdir()
  loop.write_json(str(started / 'config.json'),
                  dataclasses.asdict(_config(data_dir, started, batch_size=64)))
  summary = loop.fit(_config(data_dir, started, resume=True))
  assert summary['steps'] > 0
  saved = json.loads((started / 'config.json').read_text())
  assert saved['batch_size'] == _config(data_dir, started).batch_size


def _fake_run(run_dir, saved: dict) -> None:
  """A run directory with `saved` as its config.json and an (empty) step-4 checkpoint."""
  (run_dir / 'checkpoints' / '4').mkdir(parents=True)
  loop.write_json(str(run_dir / 'config.json'), saved)


def test_check_resume_compares_as_json_and_reads_old_configs(tmp_path):
  cfg = TrainConfig(output_dir=str(tmp_path), model_kwargs={'hidden': (64, 32)}, resume=True)
  saved = json.loads(json.dumps(dataclasses.asdict(cfg)))
  del saved['data']  # a config.json written before DataConfig existed: its defaults
  saved.update(resume=False, epochs=50, max_steps=7, data_dir='/elsewhere', progress=False)
  _fake_run(tmp_path, saved)
  loop.check_resume(cfg)  # tuples equal lists; allowed fields may differ

  saved['data'] = {'path': 'old.csv'}
  saved['text'] = dict(saved['text'], max_length=64)
  saved['model_kwargs'] = {'hidden': [64]}
  loop.write_json(str(tmp_path / 'config.json'), saved)
  with pytest.raises(ConfigError) as error:
    loop.check_resume(cfg)
  message = str(error.value)
  for text in ("text.max_length: 64 -> 256", "data.path: 'old.csv' -> ''",
               "model_kwargs: {'hidden': [64]} -> {'hidden': [64, 32]}"):
    assert text in message


def test_check_resume_compares_the_ensemble(tmp_path):
  cfg = TrainConfig(output_dir=str(tmp_path), resume=True)
  ensemble = loop.Ensemble(members=3)
  saved = json.loads(json.dumps(dataclasses.asdict(cfg)))
  saved.update(ensemble.describe(cfg.seed))
  _fake_run(tmp_path, saved)
  loop.check_resume(cfg, ensemble)
  with pytest.raises(ConfigError, match='members: 3 -> 2'):
    loop.check_resume(cfg, loop.Ensemble(members=2))
