"""The comparison scripts' model names: '<recipe>[x<members>][+pretrained]'."""

import os
import sys

import pytest

from jmed import configs

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'scripts'))
import common  # noqa: E402


def test_recipe_names_ensembles_and_pretrained_runs():
  cfg, members = common.recipe(configs.TEXT_RECIPES, 'embedding_bag_128')
  assert cfg is configs.TEXT_RECIPES['embedding_bag_128'] and members == 1 and not cfg.init_from
  cfg, members = common.recipe(configs.TEXT_RECIPES, 'embedding_bag_128x5+pretrained', 'runs/pt')
  assert members == 5 and cfg.init_from == 'runs/pt'
  assert cfg.model_kwargs == configs.TEXT_RECIPES['embedding_bag_128'].model_kwargs
  cfg, members = common.recipe(configs.NER_RECIPES, 'lstm_crf+pretrained', 'runs/pt')
  assert (cfg.model, members, cfg.init_from) == ('lstm_tagger', 1, 'runs/pt')
  with pytest.raises(SystemExit, match='needs --init-from'):
    common.recipe(configs.NER_RECIPES, 'lstm_crf+pretrained')
  with pytest.raises(SystemExit, match="unknown model 'lstm_crfx0'"):
    common.recipe(configs.NER_RECIPES, 'lstm_crfx0')
  with pytest.raises(SystemExit, match="unknown model 'bert'; valid: lstm_crf, transformer_crf"):
    common.recipe(configs.NER_RECIPES, 'bert')
