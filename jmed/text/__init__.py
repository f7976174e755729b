"""jmed.text: tokenizers (HuggingFace `tokenizers`) turning texts into ids; `smiles`, the
atom-level SMILES tokenizer and vocabulary.

Submodules load when first used: `import jmed.text` alone does not import `tokenizers`.
"""

import importlib

_TOKENIZER_NAMES = ('encode', 'KINDS', 'lengths', 'load', 'PAD', 'PAD_ID', 'save',
                    'SPECIAL_TOKENS', 'train_tokenizer', 'UNK', 'UNK_ID', 'vocab_size')


def __getattr__(name):
  if name in ('smiles', 'tokenizer'):
    return importlib.import_module(f'jmed.text.{name}')
  if name in _TOKENIZER_NAMES:
    return getattr(importlib.import_module('jmed.text.tokenizer'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['smiles', 'tokenizer', *_TOKENIZER_NAMES]
