"""The TCP sockets a process tree listens on, read from /proc (Linux): for the tests that the app and Ray stay local.

:func:`listening` maps each LISTEN row of /proc/net/tcp and /proc/net/tcp6 to the processes
holding that socket (their /proc/<pid>/fd links name the socket's inode), so a socket is
reported with the program that opened it.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
LISTEN = "0A"  # the TCP state column of /proc/net/tcp*


@dataclass(frozen=True)
class Listener:
    pid: int
    program: str
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        ip = ipaddress.ip_address(self.address)
        mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1, an IPv4 socket opened as IPv6
        return (mapped or ip).is_loopback

    def __str__(self) -> str:
        return f"{self.program} (pid {self.pid}) on {self.address} port {self.port}"


def available() -> bool:
    return (PROC / "net" / "tcp").is_file()


def _address(field: str) -> tuple[str, int]:
    """``0100007F:1F90`` → ``("127.0.0.1", 8080)``: the kernel writes each 32-bit word in host (little-endian) order."""
    hex_ip, hex_port = field.split(":")
    raw = bytes.fromhex(hex_ip)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw)), int(hex_port, 16)


def _listening_inodes() -> dict[int, tuple[str, int]]:
    found = {}
    for table in ("tcp", "tcp6"):
        path = PROC / "net" / table
        if not path.is_file():  # no IPv6 on this machine
            continue
        for row in path.read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == LISTEN:
                found[int(fields[9])] = _address(fields[1])
    return found


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def listening(pids: list[int]) -> list[Listener]:
    """The TCP sockets the processes ``pids`` listen on (a process that ended meanwhile is skipped)."""
    inodes = _listening_inodes()
    found = set()
    for pid in pids:
        fd_dir = PROC / str(pid) / "fd"
        try:
            program = (PROC / str(pid) / "comm").read_text().strip()
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                found.add(Listener(pid, program, *inodes[int(target[8:-1])]))
    return sorted(found, key=lambda s: (s.pid, s.port))
