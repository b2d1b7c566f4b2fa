"""The text table ``attrex evaluate`` prints: one row per method, one column per task's headline figure."""

from __future__ import annotations

from core.evaluation.result import EvaluationResult
from core.evaluation.tasks import TASKS


def table(result: EvaluationResult) -> str:
    """The evaluation as a plain-text table: one row per method, one column per task's headline value."""
    tasks = list(result.tasks)
    cols = [TASKS[t].label for t in tasks]
    width = max([len(m) for m in result.results] + [8])
    lines = [f"{result.scenario} (seed {result.seed}, {result.model.arch}, test accuracy {result.model.test_acc:.1%})",
             f"{'method':<{width}}  " + "  ".join(f"{c:>15}" for c in cols) + "   fit s"]
    for m, row in result.results.items():
        cells = []
        for t in tasks:
            value = result.headline(m, t)
            cells.append(f"{value:>15.3f}" if value is not None else f"{row[t].status if t in row else '-':>15}")
        fit = result.methods[m].fit_seconds
        lines.append(f"{m:<{width}}  " + "  ".join(cells) + (f"   {fit:5.1f}" if fit is not None else "     -"))
    if "backdoor" in tasks:
        base = next((r.values["base_rate"] for r in result.ok("backdoor").values()), None)
        lines.append("backdoor: poisoned share of the top-k proponents of triggered samples "
                     f"(base rate {'-' if base is None else f'{base:.3f}'})")
    for m, t, r in result.problems():
        lines.append(f"  {m} / {t}: {r.status}: {r.reason}")
    return "\n".join(lines)
