#!/usr/bin/env python
"""Explain a trained jmed model's predictions on a few test examples, as PNG files.

Images: one PNG per image with the input and heat maps of vanilla saliency, SmoothGrad,
integrated gradients (|attribution|, zero baseline) and Grad-CAM, plus ig_completeness.json
(sum of IG attributions vs f(x) - f(baseline) per image). Transformers on token ids: one PNG
per document with the attention-rollout relevance of each token and each layer's attention
(averaged over heads), plus attention.json. Explained score: the logit of the predicted class
(or of the label, --target label), so the run's task must predict class probabilities (binary,
multiclass or multilabel; for multilabel, the predicted class is the most probable label).

  python scripts/train.py --data-dir ../shared/data --output-dir runs/seed_cnn
  python scripts/explain.py --run-dir runs/seed_cnn --output-dir runs/seed_cnn/explain

Without --run-dir a seed CNN is first trained briefly on PneumoniaMNIST (the seed recipe,
--train-epochs / --train-steps) into <output-dir>/seed_cnn_run, or reused from there.
"""

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jmed import explain
from jmed import models
from jmed import tasks
from jmed.configs import TrainConfig
from jmed.errors import ConfigError, UserError
from jmed.train.loop import fit
from jmed.train.restore import load_run, load_run_dataset, read_config


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--run-dir', help='A finished scripts/train.py run (its --output-dir).')
  parser.add_argument('--which', default='best', choices=('best', 'latest'),
                      help='Checkpoint to explain (best falls back to latest if absent).')
  parser.add_argument('--data-dir', help='Data root (default: the run\'s, else $JMED_DATA_DIR).')
  parser.add_argument('--output-dir', default='runs/explain', help='Where PNGs and JSON go.')
  parser.add_argument('--split', default='test', help='Split whose first examples are explained.')
  parser.add_argument('--num-images', type=int, default=4, help='Examples to explain.')
  parser.add_argument('--target', default='predicted', choices=('predicted', 'label'),
                      help='Class whose logit is explained.')
  parser.add_argument('--smoothgrad-samples', type=int, default=32, help='Noisy copies.')
  parser.add_argument('--smoothgrad-sigma', type=float, default=0.15,
                      help='SmoothGrad noise std as a fraction of the [0, 1] image range.')
  parser.add_argument('--ig-steps', type=int, default=128,
                      help='Integrated-gradients steps (128: gaps < 1%% on the seed CNN).')
  parser.add_argument('--ig-method', default='trapezoid', choices=explain.gradients.IG_METHODS)
  parser.add_argument('--gradcam-layer', help='Submodule path of the Grad-CAM feature map '
                      '(default: the last one with a 4-D output).')
  parser.add_argument('--max-tokens', type=int, default=48, help='Tokens shown per document.')
  parser.add_argument('--seed', type=int, default=0, help='SmoothGrad noise seed.')
  parser.add_argument('--train-epochs', type=int, default=1, help='Without --run-dir: epochs.')
  parser.add_argument('--train-steps', type=int, default=0,
                      help='Without --run-dir: stop after this many steps (0: all epochs).')
  return parser.parse_args(argv)


def train_seed_cnn(args) -> str:
  """Trains (or reuses) a seed CNN on PneumoniaMNIST; returns its run directory."""
  run_dir = os.path.join(args.output_dir, 'seed_cnn_run')
  if os.path.exists(os.path.join(run_dir, 'summary.json')):
    print(f'reusing the finished run in {run_dir}')
    return run_dir
  cfg = TrainConfig(model='seed_cnn', dataset='pneumoniamnist', data_dir=args.data_dir,
                    epochs=args.train_epochs, max_steps=args.train_steps, output_dir=run_dir,
                    progress=False)
  summary = fit(cfg)
  print(f'trained {cfg.model} for {summary["steps"]} steps: test AUROC '
        f'{summary.get("test_auroc", float("nan")):.3f}')
  return run_dir


def explain_images(args, model, variables, images, labels, task) -> dict:
  """Writes one overlay PNG per image; returns the IG completeness report."""
  apply_fn = model.apply
  logits = np.asarray(jax.jit(apply_fn)(variables, images))
  probs = np.asarray(task.predict(logits))  # softmax rows, or label probabilities (multilabel)
  predicted = logits.argmax(-1)
  targets = predicted if args.target == 'predicted' else labels
  if np.ndim(targets) != 1:
    raise ConfigError('--target label needs single-label classes; use --target predicted.')
  targets = jnp.asarray(targets, jnp.int32)
  sal = explain.saliency(apply_fn, variables, images, targets)
  smooth = explain.smoothgrad(apply_fn, variables, images, targets, key=jax.random.key(args.seed),
                              num_samples=args.smoothgrad_samples, sigma=args.smoothgrad_sigma,
                              value_range=(0.0, 1.0))
  ig, report = explain.integrated_gradients(apply_fn, variables, images, targets,
                                            steps=args.ig_steps, method=args.ig_method)
  maps = {'saliency': explain.normalize_map(sal), 'SmoothGrad': explain.normalize_map(smooth),
          'integrated gradients': explain.normalize_map(ig)}
  layers = explain.feature_layers(apply_fn, variables, images)
  if layers:
    layer = args.gradcam_layer or list(layers)[-1]
    maps[f'Grad-CAM ({layer})'] = np.asarray(
        explain.gradcam(apply_fn, variables, images, targets, layer=layer))
  else:
    print(f'{type(model).__name__} has no 4-D feature map: no Grad-CAM.')
  per_image = []
  for i in range(len(images)):
    path = os.path.join(args.output_dir, f'{args.split}_{i:03d}.png')
    title = (f'{args.split} #{i}: label {np.asarray(labels[i]).tolist()}, predicted '
             f'{predicted[i]} (p={probs[i, predicted[i]]:.2f}); explaining class {targets[i]}')
    panels = {(name if m[i].max() > 0 else f'{name}\n(no positive evidence)'): m[i]
              for name, m in maps.items()}
    explain.save_overlays(path, images[i], panels, title=title)
    per_image.append({'index': i, 'png': path, 'target': int(targets[i]),
                      **{k: float(v[i]) for k, v in report._asdict().items()}})
    print(f'wrote {path}  IG sum {report.attribution_sum[i]:+.4f} vs f(x)-f(0) '
          f'{report.output_delta[i]:+.4f} (relative gap {report.relative_gap[i]:.2e})')
  gaps = np.asarray(report.relative_gap)
  return {'ig_steps': args.ig_steps, 'ig_method': args.ig_method, 'baseline': 'zeros',
          'output': 'logit', 'max_relative_gap': float(gaps.max()),
          'mean_relative_gap': float(gaps.mean()), 'images': per_image}


def explain_tokens(args, model, variables, ids, labels, tokenizer) -> dict:
  """Writes one attention PNG per document; returns the top tokens of each."""
  pad_id = getattr(model, 'pad_id', 0)

  @jax.jit
  def attend(variables, ids):
    logits, intermediates = models.inspect(model, variables, ids)
    layers = explain.collect(intermediates, 'attention_weights')
    if not layers:
      raise ConfigError(f'{type(model).__name__} sows no attention weights: for token inputs '
                        'explain.py explains Transformers only.')
    pooling = list(explain.collect(intermediates, 'pooling_weights').values())
    mask = ids != pad_id
    rollout = explain.attention_rollout(list(layers.values()), mask=mask)
    relevance = explain.token_relevance(rollout, mask, pooling[0] if pooling else None)
    return jnp.argmax(logits, -1), layers, relevance, mask.sum(-1)

  predicted, layers, relevance, lengths = jax.device_get(attend(variables, ids))
  ids = np.asarray(ids)
  docs = []
  for i in range(len(ids)):
    length = min(int(lengths[i]), args.max_tokens)
    tokens = [tokenizer.id_to_token(int(t)) if tokenizer else str(t) for t in ids[i, :length]]
    heads_mean = {f'{name} (mean over heads)': w[i].mean(0)[:length, :length]
                  for name, w in layers.items()}
    path = os.path.join(args.output_dir, f'{args.split}_{i:03d}_attention.png')
    explain.save_attention(path, tokens, relevance[i, :length], heads_mean,
                           title=f'{args.split} #{i}: label {labels[i]}, predicted '
                           f'{predicted[i]} (first {length} tokens)')
    top = np.argsort(-relevance[i, :length])[:10]
    docs.append({'index': i, 'png': path, 'label': int(labels[i]),
                 'predicted': int(predicted[i]),
                 'top_tokens': [[tokens[j], float(relevance[i, j])] for j in top]})
    print(f'wrote {path}')
  return {'layers': list(layers), 'documents': docs}


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.num_images < 1:
    print('error: --num-images must be >= 1', file=sys.stderr)
    return 1
  try:
    run_dir = args.run_dir or train_seed_cnn(args)
    cfg = read_config(run_dir)
    dataset = load_run_dataset(cfg, args.data_dir)
    task = tasks.get(dataset.task)
    if not task.probabilistic:
      raise ConfigError(f'explain.py explains the logit of one class per example; the outputs of '
                        f'task {task.name!r} ({cfg.dataset}) are not class scores.')
    cfg, model, variables = load_run(run_dir, args.which, dataset=dataset)
    if args.split not in dataset.splits:
      raise ConfigError(f'split {args.split!r} not in {sorted(dataset.splits)}.')
    inputs, labels = (a[:args.num_images] for a in dataset.splits[args.split])
    os.makedirs(args.output_dir, exist_ok=True)
    if np.issubdtype(inputs.dtype, np.integer):
      report = explain_tokens(args, model, variables, jnp.asarray(inputs), labels,
                              dataset.tokenizer)
      name = 'attention.json'
    elif inputs.ndim == 4:
      report = explain_images(args, model, variables, jnp.asarray(inputs), labels, task)
      name = 'ig_completeness.json'
    else:
      raise ConfigError(f'explain.py handles images [n, h, w, c] and token ids; {cfg.dataset} '
                        f'inputs have shape {inputs.shape[1:]}.')
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  report = {'run_dir': run_dir, 'which': args.which, 'model': cfg.model, 'dataset': cfg.dataset,
            'split': args.split, **report}
  path = os.path.join(args.output_dir, name)
  with open(path, 'w') as f:
    json.dump(report, f, indent=2)
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
