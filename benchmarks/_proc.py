"""Memory figures of a process from Linux's ``/proc/<pid>/status``, for the benchmarks that report memory."""

from __future__ import annotations

from pathlib import Path


def status_kib(field: str, pid: int | str = "self") -> int | None:
    """Field ``field`` of ``/proc/<pid>/status`` (``VmRSS``: resident now, ``VmHWM``: its peak) in KiB, or ``None``
    where there is no ``/proc`` or the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in lines if line.startswith(f"{field}:")), None)
