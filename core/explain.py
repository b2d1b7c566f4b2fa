"""One test sample explained: its proponents and opponents as a JSON-friendly record, and their feature-level views.

:func:`explain_record` is what ``attrex explain`` prints; :func:`write_features` writes FLIA and
DualView-LRP files for every listed pair (``attrex explain --features OUTDIR``).
"""

from __future__ import annotations

from pathlib import Path

from core.cache import Cache
from core.errors import AttrexError


def explain_record(scenario, trained, method, split: str, index: int, k: int, target: int | None) -> dict:
    """Proponents and opponents of one test sample as a JSON-friendly dict (the CLI prints it)."""
    from core.models import predict_proba

    x_all, y_all = scenario.test_split(split)
    if not 0 <= index < len(y_all):
        raise AttrexError(f"--test must lie in [0, {len(y_all) - 1}] for the {split} split; got {index}")
    x = x_all[index: index + 1]
    probs = predict_proba(trained.model, x)[0]
    top = method.top_k(x, target, k=k)
    names = scenario.class_names
    truth = scenario.truth

    def rows(ids, scores):
        flags = truth.train_flags(ids.tolist())
        out = []
        for rank, (i, s, f) in enumerate(zip(ids.tolist(), scores.tolist(), flags, strict=True), 1):
            label = int(scenario.y_train[i])
            rec = {"rank": rank, "train_id": i, "score": s, "label": label, "label_name": names[label], "flags": f}
            if "flipped" in f:
                rec["original_label"] = int(truth.original_labels[i])
                rec["flag_text"] = truth.flip_text(i, names, label)
            out.append(rec)
        return out

    explained = int(top.targets[0])
    return {
        "scenario": scenario.spec.name,
        "k": len(top.proponents[0]),
        "method": {"name": method.name, "params": method.hparams, "fit_seconds": method.fit_seconds,
                   "cache": method.fit_status, "info": method.info},
        "test": {"split": split, "index": index, "label": int(y_all[index]), "label_name": names[int(y_all[index])],
                 "predicted": int(probs.argmax()), "confidence": float(probs.max()),
                 "explained_class": explained, "explained_name": names[explained]},
        "proponents": rows(top.proponents[0], top.proponent_scores[0]),
        "opponents": rows(top.opponents[0], top.opponent_scores[0]),
    }


def write_features(scenario, trained, rec: dict, outdir: str, cache: Cache | None = None, log=print) -> None:
    """FLIA and DualView-LRP of every listed pair as files in ``outdir``; adds their names and figures to ``rec``.

    Images: ``test.png``, and per training point ``<kind>-<rank>-train<id>.png`` (the image),
    ``…-flia.png`` (|FLIA| on it), ``…-lrp-train.png`` / ``…-lrp-test.png`` (DualView-LRP
    relevance on the training and the test image). Text: ``…-flia.html`` (token highlights).
    """
    import torch

    from core.features import dualview_lrp, flia
    from core.features.render import flia_tokens_html, overlay, save_png
    from core.methods import TrainingData, create

    out = Path(outdir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    t = rec["test"]
    x_test = scenario.test_split(t["split"])[0][t["index"]]
    target = t["explained_class"]
    text = scenario.kind == "text"
    scale = 8 if scenario.input_shape[-1] <= 28 else 6
    if not text:
        save_png(overlay(x_test, torch.zeros(x_test.shape[1:]), False, scale), out / "test.png")
        dualview = create("dualview", trained, TrainingData.of(scenario), cache=cache).fit()
    for kind in ("proponents", "opponents"):
        for r in rec[kind]:
            i = r["train_id"]
            stem = f"{kind[:-1]}-{r['rank']:02d}-train{i}"
            res = flia(trained, scenario.x_train[i], int(scenario.y_train[i]), x_test, target, cache=cache)
            feats = {"flia": {"il_path": res.il_path.tolist(), "gap": float(res.gap),
                              "il_change": float(res.il_change), "direction": res.direction}}
            if text:
                page = flia_tokens_html(
                    scenario.vocab, scenario.x_train[i].tolist(), res.heatmap.numpy(),
                    f"FLIA of training text #{i} for test #{t['index']} (class {target}): the stronger "
                    "the colour, the more of the text's influence the word carries (-FLIA, descent)")
                (out / f"{stem}-flia.html").write_text(f"<!doctype html><meta charset='utf-8'>{page}\n",
                                                        encoding="utf-8")
                feats["flia"]["file"] = f"{stem}-flia.html"
            else:
                x = scenario.x_train[i]
                save_png(overlay(x, torch.zeros(x.shape[1:]), False, scale), out / f"{stem}.png")
                save_png(overlay(x, res.heatmap, False, scale), out / f"{stem}-flia.png")
                feats["flia"]["file"] = f"{stem}-flia.png"
                lrp = dualview_lrp(dualview, x_test, i, target)
                save_png(overlay(x, lrp.train_heatmap, True, scale), out / f"{stem}-lrp-train.png")
                save_png(overlay(x_test, lrp.test_heatmap, True, scale), out / f"{stem}-lrp-test.png")
                feats["dualview_lrp"] = {"files": [f"{stem}-lrp-train.png", f"{stem}-lrp-test.png"],
                                         "dualview_score": lrp.score, "composite": lrp.composite,
                                         "conservation": [lrp.conservation_test, lrp.conservation_train]}
            r["features"] = feats
    rec["features_dir"] = str(out)
    log(f"feature-level views written to {out}")
