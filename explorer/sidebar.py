"""The sidebar every page shares: scenario picker, seed and model options, the model's status."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.cache import Cache
from core.data import DATASETS, DEFAULT_SCENARIO, PRESETS, uploads
from core.data.scenario import CUSTOM, custom_spec
from core.errors import AttrexError
from core.models import ARCHITECTURES, ModelSource, TrainedModel, default_config
from core.models.custom import REGISTRY_PREFIX
from explorer import access, links, nav, session, state
from explorer.render import inert
from explorer.state import Selection

SOURCES = ("Built-in scenario", "Your data")


def pick_scenario() -> Selection:
    """A built-in scenario or a person's own data and model, from the sidebar."""
    session.restore(session.SOURCE, SOURCES[st.query_params.get("scenario") == CUSTOM])  # each page draws its own
    with st.sidebar:
        st.markdown("### attrex")
        source = st.radio("Data", SOURCES, horizontal=True, key=session.SOURCE, label_visibility="collapsed",
                          on_change=session.remember, args=(session.SOURCE,))
    if source == SOURCES[1]:
        return _your_data()
    return _preset()


def _preset() -> Selection:
    """Scenario, seed and training options from the sidebar (the scenario is mirrored in the URL)."""
    names = list(PRESETS)
    wanted = st.query_params.get("scenario", DEFAULT_SCENARIO)
    if wanted not in PRESETS and wanted != CUSTOM:
        st.sidebar.warning(f"The link names an unknown scenario; showing {DEFAULT_SCENARIO}. It named:")
        st.sidebar.text(str(wanted)[:120])  # plain text: a link's content is never rendered as Markdown
        wanted = DEFAULT_SCENARIO
    wanted = DEFAULT_SCENARIO if wanted == CUSTOM else wanted
    session.restore(session.SCENARIO, wanted)  # the link's scenario first, then the last one picked on any page
    with st.sidebar:
        name = st.selectbox(
            "Scenario", names, key=session.SCENARIO, on_change=session.remember, args=(session.SCENARIO,),
            help="A data set, perhaps with something planted in it: flipped labels, a backdoor trigger, a mark.",
        )
        st.caption(PRESETS[name].description)
        dataset = PRESETS[name].dataset
        kind = DATASETS[dataset].kind
        archs = [a for a, arch in ARCHITECTURES.items() if arch.kind == kind]
        model_keys = (session.SEED, session.arch(dataset), session.epochs(dataset))
        seed = links.seed()
        for key, default in zip(model_keys, (0 if seed is None else seed, default_config(dataset).arch, None),
                                strict=True):
            session.restore(key, default)
        with st.expander("Model and seed"), st.form(session.model_form(dataset), border=False):
            seed = int(st.number_input("Seed", min_value=0, max_value=links.SEED_MAX, step=1, key=session.SEED,
                                       help="Seeds the scenario (which points are corrupted) and the training."))
            arch = st.selectbox("Architecture", archs, key=session.arch(dataset),
                                format_func=lambda a: f"{a}: {ARCHITECTURES[a].description}")
            epochs = st.number_input("Epochs", min_value=1, max_value=200, step=1, key=session.epochs(dataset),
                                     placeholder="default",
                                     help="Leave empty for the architecture's default (shown below).")
            st.form_submit_button("Apply", help="Train (or load) the model with these options",
                                  on_click=session.remember, args=model_keys)
            cfg = default_config(dataset, arch, seed=seed, epochs=int(epochs) if epochs else None)
            st.caption(f"{cfg.epochs} epochs, {cfg.optimizer.upper()}, lr {cfg.lr:g} (cosine to "
                       f"{cfg.lr * cfg.final_lr_ratio:g}), batch {cfg.batch_size}, "
                       f"{len(cfg.checkpoint_epochs())} checkpoints")
    links.write_scenario(name)
    links.write_seed(seed)
    return Selection(name, seed, cfg)


def _your_data() -> Selection:
    """A person's own data and (optionally) model, checked before anything runs.

    What the form takes depends on who is served (:mod:`explorer.access`): uploads and the operator's
    list always; server paths and Python entry points only for the local user. A submission that fails
    (a bad file, unreadable data, a model that does not fit) is reported at the top of the page and
    changes nothing: the last one that loaded stays in use.
    """
    shared = access.shared()
    listed = access.operator_list()
    _link_own(shared)
    data_from, model_from = _sources(shared, listed)
    fields = tuple(session.own(f) for f in OWN_FIELDS)
    for key, default in zip(fields, OWN_FIELDS.values(), strict=True):  # each page draws its own form
        session.restore(key, default)
    with st.sidebar, st.form(session.OWN_FORM, border=False):
        form = _data_fields(data_from, listed) | _model_fields(model_from, listed)
        submitted = st.form_submit_button("Load", type="primary", key=session.own("load"), on_click=session.remember,
                                          args=fields)
    if submitted:
        _submit(form, data_from, model_from, listed)
    error = st.session_state.get(session.OWN_ERROR)
    kept = st.session_state.get(session.OWN_SELECTION)
    if error:
        shown = inert(error) + (f" Still showing {inert(kept.scenario)}." if kept else "")
        st.sidebar.error(shown)
        st.error(shown)  # at the top of the page too: the sidebar's end is below the fold
    if kept is None:
        _welcome(shared, listed)
        st.stop()
    if not shared:
        links.write_own(state.remember_own(kept))
    return kept


# the form's fields and their values before a first Load; what Load submitted is kept for every page's form
OWN_FIELDS = {"data": "", "size": "", "share": 0.2, "known": "", "seed": 0, "entry": "", "weights": "", "ckpts": "",
              "features": "", "head": ""}
DATA_FROM = {"upload": "Upload", "listed": "The server's list", "path": "A path on this machine"}
MODEL_FROM = {"train": "attrex trains one", "upload": "Upload weights", "listed": "The server's list",
              "entry": "Python entry point"}


def _link_own(shared: bool) -> None:
    """Before the form: the link's ``own`` token. Locally it names data this server process loaded (a reload);
    serving others, no link carries anyone's data, so a token is dropped with a message."""
    named, token = "own" in st.query_params, links.own()
    if st.query_params.get("scenario") != CUSTOM:
        st.query_params.clear()  # paths stay out of links: at most a token this server knows
        st.query_params["scenario"] = CUSTOM
    if not named or session.OWN_SELECTION in st.session_state:
        return
    recalled = None if shared or token is None else state.recall_own(token)
    if recalled is None:
        st.warning("The link names data loaded in another session" + (
            ": on a shared server a link never carries anyone's data. Upload it here." if shared else
            " that this server no longer holds (it restarted, or the link is not from this server). Load it again."))
        return
    st.session_state[session.OWN_SELECTION] = recalled
    for field, value in _fields_of(recalled).items():
        st.session_state[session.kept(session.own(field))] = value
    st.session_state[session.kept(session.OWN_DATA_FROM)] = "path"
    st.session_state[session.kept(session.OWN_MODEL_FROM)] = "entry" if isinstance(recalled.config, ModelSource) \
        else "train"


def _sources(shared: bool, listed: access.OperatorList) -> tuple[str, str]:
    """Where the data and the model come from (radios above the form, which redraws on a change)."""
    data_opts = ["upload"] + (["listed"] if listed.data else []) + ([] if shared else ["path"])
    model_opts = ["train", "upload"] + (["listed"] if listed.models else []) + ([] if shared else ["entry"])
    with st.sidebar:
        st.caption(access.mode_line())
        if listed.problem:
            st.warning(inert(listed.problem))
        for key, opts in ((session.OWN_DATA_FROM, data_opts), (session.OWN_MODEL_FROM, model_opts)):
            if st.session_state.get(session.kept(key)) not in opts:
                st.session_state[session.kept(key)] = opts[0]
            session.restore(key, opts[0])
        data_from = st.radio("Data", data_opts, key=session.OWN_DATA_FROM, format_func=DATA_FROM.get,
                             horizontal=True, on_change=session.remember, args=(session.OWN_DATA_FROM,))
        model_from = st.radio("Model", model_opts, key=session.OWN_MODEL_FROM, format_func=MODEL_FROM.get,
                              horizontal=True, on_change=session.remember, args=(session.OWN_MODEL_FROM,))
    return data_from, model_from


def _data_fields(data_from: str, listed: access.OperatorList) -> dict:
    """The data part of the form: its widgets' values by field."""
    out: dict = {}
    if data_from == "upload":
        out["data_file"] = st.file_uploader(
            "Data file", type=["zip", "csv", "jsonl", "npz"], key=session.own("data-file"),
            help="A .zip of an image folder (one sub-folder per class; train/ and test/ optional), a .csv or .jsonl "
                 "of texts (columns text, label, optional split) or a .npz of arrays. " + uploads.LIMITS.describe())
    elif data_from == "listed":
        out["data_name"] = st.selectbox("Data set", sorted(listed.data), key=session.own("data-name"))
    else:
        out["data"] = st.text_input(
            "Data path", key=session.own("data"), placeholder="/data/my-images",
            help="An image folder (one sub-folder per class; train/ and test/ optional), a .csv or .jsonl of texts "
                 "(columns text, label, optional split) or a .npz of arrays, on this machine.")
    cols = st.columns(2)
    out["size"] = cols[0].text_input("Image size", key=session.own("size"), placeholder="HxW",
                                     help="Resize every image (needed when sizes differ)")
    out["share"] = cols[1].number_input("Test share", key=session.own("share"), min_value=0.05, max_value=0.9,
                                        step=0.05, help="Held out as the test split where the data has none")
    help_known = ("A CSV of training points known to be mislabelled (column id or path, optional label): the "
                  f"{nav.MISLABELS.title} and {nav.EVALUATE.title} pages score methods against it.")
    if data_from == "path":
        out["known"] = st.text_input("Known-bad list (optional)", key=session.own("known"), placeholder="bad.csv",
                                     help=help_known)
    else:
        out["known_file"] = st.file_uploader("Known-bad list (optional)", type=["csv"], key=session.own("known-file"),
                                             help=help_known)
    out["seed"] = int(st.number_input("Seed", min_value=0, max_value=links.SEED_MAX, step=1, key=session.own("seed"),
                                      help="Seeds the held-out split and, when attrex trains the model, the training."))
    return out


def _model_fields(model_from: str, listed: access.OperatorList) -> dict:
    """The model part of the form: its widgets' values by field."""
    out: dict = {}
    if model_from == "upload":
        out["arch"] = st.selectbox("Architecture", list(ARCHITECTURES), key=session.own("arch"),
                                   format_func=lambda a: f"{a}: {ARCHITECTURES[a].description}",
                                   help="The network your weights belong to (attrex's own architectures)")
        out["weights_file"] = st.file_uploader("Weights (.safetensors)", type=["safetensors"],
                                               key=session.own("weights-file"),
                                               help="A state dict saved with safetensors.torch.save_file; pickles "
                                                    "(.pt, .bin) are never read from a browser.")
        out["ckpts_file"] = st.file_uploader("Checkpoints (optional .zip)", type=["zip"], key=session.own("ckpts-file"),
                                             help='.safetensors files and checkpoints.json, a list of {"file": ..., '
                                                  '"lr": ...} in training order; TracIn, GAS and FLIA need them.')
    elif model_from == "listed":
        out["model_name"] = st.selectbox("Model", sorted(listed.models), key=session.own("model-name"))
    elif model_from == "entry":
        out["entry"] = st.text_input("Model entry point", key=session.own("entry"),
                                     placeholder="package.module:build or /path/net.py:build",
                                     help="A function returning an nn.Module (called with n_classes= if it takes "
                                          "it). Its code runs in this app: only for code you trust.")
        out["weights"] = st.text_input("Weights", key=session.own("weights"),
                                       placeholder="final.safetensors or state_dict.pt")
        out["ckpts"] = st.text_input("Checkpoints folder (optional)", key=session.own("ckpts"),
                                     placeholder="ckpts/ with checkpoints.json",
                                     help='checkpoints.json lists {"file": ..., "lr": ...} in training order; '
                                          "TracIn, GAS and FLIA need them.")
        cols = st.columns(2)
        out["features"] = cols[0].text_input("Features layer", key=session.own("features"), placeholder="auto",
                                             help="Only where attrex cannot split the model itself: the layer whose "
                                                  "flattened output feeds the head")
        out["head"] = cols[1].text_input("Head layer", key=session.own("head"), placeholder="auto",
                                         help="The last nn.Linear (found by attrex)")
    return out


def _submit(form: dict, data_from: str, model_from: str, listed: access.OperatorList) -> None:
    """Load what the form names; on success it replaces the selection in use (and its uploads), else nothing."""
    folder = uploads.UploadFolder(Cache().root) if "upload" in (data_from, model_from) or form.get("known_file") \
        else None
    try:
        selection = own_selection(**_resolve(form, data_from, model_from, listed, folder))
    except AttrexError as exc:
        st.session_state[session.OWN_ERROR] = str(exc)
        if folder is not None:
            folder.remove()
        return
    old = st.session_state.get(session.OWN_UPLOADS)
    if old is not None:
        old.remove()
    st.session_state[session.OWN_UPLOADS] = folder
    st.session_state[session.OWN_SELECTION], st.session_state[session.OWN_ERROR] = selection, None


def _resolve(form: dict, data_from: str, model_from: str, listed: access.OperatorList,
             folder: uploads.UploadFolder | None) -> dict:
    """The form's values as :func:`own_selection`'s arguments: uploads stored in ``folder``, listed names looked up."""
    args = {"size": form["size"], "share": form["share"], "seed": form["seed"], "known": form.get("known", ""),
            "entry": form.get("entry", ""), "weights": form.get("weights", ""), "ckpts": form.get("ckpts", ""),
            "features": form.get("features", ""), "head": form.get("head", ""), "label": None}
    if data_from == "upload":
        sent = form["data_file"]
        if sent is None:
            raise AttrexError("Choose a data file to upload.")
        args["data"] = str(uploads.store_data(sent.name, sent.getvalue(), folder))
        args["label"] = _file_label(sent.name)
    elif data_from == "listed":
        entry = listed.data[form["data_name"]]
        args.update(data=entry.path, size=args["size"] or entry.image_size or "", label=entry.name,
                    known=entry.known_bad or "")
    else:
        args["data"] = form["data"]
    if form.get("known_file") is not None:
        args["known"] = str(uploads.store_known_bad(form["known_file"].name, form["known_file"].getvalue(), folder))
    if model_from == "upload":
        if form["weights_file"] is None:
            raise AttrexError("Choose the weights (.safetensors) to upload, or let attrex train a model.")
        args["entry"] = REGISTRY_PREFIX + form["arch"]
        args["weights"] = str(uploads.store_weights(form["weights_file"].name, form["weights_file"].getvalue(), folder))
        if form["ckpts_file"] is not None:
            args["ckpts"] = str(uploads.store_checkpoints(form["ckpts_file"].name, form["ckpts_file"].getvalue(),
                                                          folder))
    elif model_from == "listed":
        m = listed.models[form["model_name"]]
        args.update(entry=m.entry, weights=m.weights, ckpts=m.checkpoints or "", features=m.features_layer or "",
                    head=m.head_layer or "")
    return args


def _file_label(name: str) -> str:
    """An uploaded file's name as the data's label: its stem, printable, at most 40 characters."""
    stem = Path(name.replace("\\", "/")).stem
    clean = "".join(c for c in stem if c.isprintable()).strip() or "upload"
    return clean[:40]


def _welcome(shared: bool, listed: access.OperatorList) -> None:
    st.title("Your data")
    st.markdown("Choose your data in the sidebar, and your model if you have one, then press **Load**. Everything is "
                "checked before anything runs. Without a model attrex trains its default architecture for the data "
                "(cached on disk). docs/your-data.md in attrex's repository shows the layouts.")
    st.caption(f"Uploads: {uploads.LIMITS.describe()}. "
               + ("This server is shared: uploads are kept for this browser session only, and removed when it ends."
                  if shared else "This server is local: paths on this machine and Python entry points are offered "
                                 "too."))
    if listed.data or listed.models:
        st.caption(f"The operator offers {len(listed.data)} data set(s) and {len(listed.models)} model(s) by name.")


def _fields_of(selection: Selection) -> dict:
    """The form's fields as they were when ``selection`` loaded (for a reload or a link)."""
    spec, cfg = selection.spec, selection.config
    values = {"data": spec.data_dir, "size": "x".join(map(str, spec.image_size)) if spec.image_size else "",
              "share": spec.test_share, "known": spec.known_bad or "", "seed": spec.seed}
    if isinstance(cfg, ModelSource):
        values.update(entry=cfg.entry, weights=cfg.weights, ckpts=cfg.checkpoints or "",
                      features=cfg.features_layer or "", head=cfg.head_layer or "")
    return values


def own_selection(data: str, size: str, share: float, known: str, seed: int, entry: str, weights: str,
                  ckpts: str, features: str, head: str, label: str | None = None) -> Selection:
    """The sidebar's form as a :class:`Selection`, with the data built and the model loaded (or its training
    recipe chosen); raises :class:`AttrexError` on anything wrong, before anything is kept."""
    from core.models import recipe_of

    data, size, known, entry, weights, ckpts = (v.strip() for v in (data, size, known, entry, weights, ckpts))
    if not data:
        raise AttrexError("Enter the path of your data.")
    spec = custom_spec(data, seed=seed, image_size=size or None, test_share=float(share), known_bad=known or None,
                       label=label)
    sc = state.scenario_of(Selection(spec.name, seed, None, spec))  # builds (and checks) the data once
    if entry or weights or ckpts or features.strip() or head.strip():
        if not (entry and weights):
            raise AttrexError("Your model needs both its entry point and its weights.")
        config = ModelSource(entry, weights, ckpts or None, features.strip() or None, head.strip() or None)
    else:
        config = default_config(recipe_of(sc), seed=seed)
    selection = Selection(spec.name, seed, config, spec)
    if isinstance(config, ModelSource):
        state.model_or_job(selection)  # loads and checks the model now: a failure is reported at once
    return selection


def model_status(trained: TrainedModel) -> None:
    """Accuracy, attack success and provenance of the model in use."""
    with st.sidebar:
        st.divider()
        # a code span, safe as it is: the name is a registry key or a Python identifier (ModelSource checks it)
        st.markdown(f"**Model** · `{_model_name(trained)}`" + (" (yours)" if not trained.retrainable else ""))
        cols = st.columns(2)
        cols[0].metric("Test accuracy", f"{trained.test_accuracy:.1%}")
        if trained.attack_success is not None:
            cols[1].metric("Attack success", f"{trained.attack_success:.1%}",
                           help="Share of triggered test inputs classified as the backdoor target.")
        if not trained.retrainable:
            st.caption(f"{len(trained.checkpoints)} checkpoints" if trained.checkpoints_given else
                       "no checkpoints: TracIn, GAS and FLIA need them")
        else:
            st.caption(f"{trained.config.epochs} epochs, {len(trained.checkpoints)} checkpoints · trained in "
                       f"{trained.train_seconds:.0f} s, kept in the disk cache")
        for msg in trained.cache_messages:
            st.warning(inert(msg))


def _model_name(trained: TrainedModel) -> str:
    """The architecture, or for a person's model its function's name (an entry point's path stays unshown)."""
    entry = trained.config.arch
    if trained.retrainable:
        return entry
    name = entry.rpartition(":")[2]
    return name if entry.startswith(REGISTRY_PREFIX) else name + "()"
