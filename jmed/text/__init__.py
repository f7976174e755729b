"""jmed.text: tokenizers (HuggingFace `tokenizers`) turning texts into ids; `smiles`, the
atom-level SMILES tokenizer and vocabulary."""

from jmed.text import smiles
from jmed.text import tokenizer
from jmed.text.tokenizer import encode
from jmed.text.tokenizer import KINDS
from jmed.text.tokenizer import lengths
from jmed.text.tokenizer import load
from jmed.text.tokenizer import PAD
from jmed.text.tokenizer import PAD_ID
from jmed.text.tokenizer import save
from jmed.text.tokenizer import SPECIAL_TOKENS
from jmed.text.tokenizer import train_tokenizer
from jmed.text.tokenizer import UNK
from jmed.text.tokenizer import UNK_ID
from jmed.text.tokenizer import vocab_size

__all__ = [
    'KINDS',
    'PAD',
    'PAD_ID',
    'SPECIAL_TOKENS',
    'UNK',
    'UNK_ID',
    'encode',
    'lengths',
    'load',
    'save',
    'smiles',
    'tokenizer',
    'train_tokenizer',
    'vocab_size',
]
