"""Evaluation: how well each method does each task on a scenario, against what the scenario planted.

``evaluate(scenario, trained, methods, tasks)`` runs every (method, task) pair and returns an
:class:`EvaluationResult`: per method and task the metric values, or an entry saying why there
is none (``n/a``: the task or the method does not apply; ``error``: it failed);
``to_json()`` is the document ``attrex evaluate --json`` prints. Each pair's result is cached
(kind ``evaluation``), keyed on the scenario, the model, the method's precompute key and the
settings, so a second run, the CLI's ``attrex evaluate`` and the app's pages read what the
first computed. Metrics are the pure functions of :mod:`core.metrics`; this package only picks
the test points and ground truth and wires them. One module per job:

- :mod:`~core.evaluation.settings`: :class:`Settings`, what an evaluation measures on;
- :mod:`~core.evaluation.context`: :class:`Context`, the seeded test-point draws and ground truth;
- :mod:`~core.evaluation.tasks`: the task registry :data:`TASKS` (the one list of tasks, with
  each one's title, label, headline figure and ground truth) and the task functions;
- :mod:`~core.evaluation.result`: the typed results, :class:`EvaluationResult` and :class:`TaskResult`;
- :mod:`~core.evaluation.run`: :func:`evaluate` and the cache keys;
- :mod:`~core.evaluation.tables`: the text table of ``attrex evaluate``.

Tasks (:data:`TASKS`), each on the scenarios that have its ground truth:

- ``mislabel`` (flipped labels): a per-training-point suspicion score (self-influence, or a
  baseline's score) against the flips: AUROC, AUPRC, precision@k with k = the number of
  flips, the share found after checking 10% of the data; the detection curve is kept.
- ``backdoor`` (poisoned points): the first ``n_triggered`` triggered test samples the model
  sends to the target class, explained for the target: poisoned share of the top-``k``
  proponents against the base rate, detection AUROC of the mean score over all training
  points and within the target class; the aggregated ranking is kept.
- ``identical-class``, ``identical-subclass``, ``label-poisoning``, ``domain-mismatch``: the
  DualView paper's four (:mod:`core.metrics.dualview`), on ``n_test`` seeded clean test
  points explained for their predicted class (domain mismatch: the stamped other-class test
  images the model sends to the mark class).
- ``lds``: the linear datamodeling score (:mod:`core.metrics.lds`) on ``lds_test`` seeded
  test points explained for their true class, against ``lds_subsets`` models trained on
  random subsets of a fraction ``lds_alpha`` (:mod:`core.models.subsets`, cached, in
  ``workers`` processes). Costly: not among the default tasks.

Methods without per-test-point scores (``per_test = False``) apply to ``mislabel`` only;
methods without a self-influence (``self_influence = False``) to every task but ``mislabel``.
"""

from core.evaluation.context import Context
from core.evaluation.result import (
    ERROR,
    NA,
    OK,
    Agreement,
    EvaluationResult,
    MethodInfo,
    ModelInfo,
    TaskInfo,
    TaskResult,
)
from core.evaluation.run import VERSION, NotCached, evaluate, load_kept, result_key
from core.evaluation.settings import Settings
from core.evaluation.tables import table
from core.evaluation.tasks import (
    CURVE_POINTS,
    TASKS,
    Kept,
    Task,
    check_tasks,
    register_task,
    tasks_for,
    tasks_help,
)

__all__ = ["CURVE_POINTS", "ERROR", "NA", "OK", "TASKS", "VERSION", "Agreement", "Context", "EvaluationResult",
           "Kept", "MethodInfo", "ModelInfo", "NotCached", "Settings", "Task", "TaskInfo", "TaskResult",
           "check_tasks", "evaluate", "load_kept", "register_task", "result_key", "table", "tasks_for", "tasks_help"]
