#!/usr/bin/env python
"""ISBI 2012 membranes: jmed's U-Net recipe against the widely used Keras U-Net, in one run.

Both train on the same split (`jmed.data.isbi.SPLIT`: slices 0-19 train, 20-24 validation,
25-29 test), on the same number of random patches of the same size (jmed's recipe,
`configs.SEGMENTATION_RECIPES['isbi2012']`; the Keras peer gets the steps and epochs jmed
actually ran), keep the checkpoint with the best validation Dice, and are scored on the same 5
whole 512x512 test images with the same function (`jmed.metrics.segmentation_metrics`, what
jmed's Segmentation task reports).

The table's columns, mean ± sd over the seeds:
- test Dice and IoU of the cell class (class 1, the U-Net's foreground; 0 is membrane), true and
  false positives counted over all pixels of the 5 test images together; calling every pixel
  cell already scores a cell Dice of about 0.89 here, so the membrane's Dice (class 0) is shown
  too, and pixel accuracy;
- training images/s: training patches per second in steady state, compilation and tracing
  excluded for both (jmed: `fit`'s `train_images_per_sec`; Keras: its epochs timed from the end
  of the first batch, validation excluded);
- inference images/s on the whole 512x512 test images, batch 1, after a warm-up call, each
  model's own test-time inference (jmed's recipe slides windows, `eval_window`; Keras predicts
  the whole image at once).

Each model trains in its own process (TensorFlow's and XLA's thread pools in one process slow
each other down; see bench_seed_cnn.py). Images/s are only meaningful on an otherwise idle
machine. Needs TensorFlow (`pip install -e .[bench]`):

  python scripts/compare_segmentation.py --data-dir ../shared/data --seeds 0 1 2
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import common  # noqa: E402  (scripts/common.py)

METRICS = ('dice', 'iou', 'membrane_dice', 'pixel_accuracy', 'train_images_per_sec',
           'inference_images_per_sec')
HEADERS = ('test Dice (cell)', 'test IoU (cell)', 'test Dice (membrane)', 'pixel accuracy',
           'train images/s', 'inference images/s (512x512)')


# ---------------------------------------------------------------- one model, one seed


def jmed_run(data_dir: Optional[str], output_dir: str, seed: int, max_steps: int,
             features: Optional[Sequence[int]] = None) -> Dict:
  """Trains the recipe with `fit` and times its test-time inference; one result row.

  With `features` (the U-Net's widths, bottleneck last), the recipe with that network instead.
  """
  from jmed import configs
  from jmed.train.loop import fit, load_dataset
  recipe, name, model = configs.SEGMENTATION_RECIPES['isbi2012'], 'jmed_unet', 'jmed U-Net'
  if features:
    recipe = dataclasses.replace(recipe, model_kwargs={**recipe.model_kwargs,
                                                       'features': list(features)})
    widths = f'{features[0]}-{features[-1]}'
    name, model = f"{name}_{widths.replace('-', '_')}", f'{model} ({widths})'
  cfg = common.seeded(recipe, output_dir, name, seed, data_dir, max_steps=max_steps)
  dataset = load_dataset(cfg)
  summary = fit(cfg, dataset=dataset)
  rate, check = jmed_inference(cfg.output_dir, dataset)
  return {'model': model, 'seed': seed, 'dice': summary['test_dice'],
          'iou': summary['test_iou'], 'membrane_dice': summary['test_dice_per_class'][0],
          'pixel_accuracy': summary['test_pixel_accuracy'],
          'train_images_per_sec': summary['train_images_per_sec'],
          'inference_images_per_sec': rate, 'steps': summary['steps'],
          'batch_size': summary['batch_size'],
          'epochs': -(-summary['steps'] // (len(dataset.splits['train'][0]) // cfg.batch_size)),
          'patch_size': cfg.patch_size, 'inference_check': check,
          'compile_seconds': summary['compile_seconds'],
          'wall_seconds': summary['wall_seconds'], 'output_dir': cfg.output_dir}


def _jmed_forward(cfg, model, variables):
  """Whole images [n, H, W, C] -> logits [n, H, W, classes], as jmed's evaluation computes
  them: through sliding windows when the recipe sets `eval_window`."""
  import jax
  from jmed import segmentation
  apply = lambda x: model.apply(variables, x, train=False)
  if cfg.eval_window:
    stride = cfg.eval_stride or cfg.eval_window // 2
    return jax.jit(lambda x: segmentation.sliding_window(apply, x, cfg.eval_window, stride))
  return jax.jit(apply)


def jmed_inference(run_dir: str, dataset):
  """Test images/s of a finished run's best checkpoint (batch 1, after a warm-up call), and
  the metrics of that inference (a check against the run's summary)."""
  import numpy as np
  from jmed import metrics
  from jmed.train import restore
  cfg, model, variables = restore.load_run(run_dir, 'best', dataset=dataset)
  images, masks = dataset.splits['test']
  forward = _jmed_forward(cfg, model, variables)
  np.asarray(forward(np.asarray(images[:1])))  # warm-up: compilation
  start = time.perf_counter()
  logits = [np.asarray(forward(np.asarray(images[i:i + 1]))) for i in range(len(images))]
  seconds = time.perf_counter() - start
  pred = np.argmax(np.concatenate(logits), -1)
  check = metrics.segmentation_metrics(pred, np.asarray(masks), logits[0].shape[-1])
  return len(images) / seconds, {k: check[k] for k in ('dice', 'iou', 'pixel_accuracy')}


def keras_run(data_dir: Optional[str], seed: int, budget: Dict) -> Dict:
  """Trains and scores the Keras U-Net on `budget` (`keras_unet.train`'s patch_size,
  batch_size, steps, epochs and eval_every)."""
  import keras_unet
  from jmed.data import datasets, isbi
  splits = isbi.load(os.path.join(datasets.resolve_data_dir(data_dir), isbi.SUBDIR))
  model, rate, info = keras_unet.train(splits, seed=seed, **budget)
  test = keras_unet.evaluate(model, *splits['test'])
  return {'model': 'Keras U-Net (zhixuhao/unet)', 'seed': seed, 'dice': test['dice'],
          'iou': test['iou'], 'membrane_dice': test['membrane_dice'],
          'pixel_accuracy': test['pixel_accuracy'],
          'train_images_per_sec': rate, 'inference_images_per_sec': test['images_per_sec'],
          **{k: info[k] for k in ('steps', 'batch_size', 'epochs', 'patch_size',
                                  'best_val_dice', 'train_seconds')}}


# ---------------------------------------------------------------- the comparison


def run_worker(argv: List[str]) -> Dict:
  """Runs this script with `argv` (a --worker call) in a fresh process; its result row."""
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv],
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f'{argv[:2]} failed:\n{proc.stderr[-4000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_segmentation(data_dir: Optional[str], output_dir: str, seeds: Sequence[int] = (0,),
                         max_steps: int = 0, wide_features: Optional[Sequence[int]] = None,
                         keras_eval_every: int = 1) -> List[Dict]:
  """Per seed, jmed's run and then the Keras peer on the budget jmed ran (and, with
  `wide_features`, jmed's recipe with those U-Net widths); one row per run. The Keras peer
  validates every `keras_eval_every` epochs (jmed: every epoch)."""
  common_args = ['--output-dir', output_dir, '--max-steps', str(max_steps)]
  if data_dir:
    common_args += ['--data-dir', data_dir]
  runs = []
  for seed in seeds:
    ours = run_worker(['--worker', 'jmed', '--seeds', str(seed), *common_args])
    print(json.dumps(ours), flush=True)
    budget = {k: ours[k] for k in ('patch_size', 'batch_size', 'steps', 'epochs')}
    budget['eval_every'] = keras_eval_every
    peer = run_worker(['--worker', 'keras', '--seeds', str(seed), '--budget',
                       json.dumps(budget), *common_args])
    print(json.dumps(peer), flush=True)
    runs += [ours, peer]
    if wide_features:
      wide = run_worker(['--worker', 'jmed', '--seeds', str(seed), '--features',
                         *map(str, wide_features), *common_args])
      print(json.dumps(wide), flush=True)
      runs.append(wide)
  return runs


def table(runs: List[Dict]) -> str:
  """Markdown: one row per model, each column mean ± sd over its seeds."""
  models = list(dict.fromkeys(r['model'] for r in runs))
  lines = ['| model | ' + ' | '.join(HEADERS) + ' | runs |',
           '|' + '---|' * (len(HEADERS) + 2)]
  for name in models:
    mine = [r for r in runs if r['model'] == name]
    cells = [common.mean_sd([r[k] for r in mine]) for k in METRICS]
    lines.append(f'| {name} | ' + ' | '.join(cells) + f' | {len(mine)} |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=None)
  parser.add_argument('--output-dir', default='runs/compare_segmentation',
                      help="jmed's runs go to <output-dir>/jmed_unet_seed<seed>")
  parser.add_argument('--seeds', type=int, nargs='+', default=[0])
  parser.add_argument('--output', default=None, help='also write every run as JSON here')
  parser.add_argument('--features', type=int, nargs='+', default=None,
                      help="also train jmed's recipe with these U-Net widths (bottleneck last; "
                           "e.g. 64 128 256 512 1024, the Keras peer's): the frameworks' speed "
                           'on one architecture')
  parser.add_argument('--keras-eval-every', type=int, default=1,
                      help="validate the Keras peer every this many epochs (jmed: every "
                           'epoch); a validation pass (5 whole images) takes it as long as '
                           'some 25-50 training patches')
  common.add_max_steps_flag(parser)
  parser.add_argument('--worker', choices=('jmed', 'keras'), help=argparse.SUPPRESS)
  parser.add_argument('--budget', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args.worker == 'jmed':
    print(json.dumps(jmed_run(args.data_dir, args.output_dir, args.seeds[0], args.max_steps,
                              args.features)))
    return 0
  if args.worker == 'keras':
    print(json.dumps(keras_run(args.data_dir, args.seeds[0], json.loads(args.budget))))
    return 0

  runs = compare_segmentation(args.data_dir, args.output_dir, args.seeds, args.max_steps,
                              args.features, args.keras_eval_every)
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(runs, f, indent=2)
  print(table(runs))
  return 0


if __name__ == '__main__':
  sys.exit(main())
