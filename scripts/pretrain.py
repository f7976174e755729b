#!/usr/bin/env python
"""Pretraining on unlabelled in-domain text: the Transformer encoder by masked-language
modelling (`--objective masked_lm`, BERT's objective) or word embeddings alone by word2vec's
skip-gram (`--objective skipgram`), both on the same corpus and vocabulary.

The corpus ('biomed_corpus', `jmed.data.corpus`) is the train and devel sentences of the NER
corpora under <data-dir>/ner/ (their tags unused) and the training split of Medical Abstracts;
no test split of any corpus. The run directory holds the orbax checkpoints, tokenizer.json,
metrics.jsonl and curves.png (training and validation loss, validation masked-token accuracy per
epoch); fine-tune from it with `--init-from`:

  python scripts/pretrain.py --data-dir ../shared/data --output-dir runs/pretrain_biomed
  python scripts/pretrain.py --data-dir ../shared/data --objective skipgram
  python scripts/train.py --model transformer_tagger --dataset ncbi_disease \
    --data-dir ../shared/data --init-from runs/pretrain_biomed ...

The recipes are `jmed.configs.PRETRAIN_RECIPES`; --epochs, --max-steps, --batch-size and
--learning-rate change them.
"""

import argparse
import dataclasses
import json
import os

from jmed import configs
from jmed.data import corpus
from jmed.data import datasets
from jmed.train.loop import fit


def pretrain_config(output_dir: str, data_dir=None, *, objective: str = 'masked_lm',
                    epochs: int = 0, max_steps: int = 0, batch_size: int = 0,
                    learning_rate: float = 0.0, progress: bool = True) -> configs.TrainConfig:
  """`configs.PRETRAIN_RECIPES[objective]` with the given run directory, data root and
  overrides (0: the recipe's value)."""
  cfg = dataclasses.replace(configs.PRETRAIN_RECIPES[objective], output_dir=output_dir,
                            data_dir=data_dir, progress=progress)
  overrides = {'epochs': epochs, 'max_steps': max_steps, 'batch_size': batch_size}
  cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v})
  if learning_rate:
    cfg = dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer,
                                                                 learning_rate=learning_rate))
  return cfg


def load_corpus(cfg: configs.TrainConfig, objective: str):
  """The pretraining corpus as a dataset of the task `objective` ('masked_lm' or 'skipgram':
  the same rows, labelled by their own ids)."""
  return corpus.load(datasets.resolve_data_dir(cfg.data_dir), cfg.text, task=objective)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=None,
                      help='root with ner/ and medical_abstracts/ (default: $JMED_DATA_DIR)')
  parser.add_argument('--objective', default='masked_lm', choices=list(configs.PRETRAIN_RECIPES),
                      help="masked_lm: the Transformer encoder (BERT's masked tokens); "
                      "skipgram: word embeddings only (word2vec), far cheaper")
  parser.add_argument('--output-dir', default=None, help="default: the recipe's")
  parser.add_argument('--epochs', type=int, default=0, help='0: the recipe\'s')
  parser.add_argument('--max-steps', type=int, default=0, help='stop after this many steps')
  parser.add_argument('--batch-size', type=int, default=0, help='0: the recipe\'s')
  parser.add_argument('--learning-rate', type=float, default=0.0, help='0: the recipe\'s')
  parser.add_argument('--resume', action='store_true', help='continue the run in --output-dir')
  args = parser.parse_args(argv)
  output_dir = args.output_dir or configs.PRETRAIN_RECIPES[args.objective].output_dir
  cfg = pretrain_config(output_dir, args.data_dir, objective=args.objective,
                        epochs=args.epochs, max_steps=args.max_steps,
                        batch_size=args.batch_size, learning_rate=args.learning_rate)
  cfg = dataclasses.replace(cfg, resume=args.resume)
  summary = fit(cfg, load_corpus(cfg, args.objective))
  print(json.dumps({k: summary[k] for k in ('steps', 'best', 'test_loss', 'test_perplexity',
                                            'test_accuracy', 'wall_seconds') if k in summary},
                   indent=1, default=str))
  print(f'curves: {os.path.join(cfg.output_dir, "curves.png")}; fine-tune with '
        f'--init-from {cfg.output_dir}')


if __name__ == '__main__':
  main()
