"""A person's own data and model: the loaders, the model split, the methods on it and the CLI, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from _userdata import image_folder, user_model
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from core.data import ScenarioSpec, build
from core.data.scenario import CUSTOM
from core.errors import AttrexError
from core.methods import TrainingData, create
from core.models import ModelSource, train
from core.models.custom import split


def own(path, **kw) -> ScenarioSpec:
    return ScenarioSpec(dataset=CUSTOM, data_dir=str(path), name="custom", **kw)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("imgs") / "digits")


@pytest.fixture(scope="module")
def scenario(folder):
    return build(own(folder))


@pytest.fixture(scope="module")
def files(scenario, tmp_path_factory):
    return user_model(tmp_path_factory.mktemp("model"), scenario.x_train, scenario.y_train)


@pytest.fixture(scope="module")
def source(files):
    return ModelSource(f"{files['module']}:build", str(files["weights"]), str(files["checkpoints"]))


# ----------------------------------------------------------------------------- data


def test_image_folder_reads_classes_pixels_and_holds_out_a_share_per_class(folder, scenario):
    assert scenario.kind == "image" and scenario.class_names == tuple(f"digit{c}" for c in range(10))
    assert scenario.input_shape == (1, 28, 28)
    # 20 images a class, a share of 0.2 held out of each: 16 + 4
    assert torch.bincount(scenario.y_train).tolist() == [16] * 10
    assert torch.bincount(scenario.y_test).tolist() == [4] * 10
    # pixels as Pillow reads the file, independently of the loader
    name = scenario.names_train[17]
    expected = np.asarray(Image.open(folder / name), np.float32) / 255
    assert torch.equal(scenario.x_train[17, 0], torch.from_numpy(expected))
    assert scenario.class_names[int(scenario.y_train[17])] == Path(name).parent.name
    again = build(own(folder))
    assert again.fingerprint == scenario.fingerprint  # deterministic in the spec
    assert build(own(folder, seed=1)).fingerprint != scenario.fingerprint  # the seed draws another hold-out


def test_train_and_test_folders_are_used_as_given(tmp_path):
    image_folder(tmp_path / "train", per_class=5, classes=3)
    image_folder(tmp_path / "test", per_class=2, classes=2)  # a test split may lack a class
    sc = build(own(tmp_path))
    assert len(sc.y_train) == 15 and sc.y_test.tolist() == [0, 0, 1, 1]
    (tmp_path / "test" / "cat").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "test" / "cat" / "a.png")
    with pytest.raises(AttrexError, match="test/ has 1 class folder\\(s\\) that train/ lacks"):
        build(own(tmp_path))


def test_mixed_sizes_need_an_image_size_and_colour_makes_rgb(tmp_path):
    for c, (size, mode) in enumerate([((28, 28), "L"), ((40, 30), "RGB")]):
        (tmp_path / f"c{c}").mkdir()
        for i in range(3):
            Image.new(mode, size, color=(90 * c + i) if mode == "L" else (200, 10 * i, 0)).save(tmp_path / f"c{c}" / f"{i}.png")
    with pytest.raises(AttrexError, match="different sizes .* pass an image size"):
        build(own(tmp_path))
    sc = build(own(tmp_path, image_size=(16, 20)))
    assert sc.input_shape == (3, 16, 20)  # one colour image makes every image RGB
    red = sc.x_train[sc.y_train == 1][0]
    assert red[0].mean() == pytest.approx(200 / 255, abs=1e-6) and red[2].abs().max() == 0


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty", "holds no class folders"),
    ("one-class", "one class only"),
    ("broken", "cannot read c1/bad.png as a PNG or JPEG image"),
    ("no-images", "hold no .png, .jpg or .jpeg images"),
    ("bad-suffix", "must be .npz, .csv or .jsonl"),
])
def test_bad_image_data_gets_a_clear_message(tmp_path, case, message):
    root = tmp_path / "data"
    if case != "missing":
        root.mkdir()
    if case == "one-class":
        image_folder(root, per_class=3, classes=1)
    if case == "broken":
        image_folder(root, per_class=3, classes=1)
        (root / "c1").mkdir()
        (root / "c1" / "bad.png").write_bytes(b"not a png at all")
    if case == "no-images":
        (root / "c0").mkdir()
        (root / "c0" / "notes.txt").write_text("hello")
    if case == "bad-suffix":
        root = tmp_path / "data.txt"
        root.write_text("x")
    with pytest.raises(AttrexError, match=message):
        build(own(root))


def test_texts_from_csv_with_splits_and_jsonl_with_a_held_out_share(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("text,label,split\nstocks fell sharply,business,train\nthe team won the cup,sport,train\n"
                   "markets rallied,business,train\nan injury kept him out,sport,train\nbond yields rose,business,test\n")
    sc = build(own(csv))
    assert sc.kind == "text" and sc.class_names == ("business", "sport")
    assert sc.y_train.tolist() == [0, 1, 0, 1] and sc.y_test.tolist() == [0]
    assert sc.texts_test == ["bond yields rose"] and sc.vocab[:2] == ["<pad>", "<unk>"]
    rows = [{"text": f"word{i % 3} filler {i}", "label": i % 2} for i in range(20)]
    jl = tmp_path / "t.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows))
    sc = build(own(jl, test_share=0.3))
    assert sc.class_names == ("0", "1") and len(sc.y_test) == 6 and len(sc.y_train) == 14


@pytest.mark.parametrize("content, message", [
    ("", "holds no rows"),
    ("text,category\na,b\n", "needs a header with the columns text and label"),
    ("text,label\na,x\nb,x\n", "one class only"),
    ("text,label,split\na,x,train\nb,y,train\nc,z,test\n", "test labels \\['z'\\] are not among the training classes"),
    ("text,label,split\na,x,train\nb,y,validation\n", "split must be train or test"),
    ("text,label\na,x\n,y\n", "row 2 has an empty text or label"),
])
def test_bad_text_data_gets_a_clear_message(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(AttrexError, match=message):
        build(own(path))


def test_npz_arrays_load_and_object_arrays_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 12, 12, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x_train=x[:20], y_train=np.arange(20) % 3, x_test=x[20:], y_test=np.arange(10) % 3,
             class_names=np.array(["a", "b", "c"]))
    sc = build(own(tmp_path / "a.npz"))
    assert sc.input_shape == (3, 12, 12) and sc.class_names == ("a", "b", "c")
    assert torch.equal(sc.x_train[4], torch.from_numpy(x[4].transpose(2, 0, 1).astype(np.float32) / 255))
    np.savez(tmp_path / "o.npz", x_train=np.array([object()] * 3, dtype=object), y_train=np.zeros(3, int),
             x_test=x[:1], y_test=np.zeros(1, int))
    with pytest.raises(AttrexError, match="cannot read o.npz as a numpy archive of plain arrays"):
        build(own(tmp_path / "o.npz"))


def test_known_bad_list_becomes_the_ground_truth(folder, scenario, tmp_path):
    bad = tmp_path / "bad.csv"
    name = scenario.names_train[40]
    bad.write_text(f"id,path,label\n3,,digit7\n,{name},\n")
    sc = build(own(folder, known_bad=str(bad)))
    assert sc.truth.flipped_ids.tolist() == [3, 40] and sc.truth.flips_known
    assert sc.truth.flip_text(3, sc.class_names, int(sc.y_train[3])) == "known bad (correct: digit7)"
    assert sc.truth.flip_text(40, sc.class_names, int(sc.y_train[40])) == "known bad"
    assert sc.truth.summary() == {"known_bad": 2}
    for content, message in [("id\n999\n", "training id in \\[0, 159\\]"), ("id,label\n1,cat\n", "not one of the classes"),
                             ("id\n1\n1\n", "listed twice"), ("name\nx\n", "column id \\(or path\\)")]:
        bad.write_text(content)
        with pytest.raises(AttrexError, match=message):
            build(own(folder, known_bad=str(bad)))


def test_messages_never_echo_a_files_contents_or_the_servers_paths(tmp_path, folder, monkeypatch):
    """A file that is not what was asked for (here a password-file look-alike) is refused without a word of it; a
    folder that cannot be read is a message, not a traceback; paths are named relative to the data's folder."""
    secret = "root:$6$s3cr3t:19000:0:99999:7:::"
    shadow = tmp_path / "shadow.csv"
    shadow.write_text(secret + "\nbin:*:19000\n")
    for kwargs in ({"known_bad": str(shadow)}, {}):
        with pytest.raises(AttrexError) as exc:
            build(own(folder, **kwargs) if kwargs else own(shadow))
        assert "s3cr3t" not in str(exc.value) and "root" not in str(exc.value)
    bad = tmp_path / "bad.csv"
    bad.write_text(f"id\n{secret}\n")
    with pytest.raises(AttrexError, match="the id must be a training id") as exc:
        build(own(folder, known_bad=str(bad)))
    assert "s3cr3t" not in str(exc.value)
    (tmp_path / "j.jsonl").write_text('{"text": "' + secret + '", "label": }\n')
    with pytest.raises(AttrexError, match="invalid JSON at line 1") as exc:
        build(own(tmp_path / "j.jsonl"))
    assert "s3cr3t" not in str(exc.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AttrexError) as exc:
        build(own(empty))
    assert str(tmp_path) not in str(exc.value)

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(AttrexError, match="cannot read the data: Permission denied") as exc:
        build(own(empty))
    assert str(tmp_path) not in str(exc.value)


# ----------------------------------------------------------------------------- model


def test_split_finds_the_head_of_sequential_and_torchvision_models():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32)
    for build_net, head in [(lambda: torchvision.models.resnet18(num_classes=3), "fc"),
                            (lambda: torchvision.models.mobilenet_v3_small(num_classes=3), "classifier.3"),
                            (lambda: nn.Sequential(nn.Flatten(), nn.Linear(3072, 8), nn.ReLU(), nn.Linear(8, 3)), "3")]:
        reference = build_net().eval()
        net = build_net()
        model = split(net, reference.state_dict(), x, 3)
        assert model.head_layer == head
        with torch.no_grad():
            expected = reference(x)  # the untouched network, computed independently of the split
            assert torch.allclose(model(x), expected, rtol=1e-5, atol=1e-6)
            assert torch.allclose(model.head(model.features(x)), expected, rtol=1e-5, atol=1e-6)


class _AuxLast(nn.Module):
    """The real head is ``fc``; an unused ``aux`` layer defined after it is the last nn.Linear."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU())
        self.fc = nn.Linear(8, 2)
        self.aux = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.body(x))


def test_a_model_attrex_cannot_split_gets_told_what_to_pass():
    x = torch.rand(5, 1, 4, 4)
    net = _AuxLast()
    with pytest.raises(AttrexError, match="Pass --head-layer .* and --features-layer"):
        split(_AuxLast(), net.state_dict(), x, 2)
    model = split(_AuxLast(), net.state_dict(), x, 2, head_layer="fc")
    assert torch.allclose(model(x), net(x), atol=1e-6)
    hooked = split(_AuxLast(), net.state_dict(), x, 2, head_layer="fc", features_layer="body")
    assert torch.allclose(hooked.features(x), net.body(x)) and torch.allclose(hooked(x), net(x), atol=1e-6)
    with pytest.raises(AttrexError, match="has 2 outputs but the data has 3 classes"):
        split(_AuxLast(), net.state_dict(), x, 3, head_layer="fc")


def test_weights_that_are_not_a_plain_state_dict_are_refused(files, scenario, tmp_path):
    pickled = tmp_path / "module.pt"
    torch.save(torchvision.models.resnet18(), pickled)  # a pickled module object: never unpickled
    with pytest.raises(AttrexError, match="weights-only state dict"):
        train(scenario, ModelSource(f"{files['module']}:build", str(pickled)))
    other = tmp_path / "other.pt"
    torch.save(nn.Linear(3, 3).state_dict(), other)
    with pytest.raises(AttrexError, match="the weights do not fit the model"):
        train(scenario, ModelSource(f"{files['module']}:build", str(other)))
    for entry, message in [("nomodule_xyz:build", "cannot import 'nomodule_xyz'"), ("torch:nonexistent", "no function"),
                           ("justaname", "package.module:function")]:
        with pytest.raises(AttrexError, match=message):
            train(scenario, ModelSource(entry, str(files["weights"])))


def _loss_grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    rows = []
    for xi, yi in zip(x, y, strict=True):
        net.zero_grad()
        nn.functional.cross_entropy(net(xi[None]), yi[None]).backward()
        rows.append(torch.cat([p.grad.flatten() for p in net.parameters()]).double())
    return torch.stack(rows)


def test_tracin_on_a_loaded_model_equals_the_sum_over_its_checkpoint_files(scenario, files, source):
    trained = train(scenario, source)
    assert [c.lr for c in trained.checkpoints] == [0.1, 0.05, 0.01] and trained.checkpoints_given
    method = create("tracin", trained, TrainingData.of(scenario)).fit()
    x = scenario.x_test[:3]
    got = method.scores(x).double()
    # independently: the user's own module at each saved checkpoint, per-sample autograd, no attrex code
    namespace: dict = {}
    exec(files["module"].read_text(), namespace)
    final = namespace["build"]()
    final.load_state_dict(torch.load(files["weights"], weights_only=True))
    target = final.eval()(x).argmax(1)
    listed = json.loads((files["checkpoints"] / "checkpoints.json").read_text())
    expected = torch.zeros(3, len(scenario.y_train), dtype=torch.float64)
    for item in listed:
        net = namespace["build"]()
        net.load_state_dict(load_file(str(files["checkpoints"] / item["file"])))
        net.eval()
        expected += item["lr"] * _loss_grads(net, x, target) @ _loss_grads(net, scenario.x_train, scenario.y_train).T
    # float32 gradients against float64 sums of float32 gradients: measured max error 2e-7 of the largest score
    assert torch.allclose(got, expected, rtol=0, atol=1e-5 * expected.abs().max().item())
    with torch.no_grad():
        accuracy = (final(scenario.x_test).argmax(1) == scenario.y_test).float().mean().item()
    assert trained.test_accuracy == pytest.approx(accuracy, abs=1e-7)


def test_without_checkpoints_methods_that_need_them_say_so_and_the_rest_run(scenario, files):
    trained = train(scenario, ModelSource(f"{files['module']}:build", str(files["weights"])))
    assert not trained.checkpoints_given
    data = TrainingData.of(scenario)
    for name in ("tracin", "tracin-rp", "gas"):
        with pytest.raises(AttrexError, match="came without them"):
            create(name, trained, data)
    with pytest.raises(AttrexError, match="retrains the model"):
        create("cleanlab", trained, data)
    with pytest.raises(AttrexError, match="models=1"):
        create("trak", trained, data, models=2).fit()
    scores = create("graddot", trained, data).fit().scores(scenario.x_test[:2])
    assert scores.shape == (2, len(scenario.y_train)) and torch.isfinite(scores).all()


@pytest.mark.slow
def test_every_method_runs_on_a_loaded_model_or_says_why_not(scenario, source):
    """Each registered method on the person's model and data: scores of the right shape and finite, a
    self-score per training point where it has one, or (cleanlab, which retrains) a refusal saying why."""
    from core.methods import REGISTRY

    trained = train(scenario, source)
    data, x = TrainingData.of(scenario), scenario.x_test[:2]
    for name, cls in REGISTRY.items():
        if cls.retrains:
            with pytest.raises(AttrexError, match="retrains the model"):
                create(name, trained, data)
            continue
        method = create(name, trained, data).fit()
        if cls.per_test:
            s = method.scores(x)
            assert s.shape == (2, len(scenario.y_train)) and torch.isfinite(s).all(), name
        if cls.self_influence:
            self_scores = method.self_scores()
            assert self_scores.shape == (len(scenario.y_train),) and torch.isfinite(self_scores).all(), name


# ----------------------------------------------------------------------------- CLI


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}, timeout=300)


@pytest.mark.slow
def test_cli_prepares_explains_and_evaluates_your_own_model(folder, files, scenario, tmp_path):
    own_args = ["--data", str(folder), "--model", "usernet:build", "--weights", str(files["weights"]),
                "--checkpoints", str(files["checkpoints"]), "--quiet", "--json"]
    cwd = files["module"].parent  # the entry point is importable from the current folder, as with python -m
    out = _cli("prepare", *own_args, "--method", "tracin", cwd=cwd)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["n_train"] == 160 and doc["model"]["cache"] == "loaded" and len(doc["model"]["checkpoints"]) == 3

    out = _cli("explain", *own_args, "--method", "tracin", "--test", "0", "--k", "3", "--features",
               str(tmp_path / "views"), cwd=cwd)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    assert len(rec["proponents"]) == 3
    assert all((tmp_path / "views" / f).is_file() for r in rec["proponents"] for f in r["features"]["dualview_lrp"]["files"])

    bad = tmp_path / "bad.csv"
    bad.write_text("id\n" + "\n".join(map(str, range(0, 160, 16))) + "\n")
    out = _cli("evaluate", *own_args, "--known-bad", str(bad), "--methods", "tracin,loss", cwd=cwd)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    auroc = res["results"]["loss"]["mislabel"]["values"]["auroc"]
    # the loss ranking's AUROC against those ten ids, computed here from the model's own losses
    from sklearn.metrics import roc_auc_score

    trained = train(scenario, ModelSource(f"{files['module']}:build", str(files["weights"]), str(files["checkpoints"])))
    with torch.no_grad():
        losses = nn.functional.cross_entropy(trained.model(scenario.x_train), scenario.y_train, reduction="none")
    truth = np.isin(np.arange(160), np.arange(0, 160, 16))
    assert auroc == pytest.approx(roc_auc_score(truth, losses.numpy()), abs=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--data", "{data}", "--weights", "w.pt"], "belong(s) to your own model: add --model"),
    (["--data", "{data}", "--model", "usernet:build"], "--model needs --weights"),
    (["--data", "{data}", "--scenario", "mnist"], "--scenario PRESET or --data PATH"),
    (["--scenario", "mnist", "--image-size", "10x10"], "--image-size applies to your own data"),
    (["--data", "{data}", "--image-size", "ten"], "an image size is HxW"),
    (["--data", "{data}", "--model", "usernet:build", "--weights", "w.pt"], "does not exist"),
])
@pytest.mark.slow
def test_cli_rejects_inconsistent_own_data_flags(folder, args, message, tmp_path):
    out = _cli("prepare", *(a.format(data=folder) for a in args), "--quiet", cwd=tmp_path)
    assert out.returncode == 2 and message in out.stderr, out.stderr
