#!/usr/bin/env python
"""Medical Abstracts: the Transformer and the GRU against TF-IDF + logistic regression, on the
same stratified split, in one run; prints a Markdown table of test macro-F1. Models named
'<recipe>+pretrained' start from a masked-LM run (`scripts/pretrain.py`) given by --init-from.

  python scripts/compare_text.py --data-dir ../shared/data --seeds 0 1 2
  python scripts/compare_text.py --data-dir ../shared/data --seeds 0 1 2 \
    --models embedding_bag_128 embedding_bag_128+pretrained embedding_bag_128x5 \
    --init-from runs/pretrain_skipgram
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from jmed import configs
from jmed import tasks
from jmed.data import datasets
from jmed.data import medical_abstracts
from jmed.train import loop

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (scripts/common.py)

NUM_CLASSES = len(medical_abstracts.CLASS_NAMES)
TFIDF_CS = (1, 3, 10, 30, 100)  # the logistic regression's inverse L2 strengths searched


def compare_text(data_dir: Optional[str], tfds_dir: Optional[str], output_dir: str,
                 seeds: Sequence[int] = (0,), models: Sequence[str] = ('transformer', 'gru'),
                 max_steps: int = 0, tfidf_cs: Sequence[float] = TFIDF_CS,
                 init_from: str = '') -> List[Dict]:
  """Test macro-F1 on the Medical Abstracts split: TF-IDF + logistic regression (tuned on
  validation) and each model of `configs.TEXT_RECIPES` (checkpoint chosen by validation
  macro-F1), one row per model. Every row's macro-F1 is the multiclass task's 'f1' (per-class
  F1 averaged over the 5 classes, scikit-learn's macro F1 when every class occurs in the test
  labels, as it does).

  Args:
    data_dir, tfds_dir: data root (None: $JMED_DATA_DIR, else download) and TFDS folder.
    output_dir: each model run writes to `<output_dir>/<model>_seed<seed>`.
    seeds: one run per seed for each model (the peer is deterministic: one run).
    models: keys of `configs.TEXT_RECIPES`, each optionally suffixed 'x<K>' (a deep ensemble
      of K members, seeds seed .. seed + K - 1, their mean probabilities scored) and
      '+pretrained' (the same recipe starting from the run `init_from`, `scripts/pretrain.py`).
    max_steps: caps every training run (0: the recipes' epochs).
    tfidf_cs: the logistic regression's C grid (`tfidf_logistic_regression`).
    init_from: the pretrained run of the '+pretrained' models.

  Returns:
    One row per model: 'model', 'test_macro_f1' and 'val_macro_f1' (one value per seed) and
    'settings' (the peer's chosen grid point, or the model's hyperparameters).
  """
  raw = medical_abstracts.load(datasets.resolve_data_dir(data_dir), tfds_dir)
  rows = [tfidf_row(raw, tfidf_cs)]
  loaded = {}
  for name in models:
    recipe, members = common.recipe(configs.TEXT_RECIPES, name, init_from)
    text = loop.text_config(recipe)  # a pretrained run's tokenizer for '+pretrained'
    key = dataclasses.astuple(text)
    if key not in loaded:
      loaded[key] = datasets.load_dataset('medical_abstracts', data_dir, tfds_dir, text=text)
    row = {'model': name, 'test_macro_f1': [], 'val_macro_f1': [],
           'settings': recipe.model_kwargs}
    for seed in seeds:
      cfg = common.seeded(recipe, output_dir, name.replace('+', '_'), seed, data_dir, tfds_dir,
                          max_steps)
      summary = common.fit(cfg, loaded[key], members)
      row['test_macro_f1'].append(summary['test_f1'])
      row['val_macro_f1'].append(summary['best']['value'])
    rows.append(row)
  return rows


def tfidf_row(raw: Dict[str, Tuple[List[str], np.ndarray]],
              cs: Sequence[float] = TFIDF_CS) -> Dict:
  """The TF-IDF + logistic regression row of `compare_text` from the raw splits."""
  model, info = tfidf_logistic_regression(raw['train'], raw['validation'], cs=cs)
  return {'model': 'TF-IDF + logistic regression',
          'test_macro_f1': [macro_f1(model, raw['test'])], 'val_macro_f1': [info['val_f1']],
          'settings': {k: v for k, v in info.items() if k != 'val_f1'}}


def tfidf_logistic_regression(train, validation, *, cs: Sequence[float] = TFIDF_CS,
                              class_weights=(None, 'balanced'), ngrams=((1, 1), (1, 2))):
  """TF-IDF + logistic regression, its C, class weighting and n-grams chosen on validation.

  Args:
    train, validation: (texts list[str] [n], labels int [n] in 0..4).
    cs, class_weights, ngrams: the grid searched (by validation `macro_f1`).

  Returns:
    (the fitted scikit-learn pipeline, {'C', 'class_weight', 'ngram_range', 'val_f1'}).
  """
  best, best_info = None, {'val_f1': -1.0}
  for ngram in ngrams:
    for c in cs:
      for weight in class_weights:
        model = make_pipeline(
            TfidfVectorizer(ngram_range=ngram, sublinear_tf=True, min_df=2),
            LogisticRegression(C=c, class_weight=weight, max_iter=2000))
        model.fit(*train)
        score = macro_f1(model, validation)
        if score > best_info['val_f1']:
          best, best_info = model, {'C': c, 'class_weight': weight, 'ngram_range': ngram,
                                    'val_f1': score}
  return best, best_info


def macro_f1(model, split) -> float:
  """The multiclass task's macro-F1 of a fitted classifier on split (texts [n], labels [n])."""
  texts, labels = split
  probs = np.zeros((len(texts), NUM_CLASSES))
  probs[:, model.classes_.astype(int)] = model.predict_proba(texts)  # [n, classes]
  return tasks.get('multiclass').evaluate(probs, np.asarray(labels))['f1']


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=None, help='root with medical_abstracts/ '
                      '(default: $JMED_DATA_DIR, else download)')
  parser.add_argument('--tfds-dir', default=None, help='where TFDS prepares the dataset')
  parser.add_argument('--output-dir', default='runs/compare_text')
  parser.add_argument('--seeds', type=int, nargs='+', default=[0])
  parser.add_argument('--models', nargs='+', default=['transformer', 'gru'])
  parser.add_argument('--tfidf-cs', type=float, nargs='+', default=list(TFIDF_CS),
                      help="the TF-IDF peer's logistic regression C grid (with class weights "
                           'none/balanced and unigrams/bigrams)')
  parser.add_argument('--init-from', default='', help="a pretrained run (scripts/pretrain.py) "
                      "for the models named with '+pretrained'")
  common.add_max_steps_flag(parser)
  args = parser.parse_args(argv)
  rows = compare_text(args.data_dir, args.tfds_dir, args.output_dir, args.seeds, args.models,
                      args.max_steps, args.tfidf_cs, args.init_from)
  print(json.dumps(rows, indent=1, default=str))
  print(common.format_rows(rows, 'test_macro_f1'))


if __name__ == '__main__':
  main()
