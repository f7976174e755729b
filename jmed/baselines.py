"""Classical peers measured next to jmed's models in the same script, on the same split."""

from typing import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline


def tfidf_logistic_regression(train, validation, *, cs: Sequence[float] = (1, 3, 10, 30, 100),
                              class_weights=(None, 'balanced'), ngrams=((1, 1), (1, 2))):
  """TF-IDF + logistic regression, its C, class weighting and n-grams chosen on validation.

  Args:
    train, validation: (texts list[str], labels int [n]).
    cs, class_weights, ngrams: the grid searched (by validation macro-F1).

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
        score = f1_score(validation[1], model.predict(validation[0]), average='macro')
        if score > best_info['val_f1']:
          best, best_info = model, {'C': c, 'class_weight': weight, 'ngram_range': ngram,
                                    'val_f1': float(score)}
  return best, best_info


def macro_f1(labels, predictions) -> float:
  """scikit-learn's macro-averaged F1 of class predictions [n]."""
  return float(f1_score(np.asarray(labels), np.asarray(predictions), average='macro'))
