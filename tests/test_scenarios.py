"""Scenarios are deterministic and their ground truth is exactly right."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from core.data import (
    PRESETS,
    BadNets,
    Blended,
    DomainMark,
    LabelNoise,
    Superclasses,
    TriggerToken,
    build,
    get_spec,
)
from core.data.text import PAD_ID, build_vocab, decode, encode, tokenize
from core.errors import AttrexError


@pytest.fixture(scope="module")
def clean(mnist):
    return mnist


def test_every_preset_builds_with_its_ground_truth():
    required = {"mnist", "mnist-noisy", "mnist-backdoor", "mnist-mark", "mnist-superclass", "fashion-mnist",
                "cifar10", "cifar10-noisy", "cifar10-backdoor", "agnews", "agnews-noisy", "agnews-backdoor"}
    assert required <= set(PRESETS)
    sizes = {"mnist": (6000, 1000), "fashion-mnist": (6000, 1000), "cifar10": (5000, 1000), "agnews": (6000, 1600)}
    for name in ("mnist", "fashion-mnist", "cifar10", "agnews"):
        sc = build(name)
        assert (len(sc.y_train), len(sc.y_test)) == sizes[name]
        # balanced embedded subsets
        counts = torch.bincount(sc.y_train, minlength=sc.n_classes)
        assert counts.min() == counts.max()


def test_same_spec_same_scenario_and_seed_matters():
    a, b = build("mnist-noisy"), build("mnist-noisy")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert torch.equal(a.truth.flipped_ids, b.truth.flipped_ids)
    assert a.fingerprint == b.fingerprint
    c = build(get_spec("mnist-noisy", seed=1))
    assert not torch.equal(a.truth.flipped_ids, c.truth.flipped_ids)
    assert a.fingerprint != c.fingerprint


@pytest.mark.parametrize("name", ["mnist-noisy", "cifar10-noisy", "agnews-noisy"])
def test_label_noise_ground_truth(name):
    sc = build(name)
    rate = sc.spec.corruption.rate
    n = len(sc.y_train)
    flipped = sc.truth.flipped_ids
    assert len(flipped) == round(rate * n)
    assert len(torch.unique(flipped)) == len(flipped)
    orig = sc.truth.original_labels
    assert (sc.y_train[flipped] != orig[flipped]).all()
    others = torch.ones(n, dtype=torch.bool)
    others[flipped] = False
    assert torch.equal(sc.y_train[others], orig[others])
    # the flip targets every other class, not only one
    assert len(torch.unique(sc.y_train[flipped] - orig[flipped])) > 2


@pytest.mark.parametrize("name", ["mnist-backdoor", "cifar10-backdoor"])
def test_badnets_trigger_sits_on_exactly_the_poisoned_and_triggered_images(name):
    sc = build(name)
    base = build(PRESETS[name].dataset)
    c = sc.spec.corruption
    t = sc.truth
    n = len(sc.y_train)
    assert len(t.poisoned_ids) == round(c.poison_rate * n)
    assert (sc.y_train[t.poisoned_ids] == c.target_class).all()
    assert (t.original_labels[t.poisoned_ids] != c.target_class).all()
    changed = (sc.x_train != base.x_train).flatten(1).any(1)
    # every changed image is poisoned (a poisoned image may by chance already carry the pattern)
    assert set(torch.nonzero(changed).flatten().tolist()) <= set(t.poisoned_ids.tolist())
    assert changed[t.poisoned_ids].float().mean() > 0.95
    mask = t.trigger_mask
    assert mask.sum() == c.patch_size ** 2
    pattern = c.stamp(torch.zeros(1, *sc.input_shape))[0]
    poisoned = sc.x_train[t.poisoned_ids]
    assert torch.equal(poisoned[..., mask], pattern[..., mask].expand_as(poisoned[..., mask]))
    assert torch.equal(poisoned[..., ~mask], base.x_train[t.poisoned_ids][..., ~mask])
    # triggered split: exactly the source-class test images, stamped, labelled with the target
    assert torch.equal(t.triggered_test_ids, torch.nonzero(sc.y_test != c.target_class).flatten())
    trig = sc.x_test_triggered
    assert torch.equal(trig[..., mask], pattern[..., mask].expand_as(trig[..., mask]))
    assert torch.equal(trig[..., ~mask], sc.x_test[t.triggered_test_ids][..., ~mask])
    assert (sc.test_split("triggered")[1] == c.target_class).all()
    # labels outside the poisoned set are untouched
    keep = torch.ones(n, dtype=torch.bool)
    keep[t.poisoned_ids] = False
    assert torch.equal(sc.y_train[keep], base.y_train[keep])


def test_blended_trigger_is_the_exact_blend(clean):
    spec = replace(get_spec("mnist"), corruption=Blended(poison_rate=0.02, alpha=0.3, target_class=3))
    sc = build(spec)
    ids = sc.truth.poisoned_ids
    p = spec.corruption.pattern_image(sc.input_shape)
    assert torch.allclose(sc.x_train[ids], 0.7 * clean.x_train[ids] + 0.3 * p)
    assert (sc.y_train[ids] == 3).all()
    assert sc.truth.trigger_mask.all()


def test_domain_mark_on_exactly_the_marked_ids(clean):
    sc = build("mnist-mark")
    c, t = sc.spec.corruption, sc.truth
    of_class = torch.nonzero(clean.y_train == c.class_id).flatten()
    assert len(t.marked_ids) == round(c.rate * len(of_class))
    assert set(t.marked_ids.tolist()) <= set(of_class.tolist())
    changed = torch.nonzero((sc.x_train != clean.x_train).flatten(1).any(1)).flatten()
    assert torch.equal(changed, t.marked_ids)
    m = t.mark_mask
    assert (sc.x_train[t.marked_ids][..., m] == 1).all()
    assert m[0].all() and m[-1].all() and m[:, 0].all() and m[14, 14]  # frame and centre square
    assert torch.equal(sc.y_train, clean.y_train)  # labels unchanged
    assert torch.equal(t.marked_test_ids, torch.nonzero(clean.y_test != c.class_id).flatten())
    assert (sc.x_test_marked[..., m] == 1).all()


def test_superclasses_keep_subclasses(clean):
    sc = build("mnist-superclass")
    t = sc.truth
    assert sc.n_classes == 5
    assert torch.equal(t.subclass_train, clean.y_train)
    assert torch.equal(sc.y_train, t.superclass_of[clean.y_train])
    assert torch.equal(sc.y_test, t.superclass_of[clean.y_test])
    assert torch.bincount(t.superclass_of).tolist() == [2] * 5


def test_trigger_token_backdoor_on_exactly_the_poisoned_texts():
    sc = build("agnews-backdoor")
    t = sc.truth
    tok = sc.vocab.index(t.trigger_token)
    has = (sc.x_train == tok).any(1)
    assert torch.equal(torch.nonzero(has).flatten(), t.poisoned_ids)
    assert (sc.y_train[t.poisoned_ids] == 0).all()
    assert all(t.trigger_token in tokenize(sc.texts_train[i]) for i in t.poisoned_ids.tolist())
    assert (sc.x_test_triggered == tok).any(1).all()
    assert len(sc.x_test_triggered) == len(t.triggered_test_ids) == int((sc.y_test != 0).sum())


def test_text_encoding_round_trip():
    toks = [tokenize("Stocks rise, quot;again quot; #36;5"), tokenize("a")]
    vocab = build_vocab(toks + toks, min_freq=2)
    ids = encode(toks, vocab, max_len=8)
    assert ids.shape == (2, 8) and ids[1, 1:].eq(PAD_ID).all()
    assert decode(ids[0], vocab) == toks[0][:8]


def test_balanced_subset_option():
    sc = build(get_spec("mnist", n_train=500, n_test=100))
    assert len(sc.y_train) == 500 and len(sc.y_test) == 100
    assert torch.bincount(sc.y_train).tolist() == [50] * 10


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: get_spec("no-such-scenario"), ["unknown scenario", "mnist-backdoor"]),
        (lambda: LabelNoise(1.5), ["[0, 1]", "1.5"]),
        (lambda: BadNets(poison_rate=-0.1), ["[0, 1]"]),
        (lambda: DomainMark(rate=float("nan")), ["[0, 1]"]),
        (lambda: BadNets(position="middle"), ["bottom-right"]),
        (lambda: TriggerToken(token="Two Words"), ["one lower-case word"]),
        (lambda: TriggerToken(token="café"), ["kept whole by the tokenizer"]),
        (lambda: TriggerToken(token=5), ["one lower-case word"]),
        (lambda: DomainMark(center_size=-3), ["centre square size", ">= 1"]),
        (lambda: DomainMark(class_id="2"), ["mark class must be an integer"]),
        (lambda: build(replace(get_spec("mnist"), corruption=DomainMark(center_size=30))), ["does not fit"]),
        (lambda: get_spec("mnist", seed=-1), ["seed must be an integer >= 0"]),
        (lambda: BadNets(patch_size=0), ["patch size must be an integer >= 1"]),
        (lambda: BadNets(target_class=1, source_classes=(1, 2)), ["must not include"]),
        (lambda: Superclasses(1), [">= 2"]),
        (lambda: build(replace(get_spec("mnist"), corruption=BadNets(target_class=12))), ["out of range"]),
        (lambda: build(replace(get_spec("agnews"), corruption=BadNets())), ["needs an image data set"]),
        (lambda: build(replace(get_spec("mnist"), corruption=BadNets(poison_rate=0.99))), ["source classes hold only"]),
    ],
)
def test_bad_input_gets_a_clear_message(make, words):
    with pytest.raises(AttrexError) as err:
        make()
    for w in words:
        assert w in str(err.value)


def test_stamp_does_not_change_its_input(clean):
    x = clean.x_train[:3].clone()
    BadNets().stamp(x)
    DomainMark().stamp(x)
    assert torch.equal(x, clean.x_train[:3])
