"""The locked environment: requirements.lock (the app) and requirements-test.lock (app + the
test extra) pin every package with hashes, satisfy pyproject.toml's ranges, agree with each
other, and are what this interpreter actually has installed (a drifted venv fails here)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
APP_LOCK = ROOT / "requirements.lock"
TEST_LOCK = ROOT / "requirements-test.lock"
# the packages whose drift matters most: the tensor stack and the app's framework
CHECK_INSTALLED = ("torch", "torchvision", "numpy", "streamlit")

ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?P<rest>.*)$")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def _entries(path: Path) -> list[str]:
    """The lock's requirement entries, each with its continuation lines joined; comments dropped."""
    entries: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            if current:  # a continuation ended on a comment or blank line
                entries.append(current.strip())
                current = ""
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
        else:
            entries.append((current + line).strip())
            current = ""
    if current:
        entries.append(current.strip())
    return entries


def _parse(path: Path) -> dict[str, tuple[Version, list[str]]]:
    pins: dict[str, tuple[Version, list[str]]] = {}
    for entry in _entries(path):
        m = ENTRY.match(entry)
        assert m, f"{path.name}: not an exact pin: {entry[:120]!r}"
        name = canonicalize_name(m["name"])
        assert name not in pins, f"{path.name}: {name} pinned twice"
        hashes = HASH.findall(m["rest"])
        leftover = HASH.sub("", m["rest"]).strip()
        assert not leftover, f"{path.name}: {name}: unexpected {leftover!r}"
        pins[name] = (Version(m["version"]), hashes)
    return pins


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def app_lock() -> dict[str, tuple[Version, list[str]]]:
    return _parse(APP_LOCK)


@pytest.fixture(scope="module")
def test_lock() -> dict[str, tuple[Version, list[str]]]:
    return _parse(TEST_LOCK)


def _requirements(specs: list[str]) -> list[Requirement]:
    reqs = [Requirement(s) for s in specs]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


@pytest.mark.parametrize("lock_path", [APP_LOCK, TEST_LOCK], ids=lambda p: p.name)
def test_every_entry_is_pinned_with_hashes(lock_path: Path):
    pins = _parse(lock_path)
    assert len(pins) > 10, f"{lock_path.name} holds only {len(pins)} packages"
    unhashed = sorted(name for name, (_, hashes) in pins.items() if not hashes)
    assert not unhashed, f"{lock_path.name}: no hash for {unhashed}"
    head = lock_path.read_text().splitlines()[:6]
    assert any("Linux x86-64" in line and "3.11" in line for line in head), (
        f"{lock_path.name}: the header names no target platform"
    )


def _check_ranges(reqs: list[Requirement], pins: dict, lock_name: str) -> None:
    problems = []
    for req in reqs:
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req.name} is missing")
            continue
        version = pins[name][0]
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}=={version} is outside {req.specifier}")
    assert not problems, f"{lock_name}: " + "; ".join(problems)


def test_app_lock_satisfies_the_project_dependencies(project, app_lock):
    _check_ranges(_requirements(project["dependencies"]), app_lock, APP_LOCK.name)


def test_test_lock_satisfies_the_dependencies_and_the_test_extra(project, test_lock):
    reqs = _requirements(project["dependencies"] + project["optional-dependencies"]["test"])
    _check_ranges(reqs, test_lock, TEST_LOCK.name)


def test_the_locks_agree(app_lock, test_lock):
    missing = sorted(set(app_lock) - set(test_lock))
    assert not missing, f"in {APP_LOCK.name} but not in {TEST_LOCK.name}: {missing}"
    differ = {
        name: (str(app_lock[name][0]), str(test_lock[name][0]))
        for name in app_lock
        if app_lock[name][0] != test_lock[name][0]
    }
    assert not differ, f"pinned differently (app, test): {differ}"


@pytest.mark.parametrize("name", CHECK_INSTALLED)
def test_installed_versions_are_the_locked_ones(name, test_lock):
    pinned = test_lock[canonicalize_name(name)][0]
    try:
        installed = Version(metadata.version(name))
    except metadata.PackageNotFoundError:
        pytest.fail(f"{name} is not installed; `make test` installs {name}=={pinned}")
    assert installed == pinned, (
        f"{name} {installed} is installed but the lock pins {pinned}: "
        "the venv has drifted (rm .venv/.installed* and run `make test`)"
    )
