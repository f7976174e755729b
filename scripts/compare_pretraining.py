#!/usr/bin/env python
"""The effect of masked-LM pretraining on both text tasks, in one run: each model from scratch
and from the pretrained run (`+pretrained`), on Medical Abstracts (test macro-F1, beside TF-IDF +
logistic regression) and on NCBI-disease (test entity F1). Pretrains first unless --init-from
names a finished run of `scripts/pretrain.py`.

  python scripts/compare_pretraining.py --data-dir ../shared/data --seeds 0 1 2 \
    --init-from runs/pretrain_biomed
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (scripts/common.py)
import compare_ner  # noqa: E402
import compare_text  # noqa: E402
import pretrain  # noqa: E402

TEXT_MODELS = ('embedding_bag_128', 'transformer_2x128')
NER_MODELS = ('lstm_crf', 'transformer_crf')


def with_and_without(names):
  """Each model name, then the same with '+pretrained'."""
  return [n + suffix for n in names for suffix in ('', common.PRETRAINED)]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-dir', default=None, help='root with ner/ and medical_abstracts/')
  parser.add_argument('--output-dir', default='runs/compare_pretraining')
  parser.add_argument('--init-from', default='', help='a finished pretraining run (default: '
                      'pretrain into <output-dir>/pretrain first)')
  parser.add_argument('--seeds', type=int, nargs='+', default=[0])
  parser.add_argument('--text-models', nargs='+', default=list(TEXT_MODELS))
  parser.add_argument('--ner-models', nargs='+', default=list(NER_MODELS))
  common.add_max_steps_flag(parser)
  args = parser.parse_args(argv)
  init_from = args.init_from
  if not init_from:
    init_from = os.path.join(args.output_dir, 'pretrain')
    pretrain.main(['--output-dir', init_from, '--max-steps', str(args.max_steps)]
                  + (['--data-dir', args.data_dir] if args.data_dir else []))
  text_rows = compare_text.compare_text(
      args.data_dir, None, os.path.join(args.output_dir, 'text'), args.seeds,
      with_and_without(args.text_models), args.max_steps, init_from=init_from)
  ner_rows = compare_ner.compare_ner(
      args.data_dir, os.path.join(args.output_dir, 'ner'), args.seeds,
      with_and_without(args.ner_models), init_from=init_from, max_steps=args.max_steps)
  print(json.dumps({'text': text_rows, 'ner': ner_rows}, indent=1, default=str))
  print('Medical Abstracts, test macro-F1:')
  print(common.format_rows(text_rows, 'test_macro_f1'))
  print('NCBI-disease, test entity F1:')
  print(common.format_rows(ner_rows, 'test_f1'))


if __name__ == '__main__':
  main()
