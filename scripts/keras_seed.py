#!/usr/bin/env python
"""The seed's own Keras model and recipe: the peer that jmed's results and speed are compared to.

Needs TensorFlow (`pip install -e .[bench]`). Same data, through the same jmed loaders:

  python scripts/keras_seed.py --dataset pneumoniamnist --data-dir ../shared/data
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def build_model(num_classes: int, input_shape):
  """Keras' classic MNIST CNN: Conv 32-pool-Conv 64-pool-Dense 64-Dense N (softmax)."""
  import keras
  return keras.Sequential([
      keras.Input(input_shape),
      keras.layers.Conv2D(32, 3, activation='relu'),
      keras.layers.MaxPooling2D(),
      keras.layers.Conv2D(64, 3, activation='relu'),
      keras.layers.MaxPooling2D(),
      keras.layers.Flatten(),
      keras.layers.Dense(64, activation='relu'),
      keras.layers.Dense(num_classes, activation='softmax'),
  ])


def compile_model(model, learning_rate: float = 0.01):
  import keras
  model.compile(optimizer=keras.optimizers.SGD(learning_rate),
                loss='sparse_categorical_crossentropy', metrics=['accuracy'])
  return model


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--dataset', default='pneumoniamnist')
  parser.add_argument('--data-dir', default=None)
  parser.add_argument('--epochs', type=int, default=5)
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)

  import keras
  from jmed import data as jdata
  from jmed import tasks

  keras.utils.set_random_seed(args.seed)
  ds = jdata.load_dataset(args.dataset, data_dir=args.data_dir)
  (x, y), (xt, yt) = ds.splits['train'], ds.splits['test']
  model = compile_model(build_model(ds.num_classes, ds.input_shape))
  start = time.perf_counter()
  model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=2)
  seconds = time.perf_counter() - start
  probs = model.predict(xt, batch_size=500, verbose=0)  # [n, classes] softmax
  metrics = tasks.get(ds.task).evaluate(probs, yt)
  summary = {'peer': 'keras', 'backend': keras.backend.backend(), 'dataset': args.dataset,
             **{f'test_{k}': v for k, v in metrics.items()},
             'train_images_per_sec': args.epochs * len(x) / seconds, 'wall_seconds': seconds}
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())
