#!/usr/bin/env python
"""Uncertainty and calibration on a test split: one model vs a deep ensemble vs MC dropout.

Trains a K-member deep ensemble in one program (`jmed.train.ensemble.fit_ensemble`, members
vmapped), then evaluates on the test split: member 0 alone, the mean over members of each
member alone, the ensemble (mean probabilities) and MC dropout of member 0 (T stochastic
passes, BatchNorm in inference mode). Every row comes from one state: the ensemble at the
checkpoint validation picked (best/, the state summary.json's test_* metrics and reliability.png
describe), or its last state when the dataset has no validation split. Writes into
--output-dir: fit_ensemble's files (config, metrics.jsonl, checkpoints, summary.json,
reliability.png), comparison.json, comparison.md and one reliability diagram per method
(reliability_<method>.png). Needs a task that predicts class probabilities (binary,
multiclass or multilabel).

  python scripts/uncertainty.py --data-dir ../shared/data --members 5 --epochs 5
"""

import argparse
import json
import os
import sys

import jax
import numpy as np

from jmed import data as jdata
from jmed import plots, tasks, uncertainty
from jmed.configs import OptimizerConfig, TrainConfig
from jmed.errors import ConfigError, UserError
from jmed.train import checkpoint, ensemble, parallel

COLUMNS = ('accuracy', 'auroc', 'ece', 'nll', 'mean_mutual_information')


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--dataset', default='pneumoniamnist')
  parser.add_argument('--data-dir', default=None, help='local data root (default: '
                      '$JMED_DATA_DIR, else download)')
  parser.add_argument('--model', default='seed_cnn')
  parser.add_argument('--members', type=int, default=5, help='ensemble size K')
  parser.add_argument('--epochs', type=int, default=5)
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--eval-batch-size', type=int, default=256)
  parser.add_argument('--optimizer', default='sgd')
  parser.add_argument('--learning-rate', type=float, default=0.01)
  parser.add_argument('--momentum', type=float, default=0.0)
  parser.add_argument('--dropout-rate', type=float, default=0.3,
                      help='dropout of every member (MC dropout needs > 0)')
  parser.add_argument('--mc-samples', type=int, default=30, help='MC dropout passes T')
  parser.add_argument('--seed', type=int, default=0, help='member m gets seed + m')
  parser.add_argument('--independent-shuffles', action='store_true',
                      help='each member its own epoch order (default: shared batches)')
  parser.add_argument('--output-dir', default='runs/uncertainty_pneumoniamnist')
  parser.add_argument('--resume', action='store_true',
                      help='continue the ensemble run in --output-dir from its last checkpoint')
  parser.add_argument('--progress', default=True, action=argparse.BooleanOptionalAction)
  return parser.parse_args(argv)


def _markdown(rows) -> str:
  cell = lambda v: '-' if v is None else f'{v:.4f}'  # noqa: E731
  lines = ['| method | ' + ' | '.join(COLUMNS) + ' |', '|---' * (len(COLUMNS) + 1) + '|']
  lines += [f"| {r['method']} | " + ' | '.join(cell(r.get(c)) for c in COLUMNS) + ' |'
            for r in rows]
  return '\n'.join(lines)


def _reported_state(state, summary, output_dir: str):
  """The ensemble state summary.json's test_* metrics describe: the best checkpoint when
  validation picked one, else `state` (the last)."""
  if not summary.get('best'):
    return state
  with checkpoint.make_manager(os.path.join(output_dir, 'best'), 1) as manager:
    return checkpoint.restore_latest(manager, state)


def main(argv=None) -> int:
  args = parse_args(argv)
  cfg = TrainConfig(
      model=args.model, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
      batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, seed=args.seed,
      optimizer=OptimizerConfig(name=args.optimizer, learning_rate=args.learning_rate,
                                momentum=args.momentum),
      dropout_rate=args.dropout_rate, output_dir=args.output_dir, progress=args.progress,
      resume=args.resume)
  try:
    dataset = jdata.load_dataset(cfg.dataset, data_dir=cfg.data_dir)
    task = tasks.get(dataset.task)
    if not task.probabilistic:
      raise ConfigError(f'dataset {dataset.name!r} has task {task.name!r}, whose predictions are '
                        'not class probabilities: uncertainty and calibration apply to binary, '
                        'multiclass and multilabel tasks.')
    state, summary = ensemble.fit_ensemble(cfg, args.members, dataset,
                                           independent_shuffles=args.independent_shuffles)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  state = _reported_state(state, summary, cfg.output_dir)
  images, labels = dataset.splits['test']
  eval_fn = jax.jit(lambda s, b: ensemble.ensemble_eval_step(s, b, task=task))
  member_probs = ensemble.ensemble_predict(state, eval_fn, images, labels,
                                           cfg.eval_batch_size, parallel.make_mesh())
  single = ensemble.member_state(state, 0)
  mc_probs = uncertainty.mc_dropout_predict(
      single.apply_fn, single.variables, images, jax.random.key(args.seed), args.mc_samples,
      task, cfg.eval_batch_size)
  stacks = {'single': member_probs[:1], 'ensemble': member_probs, 'mc_dropout': mc_probs}
  names = {'single': 'single model (member 0)',
           'ensemble': f'deep ensemble ({args.members} members)',
           'mc_dropout': f'MC dropout (member 0, {args.mc_samples} samples)'}
  rows = [{'method': 'single model (mean of members)',
           **uncertainty.ensemble_metrics(task, member_probs, labels)['mean_member']}]
  for key, stack in stacks.items():
    probs = stack.mean(0)
    row = {'method': names[key], **uncertainty.prediction_metrics(probs, labels, task)}
    if len(stack) > 1:
      row['mean_mutual_information'] = float(
          np.mean(uncertainty.ensemble_summary(stack, task)['mutual_information']))
    plots.reliability_diagram(*task.calibration_inputs(probs, labels),
                              os.path.join(args.output_dir, f'reliability_{key}.png'),
                              title=f'{names[key]}\n{dataset.name} test')
    rows.append(row)
  state_name = (f"best checkpoint, epoch {summary['best']['epoch']}" if summary.get('best')
                else 'last state')
  with open(os.path.join(args.output_dir, 'comparison.json'), 'w') as f:
    json.dump({'args': vars(args), 'state': state_name, 'rows': rows,
               'wall_seconds': summary['wall_seconds']}, f, indent=2)
  table = _markdown(rows)
  with open(os.path.join(args.output_dir, 'comparison.md'), 'w') as f:
    f.write(f'{args.members}-member {args.model} ensemble on {dataset.name} (test split, '
            f'{args.epochs} epochs, {state_name})\n\n{table}\n')
  print(table)
  return 0


if __name__ == '__main__':
  sys.exit(main())
