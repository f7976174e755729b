"""MedMNIST 3D by name (jmed.data.medmnist3d) and on-device 3D augmentation (jmed.data.augment3d)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmed.data import augment3d, medmnist3d
from jmed.data.augment3d import VolumeAugmentConfig, augment_batch
from jmed.errors import ConfigError, DataError, MissingDataError


def test_load_adrenalmnist3d_by_name(data_dir):
  from jmed.data import load_dataset
  dataset = load_dataset('adrenalmnist3d', data_dir=str(data_dir))
  assert dataset.sizes == {'train': 1188, 'validation': 98, 'test': 298}
  assert dataset.task == 'binary' and dataset.num_classes == 2
  assert dataset.input_shape == (28, 28, 28, 1)
  images, labels = dataset.splits['train']
  assert images.dtype == np.float32 and images.shape == (1188, 28, 28, 28, 1)
  assert set(np.unique(images)) == {0.0, 1.0}  # binary shape masks
  assert labels.dtype == np.int32 and np.bincount(labels).tolist() == [929, 259]
  assert np.bincount(dataset.splits['test'][1]).tolist() == [229, 69]


def test_names_md5s_and_missing_file(tmp_path):
  from jmed.data import load_dataset
  from jmed.data.datasets import MEDMNIST3D_NAMES
  assert set(MEDMNIST3D_NAMES) == set(medmnist3d.NAMES) and len(medmnist3d.NAMES) == 12
  assert medmnist3d.subset('adrenalmnist3d')[1] == 'bbd3c5a5576322bc4cdfea780653b1ce'
  assert medmnist3d.subset('adrenalmnist3d_64')[1] == '17721accfe9fb005146a47d33bc54b2f'
  with pytest.raises(MissingDataError, match=r'organmnist3d_64\.npz.*zenodo'):
    load_dataset('organmnist3d_64', data_dir=str(tmp_path))
  assert not os.listdir(tmp_path)  # offline writes nothing
  with pytest.raises(DataError, match='valid'):
    medmnist3d.subset('brainmnist3d')


def _volume():
  """[1, 4, 4, 4, 1] with distinct values, and its int labels [1, 4, 4, 4]."""
  x = jnp.arange(64, dtype=jnp.float32).reshape(1, 4, 4, 4, 1) / 64
  return x, jnp.arange(64, dtype=jnp.int32).reshape(1, 4, 4, 4)


def _is_one_of(out, candidates):
  return any(np.array_equal(np.asarray(out), np.asarray(c)) for c in candidates)


def test_flips_and_quarter_turns_are_exact_and_labels_follow():
  x, y = _volume()
  config = VolumeAugmentConfig(flip_axes=(2,), rot90_planes=((1, 2),))
  candidates = [jnp.rot90(v, k, axes=(2, 3)) for v in (x, jnp.flip(x, 3)) for k in range(4)]
  seen = set()
  for seed in range(12):
    out, labels = augment_batch(jax.random.key(seed), x, config, labels=y)
    assert out.shape == x.shape and labels.dtype == jnp.int32
    assert _is_one_of(out, candidates)
    # Same geometry for the labels: label i sits where voxel value i / 64 went.
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(out[..., 0] * 64).round())
    seen.add(np.asarray(out).tobytes())
  assert len(seen) > 4  # several different flips / turns drawn


def test_deterministic_per_key_and_per_example_keys():
  x = jax.random.uniform(jax.random.key(0), (3, 8, 8, 8, 1))
  x = jnp.concatenate([x[:1]] * 3)  # 3 copies of one volume
  aug = jax.jit(lambda k, v: augment_batch(k, v, 'ct_volume'))
  a, b = aug(jax.random.key(1), x), aug(jax.random.key(1), x)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, aug(jax.random.key(2), x))
  assert not np.array_equal(a[0], a[1])  # each example its own draw
  assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1


def test_resampling_moves_labels_with_the_volume_and_intensity_spares_them():
  x = jnp.zeros((2, 12, 12, 12, 1)).at[:, 4:8, 4:8, 4:8].set(1.0)
  y = (x[..., 0] > 0.5).astype(jnp.int32)
  config = VolumeAugmentConfig(shift=0.15, rotate_degrees=15, scale=0.1, brightness=0.2,
                               contrast=0.2)
  out, labels = jax.jit(lambda k: augment_batch(k, x, config, labels=y))(jax.random.key(3))
  assert set(np.unique(np.asarray(labels))) <= {0, 1}
  # Trilinear volume vs nearest labels: the label cube is where the (unbrightened) cube went.
  assert not np.array_equal(np.asarray(labels), np.asarray(y))
  geometry = VolumeAugmentConfig(shift=0.15, rotate_degrees=15, scale=0.1)
  moved = jax.jit(lambda k: augment_batch(k, x, geometry))(jax.random.key(3))
  inside = np.asarray(labels) == 1
  assert np.asarray(moved)[..., 0][inside].mean() > 0.5 > np.asarray(moved)[..., 0][~inside].mean()


def test_bad_configs():
  with pytest.raises(ConfigError, match='flip_axes'):
    VolumeAugmentConfig(flip_axes=(3,))
  with pytest.raises(ConfigError, match='square'):
    augment_batch(jax.random.key(0), jnp.zeros((1, 4, 4, 6, 1)),
                  VolumeAugmentConfig(rot90_planes=((1, 2),)))
  with pytest.raises(ConfigError, match='presets'):
    augment3d.get_config('nope')
  assert {'shape_volume', 'ct_volume'} <= set(augment3d.PRESETS)
