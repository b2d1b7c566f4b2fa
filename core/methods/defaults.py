"""The methods each page and benchmark job starts with, and which methods it offers: one place.

A job's ``flags`` are what a method must have to take part (:func:`core.methods.offered`'s
filters, e.g. ``per_test``: it scores a test sample); its ``methods`` are the defaults, all
among the offered ones (``tests/test_method_lists.py`` checks it). The pages and the benchmark
scripts import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.methods.base import offered


@dataclass(frozen=True)
class Choice:
    """The methods one page or benchmark job starts with, and what a method needs to be offered there."""

    methods: tuple[str, ...]  # the defaults, in the order they are shown
    flags: dict[str, bool] = field(default_factory=dict)  # what a method needs for the job

    def offered(self) -> list[str]:
        """The methods this job offers, the baselines last."""
        return offered(**self.flags)


CHOICES: dict[str, Choice] = {
    # The Explore page's attribution panel: one method, precomputed in seconds and close to exact TracIn.
    "explore": Choice(("tracin-rp",), {"per_test": True}),
    # The Compare page: two methods that both precompute in seconds; add GAS, TRAK, ... at will.
    "compare": Choice(("tracin-rp", "representer"), {"per_test": True}),
    # The Evaluate page: a spread of fast methods (representer points, TracIn, GAS, DualView) and two
    # baselines; the slow ones (influence, TRAK, cleanlab's retraining) are one click away.
    "evaluate": Choice(("representer", "tracin-rp", "gas-rp", "dualview", "loss", "random")),
    # The Mislabels page: fast to precompute and, measured on mnist-noisy (docs/REPORT.md), strong: the
    # training loss and representer points; random is the floor. cleanlab, TracIn, TRAK, influence are
    # one click away.
    "mislabels": Choice(("loss", "representer", "random"), {"self_influence": True}),
    # benchmarks/bench_attribution.py: the methods whose query time is held to the project's target.
    "bench-fast": Choice(("tracin-rp", "trak", "dualview", "representer", "graddot"), {"per_test": True}),
    # benchmarks/backdoor_detection.py --quick: fewer methods, each fast on the three backdoor scenarios.
    "backdoor-quick": Choice(("tracin-rp", "gas-rp", "graddot", "representer", "random"), {"per_test": True}),
}


def default_methods(job: str) -> tuple[str, ...]:
    """The methods ``job`` starts with (a key of :data:`CHOICES`)."""
    return CHOICES[job].methods
