"""Task kinds: one definition per kind of supervised problem.

A task kind owns everything that depends on what the labels mean: the label layout and its
checks, the per-example loss, the on-device predictions, the host metrics of a whole split, the
metric that picks the best checkpoint and whether lower is better, and whether DP-SGD applies.
The train and eval steps, `fit`, ensembles, the search and the reports ask the task; none of
them compares task names.

  task = tasks.get('binary')
  losses = task.loss(logits, labels)                  # [batch], jit-able
  probs = task.predict(logits)                        # [batch, 2]
  metrics = task.evaluate(np.asarray(probs), labels)  # accuracy, AUROC, ..., on the host

Kinds: 'binary', 'multiclass' (softmax), 'multilabel' (sigmoids, -1 = missing label),
'regression', 'survival' (Cox), 'segmentation', 'treatment_effect' (potential outcomes of a
binary treatment: TARNet, CFR, Dragonnet), 'tagging' (a tag per token, CRF or softmax, scored by
entity F1), 'masked_lm' and 'skipgram' (pretraining: masked tokens, word2vec). Adding a kind is one module here
with a `Task` subclass, one entry in `TASKS`, and its tests.
"""

from typing import Union

from jmed.tasks.base import Task
from jmed.tasks.classification import Binary, Multiclass
from jmed.tasks.effect import TreatmentEffect
from jmed.tasks.masked_lm import MaskedLM
from jmed.tasks.multilabel import Multilabel
from jmed.tasks.regression import Regression
from jmed.tasks.segmentation import Segmentation
from jmed.tasks.skipgram import SkipGram
from jmed.tasks.survival import Survival
from jmed.tasks.tagging import Tagging

TASKS = {task.name: task for task in (Binary(), Multiclass(), Multilabel(), Regression(),
                                      Survival(), Segmentation(), TreatmentEffect(),
                                      Tagging(), MaskedLM(), SkipGram())}


def get(task: Union[str, Task]) -> Task:
  """The `Task` named `task` (a `Task` is returned as it is).

  Raises:
    ValueError: an unknown name; the message lists the known ones.
  """
  if isinstance(task, Task):
    return task
  if task not in TASKS:
    raise ValueError(f'Unknown task {task!r}; valid tasks: {", ".join(TASKS)}.')
  return TASKS[task]


__all__ = ['Binary', 'MaskedLM', 'Multiclass', 'Multilabel', 'Regression', 'Segmentation',
           'SkipGram', 'Survival', 'TASKS', 'Tagging', 'Task', 'TreatmentEffect', 'get']
