"""What the benchmark scripts share: their common options and the set-up those options ask for."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import torch

from core.cache import Cache
from core.errors import AttrexError


def common_args(ap: argparse.ArgumentParser, quick_help: str) -> None:
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    ap.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    ap.add_argument("--cache-dir", default=None, help="cache folder (default: attrex's)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def setup(args: argparse.Namespace, tag: str) -> tuple[Cache | None, Callable[[str], None]]:
    """Apply ``--threads``; the cache of ``--cache-dir``; a progress log on stderr unless ``--quiet``."""
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[{tag} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr)

    return (Cache(args.cache_dir) if args.cache_dir else None), log


def section_main(argv: list[str] | None, doc: str, tag: str, quick_help: str, run: Callable, render: Callable) -> int:
    """The command line of a report section run on its own: ``run(cache, log, quick)``, then its JSON or
    ``render``'s Markdown lines on stdout; a bad setting (:class:`AttrexError`) exits with status 2."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    common_args(ap, quick_help)
    args = ap.parse_args(argv)
    cache, log = setup(args, tag)
    try:
        data = run(cache or Cache(), log, args.quick)
    except AttrexError as e:
        print(f"{tag}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(data, indent=1) if args.json else "\n".join(render(data)))
    return 0
