"""Shared fixtures: the real data under ../shared/data (or $JMED_DATA_DIR)."""

import os
from pathlib import Path

import pytest

from jmed import data as jdata

REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path:
  return Path(os.environ.get('JMED_DATA_DIR') or REPO.parent / 'shared' / 'data')


@pytest.fixture(scope='session')
def data_dir() -> Path:
  path = real_data_dir()
  if not (path / 'mnist').is_dir():
    pytest.skip(f'real data not found at {path}; set JMED_DATA_DIR')
  return path


@pytest.fixture(scope='session')
def mnist(data_dir):
  """MNIST offline protocol: 8,000 train / 2,000 test images of the official test split."""
  return jdata.load_dataset('mnist', data_dir=str(data_dir))


def subset(dataset, train: int, test: int):
  """The first `train` / `test` examples of a dataset, as a new Dataset."""
  import dataclasses
  splits = dict(dataset.splits)
  splits['train'] = tuple(a[:train] for a in splits['train'])
  splits['test'] = tuple(a[:test] for a in splits['test'])
  return dataclasses.replace(dataset, splits=splits)
