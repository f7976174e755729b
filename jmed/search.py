"""Hyperparameter search over any `TrainConfig` field: grid, random or Bayesian (optuna TPE).

A search space is a plain dict from a dotted field path to a spec (a tuple, or a JSON list):

  {'optimizer.learning_rate': ('loguniform', 1e-4, 1e-2),  # log-uniform in [low, high]
   'dropout_rate': ('uniform', 0.0, 0.5),                  # uniform in [low, high]
   'batch_size': ('int', 16, 64),                          # integer in [low, high]
   'model_kwargs.hidden': ('choice', [[32], [64, 64]])}    # one of the listed values

Paths name fields of `TrainConfig`, of its nested configs ('optimizer.*', 'text.*',
'molecule.*', 'privacy.*') or keys of its `model_kwargs` dict.

Each trial is a normal `fit` run in `<search_dir>/trial_<NNN>` (numbered from 000) scored by its
validation `select_metric` at the best epoch (`summary['best']['value']`), minimised where the
dataset's task says lower is better (loss, RMSE, MAE, ECE) and maximised otherwise. A trial
whose `fit` raises a `jmed.errors.UserError` (a config its params made unusable, a NaN loss)
is recorded as failed with its message and the search goes on.

`search_dir` holds `search.json` (method, space, seed, base config), `results.csv` and
`results.md` (a row per trial), `best_config.json` (the best trial's full `TrainConfig`;
`jmed.configs.load_config` reads it back) and `best.json`; each trial dir also holds
`trial.json` (its number, params, status, objective, seconds) beside fit's own outputs.

Resumption: running the same search into the same `search_dir` again skips finished trials
(those with a summary.json, or recorded as failed: a failure is not retried). A trial that was
interrupted mid-way (its dir has no summary.json) is re-run with its recorded params and
`resume=True`, so it continues from its latest checkpoint (from the start when it had none).
Trial i's params are a pure function of the seed, i and the finished trials before it (random:
a numpy generator seeded by (seed, i); bayes: a fresh optuna study with a `TPESampler` seeded
from (seed, i) into which every finished trial is replayed with `study.add_trial`), so a resumed
search proposes exactly what an uninterrupted one would, and raising `trials` extends it.
"""

import csv
import dataclasses
import itertools
import json
import math
import os
import time
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from jmed import tasks
from jmed.configs import TrainConfig
from jmed.errors import ConfigError, MissingDataError, UserError
from jmed.train.loop import fit, load_dataset, write_json

METHODS = ('grid', 'random', 'bayes')
KINDS = ('choice', 'uniform', 'loguniform', 'int')
# Fields that change what `load_dataset` returns: searching them loads the data per trial.
DATA_FIELDS = ('dataset', 'data_dir', 'tfds_dir', 'text', 'molecule')
# Fields of the base config that do not change what a trial computes (checked on resumption).
_RUN_FIELDS = ('output_dir', 'resume', 'progress')


# --- Config paths -------------------------------------------------------------------------------


def override(cfg: TrainConfig, params: dict) -> TrainConfig:
  """A copy of `cfg` with each dotted field path in `params` set to its value.

  Args:
    cfg: the base config (not modified).
    params: path -> value, e.g. {'optimizer.learning_rate': 1e-3, 'model_kwargs.hidden': [64]}.

  Raises:
    ValueError: a path names no field (the message lists the valid ones at that level).
  """
  for path, value in params.items():
    cfg = _set(cfg, path.split('.'), value, path)
  return cfg


def _set(obj, parts, value, path):
  name, rest = parts[0], parts[1:]
  if isinstance(obj, dict):
    if rest:
      if not isinstance(obj.get(name), dict):
        raise ConfigError(f'Config path {path!r}: {name!r} is not a dict, so it has no field '
                         f'{rest[0]!r}.')
      value = _set(obj[name], rest, value, path)
    return {**obj, name: value}
  names = [f.name for f in dataclasses.fields(obj)]
  if name not in names:
    raise ConfigError(f'Unknown config field {name!r} in path {path!r}; valid fields of '
                     f'{type(obj).__name__}: {", ".join(names)}.')
  child = getattr(obj, name)
  if rest:
    if not (dataclasses.is_dataclass(child) or isinstance(child, dict)):
      raise ConfigError(f'Config path {path!r}: {name!r} is a plain value, not a nested config, '
                       f'so it has no field {rest[0]!r}.')
    value = _set(child, rest, value, path)
  elif dataclasses.is_dataclass(child) and not isinstance(value, type(child)):
    fields = ', '.join(f.name for f in dataclasses.fields(child))
    raise ConfigError(f'Config path {path!r} is a nested config; set its fields instead, as '
                     f"'{path}.<field>' with <field> one of: {fields}.")
  return dataclasses.replace(obj, **{name: value})


# --- Search spaces ------------------------------------------------------------------------------


def parse_space(space: dict) -> dict:
  """Checks `space` and returns it normalised: path -> [kind, ...] with JSON-typed values.

  Raises:
    ValueError: an empty space, a path that names no `TrainConfig` field, or a bad spec (the
      message names the path and what was expected).
  """
  if not isinstance(space, dict) or not space:
    raise ConfigError(f'A search space is a non-empty dict of field path -> spec, got {space!r}.')
  try:
    space = json.loads(json.dumps(space))  # tuples -> lists: what search.json stores
  except TypeError as e:
    raise ConfigError(f'Search space values must be JSON-serialisable: {e}') from None
  for path, spec in space.items():
    if path in ('output_dir', 'resume', 'select_metric'):
      raise ConfigError(f'{path!r} cannot be searched: the search sets it for every trial.'
                       if path != 'select_metric' else
                       "'select_metric' cannot be searched: trials must share one objective.")
    override(TrainConfig(), {path: _example(spec, path)})  # the path must exist
  return space


def _example(spec, path):
  """Checks one spec and returns a value it can take."""
  if not isinstance(spec, list) or not spec or spec[0] not in KINDS:
    raise ConfigError(f'Spec of {path!r} must be [kind, ...] with kind one of {KINDS}, got '
                     f'{spec!r}.')
  kind, args = spec[0], spec[1:]
  if kind == 'choice':
    if len(args) != 1 or not isinstance(args[0], list) or not args[0]:
      raise ConfigError(f"Spec of {path!r}: 'choice' takes one non-empty list of values, got "
                       f'{spec!r}.')
    return args[0][0]
  if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                               for a in args):
    raise ConfigError(f'Spec of {path!r}: {kind!r} takes two numbers (low, high), got {spec!r}.')
  low, high = args
  if not low <= high:
    raise ConfigError(f'Spec of {path!r}: low {low} must be <= high {high}.')
  if kind == 'loguniform' and low <= 0:
    raise ConfigError(f"Spec of {path!r}: 'loguniform' needs low > 0, got {low}.")
  if kind == 'int' and not (isinstance(low, int) and isinstance(high, int)):
    raise ConfigError(f"Spec of {path!r}: 'int' takes integer bounds, got {spec!r}.")
  return low


def grid_points(space: dict) -> list:
  """Every combination of the 'choice' values, the last path varying fastest.

  Raises:
    ValueError: a dim is not a 'choice' (a grid needs listed values).
  """
  space = parse_space(space)
  continuous = [p for p, spec in space.items() if spec[0] != 'choice']
  if continuous:
    raise ConfigError(f"A grid search needs ('choice', [values]) for every field; give the values "
                     f'to try for: {", ".join(continuous)}.')
  paths = list(space)
  return [dict(zip(paths, values))
          for values in itertools.product(*(space[p][1] for p in paths))]


def random_point(space: dict, seed: int, number: int) -> dict:
  """Trial `number`'s params of a random search: a numpy generator seeded by (seed, number)."""
  rng = np.random.default_rng([seed, number])
  params = {}
  for path, (kind, *args) in parse_space(space).items():
    if kind == 'choice':
      params[path] = args[0][int(rng.integers(len(args[0])))]
    elif kind == 'uniform':
      params[path] = float(rng.uniform(*args))
    elif kind == 'loguniform':
      params[path] = float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
    else:
      params[path] = int(rng.integers(args[0], args[1] + 1))
  return params


def _distributions(space: dict) -> dict:
  """optuna distributions of `space`; a 'choice' is sampled as the index of its value (optuna
  categoricals hold only scalars, and values like [64, 64] are lists)."""
  import optuna  # pylint: disable=g-import-not-at-top
  dists = {}
  for path, (kind, *args) in space.items():
    if kind == 'choice':
      dists[path] = optuna.distributions.CategoricalDistribution(list(range(len(args[0]))))
    elif kind == 'int':
      dists[path] = optuna.distributions.IntDistribution(*args)
    else:
      dists[path] = optuna.distributions.FloatDistribution(*args, log=kind == 'loguniform')
  return dists


def _to_optuna(space: dict, params: dict) -> dict:
  return {p: space[p][1].index(v) if space[p][0] == 'choice' else v for p, v in params.items()}


def _from_optuna(space: dict, params: dict) -> dict:
  return {p: space[p][1][v] if space[p][0] == 'choice' else v for p, v in params.items()}


def bayes_point(space: dict, seed: int, number: int, history: list, direction: str,
                startup_trials: int = 5) -> dict:
  """Trial `number`'s params of a Bayesian search: optuna's TPE given the finished `history`.

  A fresh in-memory study with a `TPESampler` seeded from (seed, number) gets every finished
  trial replayed (`study.add_trial`), then is asked for one point: a pure function of its
  arguments. The sampler's seed is mixed by numpy's SeedSequence: Mersenne Twisters seeded with
  nearby integers (seed + number) draw nearly equal first numbers, so their random start-up
  trials would cluster.

  Args:
    space: the search space.
    seed: the search's seed.
    number: the trial's number.
    history: finished trials, dicts with 'params', 'status' ('done' or 'failed') and 'objective'.
    direction: 'minimize' or 'maximize'.
    startup_trials: trials sampled at random before TPE models the history.
  """
  import optuna  # pylint: disable=g-import-not-at-top
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  space = parse_space(space)
  dists = _distributions(space)
  sampler_seed = int(np.random.SeedSequence([seed, number]).generate_state(1)[0])
  sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=startup_trials)
  study = optuna.create_study(direction=direction, sampler=sampler)
  for record in history:
    done = record['status'] == 'done'
    study.add_trial(optuna.trial.create_trial(
        params=_to_optuna(space, record['params']), distributions=dists,
        value=record['objective'] if done else None,
        state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.FAIL))
  return _from_optuna(space, study.ask(dists).params)


# --- The search ---------------------------------------------------------------------------------


def search(base: TrainConfig, space: dict, *, method: str = 'random',
           trials: Optional[int] = None, search_dir: str = 'runs/search', seed: int = 0,
           dataset=None, startup_trials: int = 5, progress: bool = True) -> dict:
  """Runs (or resumes) a hyperparameter search; see the module docstring.

  Args:
    base: the config every trial starts from (its output_dir and resume are set per trial).
    space: dotted field path -> spec (see the module docstring).
    method: 'grid' (every combination of 'choice' values), 'random' or 'bayes' (optuna TPE).
    trials: how many trials (in total, finished ones included); None for a grid means all its
      points (a smaller number runs its first ones).
    search_dir: where the trials and results go.
    seed: seeds the random and Bayesian samplers.
    dataset: an already loaded `jmed.data.Dataset` for `base` (default: loaded once here).
      Must be None when the space searches a field in `DATA_FIELDS`: each trial loads its own.
    startup_trials: for 'bayes', trials sampled at random before TPE takes over.
    progress: show a bar over trials with the best value so far.

  Returns:
    {'metric', 'direction', 'trials': a record per trial (number, params, status, objective,
    test, seconds, message, output_dir), 'best': the best finished record or None}.

  Raises:
    ValueError: a bad space, method or trial count, a dataset without a validation split, or a
      search_dir holding a different search.
  """
  if method not in METHODS:
    raise ConfigError(f'method must be one of {METHODS}, got {method!r}.')
  space = parse_space(space)
  points = grid_points(space) if method == 'grid' else None
  if trials is None:
    if points is None:
      raise ConfigError(f'A {method} search needs a number of trials.')
    trials = len(points)
  if trials < 1:
    raise ConfigError(f'trials must be >= 1, got {trials}.')
  if points is not None:
    trials = min(trials, len(points))
  per_trial_data = any(p.split('.')[0] in DATA_FIELDS for p in space)
  if per_trial_data and dataset is not None:
    raise ConfigError(f'The space searches data fields ({", ".join(DATA_FIELDS)}), so each trial '
                     'loads its own dataset: pass dataset=None.')
  # The base config's dataset tells the task, hence the objective and its direction (with data
  # fields searched, each trial then loads its own).
  base_dataset = load_dataset(base) if dataset is None else dataset
  if 'validation' not in base_dataset.splits:
    raise ConfigError(f'A search scores trials on the validation split, which dataset '
                     f'{base_dataset.name!r} lacks (splits: {", ".join(base_dataset.splits)}).')
  dataset = None if per_trial_data else base_dataset
  direction = objective_direction(base, base_dataset.task)
  header = {'method': method, 'space': space, 'seed': seed,
            'base_config': dataclasses.asdict(base)}
  if method == 'bayes':
    header['startup_trials'] = startup_trials
  os.makedirs(search_dir, exist_ok=True)
  _check_or_write_header(os.path.join(search_dir, 'search.json'), header)

  records = []
  bar = tqdm(total=trials, unit='trial', disable=not progress, dynamic_ncols=True)
  try:
    for number in range(trials):
      trial_dir = os.path.join(search_dir, f'trial_{number:03d}')
      record = _read_trial(trial_dir, direction)
      if record is None or record['status'] == 'running':
        if record is not None:  # interrupted: same params, continue from its checkpoint
          params, resume = record['params'], True
        elif method == 'grid':
          params, resume = points[number], False
        elif method == 'random':
          params, resume = random_point(space, seed, number), False
        else:
          finished = [r for r in records if r['status'] in ('done', 'failed')]
          params = bayes_point(space, seed, number, finished, direction, startup_trials)
          resume = False
        record = {'number': number, 'params': params, 'status': 'running', 'objective': None,
                  'metric': None, 'test': None, 'seconds': None, 'message': '',
                  'output_dir': trial_dir}
        records.append(record)
        _run_trial(record, override(base, params), None if per_trial_data else dataset,
                   resume, direction)
      else:
        records.append(record)
      bar.update(1)
      best = _best(records, direction)
      if best is not None:
        bar.set_postfix(best=f"{best['objective']:.4f}", trial=best['number'])
  finally:
    bar.close()
    _write_results(search_dir, base, records, direction)
  return {'metric': _metric_name(records), 'direction': direction, 'trials': records,
          'best': _best(records, direction)}


def objective_direction(base: TrainConfig, task) -> str:
  """'minimize' or 'maximize': how the task of the searched data orders the validation metric
  `base.select_metric` ('auto' resolved by the task: RMSE for regression, minimised)."""
  task = tasks.get(task)
  return 'minimize' if task.lower_is_better(task.select_metric(base.select_metric)) else (
      'maximize')


def _check_or_write_header(path: str, header: dict) -> None:
  """Writes search.json, or checks that the one there describes the same search."""
  if not os.path.exists(path):
    write_json(path, header)
    return
  with open(path) as f:
    old = json.load(f)
  for key in ('method', 'space', 'seed', 'startup_trials'):
    # Compared as JSON text: the order of the space orders grid points and random draws.
    if json.dumps(old.get(key)) != json.dumps(header.get(key)):
      raise ConfigError(f'{path} holds another search ({key} {old.get(key)!r}, not '
                       f'{header.get(key)!r}); resume it with the same {key} or choose another '
                       'search_dir.')
  changed = sorted(k for k in set(old['base_config']) | set(header['base_config'])
                   if k not in _RUN_FIELDS
                   and old['base_config'].get(k) != header['base_config'].get(k))
  if changed:
    raise ConfigError(f'{path} holds a search from another base config (it differs in: '
                     f'{", ".join(changed)}); resume it with the same training flags or choose '
                     'another search_dir.')


def _read_trial(trial_dir: str, direction: str) -> Optional[dict]:
  """The record of a trial that has started (None if it never did); status 'running' if it was
  interrupted. A summary.json means it finished, whatever trial.json says."""
  path = os.path.join(trial_dir, 'trial.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    record = json.load(f)
  summary_path = os.path.join(trial_dir, 'summary.json')
  if record['status'] == 'running' and os.path.exists(summary_path):
    with open(summary_path) as f:
      _score(record, json.load(f), direction)
  return record


def _run_trial(record: dict, cfg: TrainConfig, dataset, resume: bool, direction: str) -> None:
  """Trains one trial and fills in its record; trial.json is written before and after."""
  cfg = dataclasses.replace(cfg, output_dir=record['output_dir'], resume=resume)
  os.makedirs(cfg.output_dir, exist_ok=True)
  path = os.path.join(cfg.output_dir, 'trial.json')
  write_json(path, record)
  start = time.perf_counter()
  try:
    summary = fit(cfg, dataset)
  except UserError as e:  # a config the trial's params made unusable, a NaN loss, ...
    if isinstance(e, MissingDataError):  # missing data: not the params' fault
      raise
    record.update(status='failed', message=f'{type(e).__name__}: {e}')
  else:
    _score(record, summary, direction)
  record['seconds'] = time.perf_counter() - start
  write_json(path, record)


def _score(record: dict, summary: dict, direction: str) -> None:
  """Sets a trial's status, objective and test metric from its fit summary."""
  best = summary.get('best')
  if not best:
    record.update(status='failed', message='no finite validation metric: nothing to score')
    return
  name = best['metric'][len('val_'):]
  record.update(status='done', objective=float(best['value']), metric=best['metric'],
                test=summary.get(f'test_{name}'), message='')
  if record.get('seconds') is None:
    record['seconds'] = summary.get('wall_seconds')


def _best(records: list, direction: str) -> Optional[dict]:
  done = [r for r in records if r['status'] == 'done']
  if not done:
    return None
  key = (lambda r: r['objective']) if direction == 'minimize' else (lambda r: -r['objective'])
  return min(done, key=key)  # the earliest of equal objectives


def _metric_name(records: list) -> Optional[str]:
  return next((r['metric'] for r in records if r.get('metric')), None)


# --- Outputs ------------------------------------------------------------------------------------



def _columns(records: list):
  metric = _metric_name(records) or 'objective'
  test = 'test_' + metric[len('val_'):] if metric.startswith('val_') else 'test'
  paths = list(dict.fromkeys(p for r in records for p in r['params']))
  return metric, test, paths


def _cell(value) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return f'{value:.6g}'
  if isinstance(value, (list, dict)):
    return json.dumps(value)
  return str(value)


def results_rows(records: list) -> list:
  """Table rows (dicts of strings): trial, one column per param, objective, test, status,
  seconds, message."""
  metric, test, paths = _columns(records)
  rows = []
  for r in records:
    row = {'trial': str(r['number'])}
    row.update({p: _cell(r['params'].get(p)) for p in paths})
    row.update({metric: _cell(r['objective']), test: _cell(r['test']), 'status': r['status'],
                'seconds': '' if r['seconds'] is None else f"{r['seconds']:.1f}",
                'message': r['message']})
    rows.append(row)
  return rows


def format_table(records: list, best: Optional[dict] = None) -> str:
  """A Markdown table of the trials; the best one's number is starred."""
  rows = results_rows(records)
  if not rows:
    return '(no trials)'
  for row, r in zip(rows, records):
    if best is not None and r['number'] == best['number']:
      row['trial'] += ' *'
    if len(row['message']) > 80:
      row['message'] = row['message'][:77] + '...'
  names = list(rows[0])
  lines = ['| ' + ' | '.join(names) + ' |', '|' + '|'.join('---' for _ in names) + '|']
  lines += ['| ' + ' | '.join(row[n].replace('|', '\\|') for n in names) + ' |' for row in rows]
  return '\n'.join(lines)


def _write_results(search_dir: str, base: TrainConfig, records: list, direction: str) -> None:
  """results.csv, results.md, and (once a trial has finished) best.json and best_config.json."""
  rows = results_rows(records)
  with open(os.path.join(search_dir, 'results.csv'), 'w', newline='') as f:
    if rows:
      writer = csv.DictWriter(f, fieldnames=list(rows[0]))
      writer.writeheader()
      writer.writerows(rows)
  best = _best(records, direction)
  metric = _metric_name(records)
  with open(os.path.join(search_dir, 'results.md'), 'w') as f:
    f.write(f'{len(records)} trials, {direction} {metric or "the validation metric"}; '
            '* marks the best.\n\n')
    f.write(format_table(records, best) + '\n')
  if best is not None:
    cfg = dataclasses.replace(override(base, best['params']), output_dir=best['output_dir'],
                              resume=False)
    write_json(os.path.join(search_dir, 'best_config.json'), dataclasses.asdict(cfg))
    write_json(os.path.join(search_dir, 'best.json'), {**best, 'direction': direction})
