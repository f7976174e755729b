#!/usr/bin/env python
"""Biomedical named-entity recognition: jmed's taggers (BiLSTM-CRF, Transformer-CRF; from
scratch or from a masked-LM pretrained run) on NCBI-disease (or BC2GM), the corpus' own
train / devel / test split, in one run; prints a Markdown table of test entity F1 (exact spans,
conlleval); the README's NER section sets it beside published numbers.

  python scripts/compare_ner.py --data-dir ../shared/data --seeds 0
  python scripts/compare_ner.py --data-dir ../shared/data --models lstm_crf \
    lstm_crf+pretrained transformer_crf+pretrained --init-from runs/pretrain_biomed

A model name with '+pretrained' starts from `--init-from` (its word embedding, and for the
Transformer its encoder, taken by name and shape; text encoded with that run's tokenizer).
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

from jmed import configs
from jmed.train import loop

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (scripts/common.py)

def compare_ner(data_dir: Optional[str], output_dir: str, seeds: Sequence[int] = (0,),
                models: Sequence[str] = ('lstm_crf',), dataset: str = 'ncbi_disease',
                init_from: str = '', max_steps: int = 0) -> List[Dict]:
  """Test entity precision / recall / F1 of each model, checkpoint chosen by validation F1.

  Args:
    data_dir: data root with ner/.
    output_dir: each run writes to `<output_dir>/<model>_seed<seed>`.
    seeds: one run per seed and model.
    models: keys of `configs.NER_RECIPES`, optionally suffixed '+pretrained'.
    dataset: 'ncbi_disease' or 'bc2gm'.
    init_from: the pretrained run for '+pretrained' models.
    max_steps: caps every run (0: the recipes' epochs).

  Returns:
    One row per model: 'model', 'test_f1', 'test_precision', 'test_recall', 'val_f1' (one value
    per seed), 'settings'.
  """
  loaded = {}
  rows = []
  for name in models:
    cfg, members = common.recipe(configs.NER_RECIPES, name, init_from)
    cfg = dataclasses.replace(cfg, dataset=dataset)
    row = {'model': name, 'test_f1': [], 'test_precision': [], 'test_recall': [], 'val_f1': [],
           'settings': cfg.model_kwargs}
    for seed in seeds:
      run_cfg = common.seeded(cfg, output_dir, name.replace('+', '_'), seed, data_dir,
                              max_steps=max_steps)
      text = loop.text_config(run_cfg)
      key = (dataset, dataclasses.astuple(text))
      if key not in loaded:
        loaded[key] = loop.load_dataset(dataclasses.replace(run_cfg, text=text))
      summary = common.fit(run_cfg, loaded[key], members)
      for metric in ('f1', 'precision', 'recall'):
        row[f'test_{metric}'].append(summary[f'test_{metric}'])
      row['val_f1'].append(summary['best']['value'])
    rows.append(row)
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=None, help='root with ner/ (default: '
                      '$JMED_DATA_DIR)')
  parser.add_argument('--output-dir', default='runs/compare_ner')
  parser.add_argument('--dataset', default='ncbi_disease', choices=('ncbi_disease', 'bc2gm'))
  parser.add_argument('--seeds', type=int, nargs='+', default=[0])
  parser.add_argument('--models', nargs='+', default=['lstm_crf'])
  parser.add_argument('--init-from', default='', help="a pretrained run (scripts/pretrain.py) "
                      "for the '+pretrained' models")
  common.add_max_steps_flag(parser)
  args = parser.parse_args(argv)
  rows = compare_ner(args.data_dir, args.output_dir, args.seeds, args.models, args.dataset,
                     args.init_from, args.max_steps)
  print(json.dumps(rows, indent=1, default=str))
  print(common.format_rows(rows, 'test_f1'))


if __name__ == '__main__':
  main()
