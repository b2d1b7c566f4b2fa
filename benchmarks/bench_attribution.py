"""Run the attribution benchmark from this folder: ``python benchmarks/bench_attribution.py [options]``.

A thin wrapper around :mod:`core.bench` (the same as ``attrex bench``); ``--help`` lists the options.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, when run from a checkout

from core.bench import main  # noqa: E402

if __name__ == "__main__":  # the guard matters: the full-MNIST run spawns a child process that imports this file
    sys.exit(main())
