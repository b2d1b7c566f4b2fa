"""The one registry helper that lists methods (``core.methods.offered``) and the default methods per job."""

from __future__ import annotations

import pytest

from core.methods import REGISTRY, offered
from core.methods.defaults import CHOICES, default_methods


def test_offered_lists_methods_by_name_then_baselines_by_name():
    everything = offered()
    assert sorted(everything) == sorted(REGISTRY)
    methods = [n for n in everything if not REGISTRY[n].baseline]
    baselines = [n for n in everything if REGISTRY[n].baseline]
    assert everything == methods + baselines and baselines  # baselines last, and there are some
    assert methods == sorted(methods) and baselines == sorted(baselines)
    assert offered(per_test=False) == ["cleanlab", "loss"]  # the baselines that only score training points


@pytest.mark.parametrize("flags", [{"per_test": True}, {"self_influence": True}, {"per_test": True, "retrains": False},
                                   {"self_influence": False}])
def test_offered_filters_by_class_attributes(flags):
    want = {n for n, c in REGISTRY.items() if all(getattr(c, f) is v for f, v in flags.items())}
    got = offered(**flags)
    assert set(got) == want and got == [n for n in offered() if n in want]


def test_offered_refuses_an_unknown_flag():
    with pytest.raises(AttributeError):
        offered(no_such_flag=True)


@pytest.mark.parametrize("job", sorted(CHOICES))
def test_every_default_is_a_registered_method_the_job_offers(job):
    methods = default_methods(job)
    assert methods and len(set(methods)) == len(methods)
    for name in methods:
        assert name in REGISTRY, f"{job}: {name} is not registered"
        assert name in CHOICES[job].offered(), f"{job}: {name} lacks {CHOICES[job].flags}"
