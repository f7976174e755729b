"""Meta-learner baselines for treatment effects with scikit-learn's gradient boosting
(Kunzel et al. 2019's names):

  * S-learner: one outcome model on [x, t]; y0_hat = f(x, 0), y1_hat = f(x, 1);
  * T-learner: one outcome model per arm, each fitted on that arm's units only.

Both take factual data only and return the two predicted potential outcomes; the effect is
y1_hat - y0_hat. Seeded (`seed` is the boosting's random_state), so a run is reproducible.
"""

from typing import Tuple

import numpy as np
from sklearn.ensemble import GradientBoostingRegressor


def _regressor(seed: int) -> GradientBoostingRegressor:
  # scikit-learn's defaults (100 trees of depth 3, learning rate 0.1).
  return GradientBoostingRegressor(random_state=seed)


def _arrays(x_train, t_train, y_train, x):
  x_train = np.asarray(x_train, np.float64).reshape(len(x_train), -1)
  t_train = np.asarray(t_train, np.float64).reshape(-1)
  y_train = np.asarray(y_train, np.float64).reshape(-1)
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  if not (len(x_train) == len(t_train) == len(y_train)):
    raise ValueError(f'x_train, t_train and y_train differ in length: {len(x_train)}, '
                     f'{len(t_train)}, {len(y_train)}.')
  if not np.isin(t_train, (0, 1)).all():
    raise ValueError('t_train must hold 0 (control) and 1 (treated) only.')
  return x_train, t_train, y_train, x


def s_learner(x_train, t_train, y_train, x, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """(y0_hat [n], y1_hat [n]) at covariates x [n, features] of one gradient-boosting model
  fitted on [x_train, t_train] -> y_train."""
  x_train, t_train, y_train, x = _arrays(x_train, t_train, y_train, x)
  model = _regressor(seed).fit(np.column_stack([x_train, t_train]), y_train)
  column = lambda value: np.full((len(x), 1), value)
  return (model.predict(np.hstack([x, column(0.0)])),
          model.predict(np.hstack([x, column(1.0)])))


def t_learner(x_train, t_train, y_train, x, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """(y0_hat [n], y1_hat [n]) at covariates x [n, features] of two gradient-boosting models,
  one fitted on the control units, one on the treated units."""
  x_train, t_train, y_train, x = _arrays(x_train, t_train, y_train, x)
  out = []
  for arm in (0, 1):
    rows = t_train == arm
    if not rows.any():
      raise ValueError(f'the T-learner needs {"treated" if arm else "control"} units in the '
                       'training data; there are none.')
    out.append(_regressor(seed).fit(x_train[rows], y_train[rows]).predict(x))
  return out[0], out[1]
