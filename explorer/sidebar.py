"""The sidebar every page shares: scenario picker, seed and model options, the model's status."""

from __future__ import annotations

import streamlit as st

from core.data import DATASETS, DEFAULT_SCENARIO, PRESETS
from core.data.scenario import CUSTOM, custom_spec
from core.errors import AttrexError
from core.models import ARCHITECTURES, TrainedModel, default_config
from explorer import links, session, state
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
        archs = [a for a, (_, k, _) in ARCHITECTURES.items() if k == kind]
        model_keys = (session.SEED, session.arch(dataset), session.epochs(dataset))
        seed = links.seed()
        for key, default in zip(model_keys, (0 if seed is None else seed, default_config(dataset).arch, None),
                                strict=True):
            session.restore(key, default)
        with st.expander("Model and seed"), st.form(session.model_form(dataset), border=False):
            seed = int(st.number_input("Seed", min_value=0, max_value=links.SEED_MAX, step=1, key=session.SEED,
                                       help="Seeds the scenario (which points are corrupted) and the training."))
            arch = st.selectbox("Architecture", archs, key=session.arch(dataset),
                                format_func=lambda a: f"{a}: {ARCHITECTURES[a][2]}")
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
    """Paths on the server's machine to a person's data and (optionally) model, checked before anything runs.

    A submission that fails (a missing file, unreadable data, a model that does not fit) is
    reported and changes nothing: the last one that loaded stays in use.
    """
    if st.query_params.get("scenario") != CUSTOM:
        st.query_params.clear()  # paths stay out of links: a link names a token this server knows (below)
        st.query_params["scenario"] = CUSTOM
    if session.OWN_SELECTION not in st.session_state:  # a reload, or a link from another session on this server
        recalled = state.recall_own(st.query_params.get("own"))
        if recalled is not None:
            st.session_state[session.OWN_SELECTION] = recalled
            for field, value in _fields_of(recalled).items():
                st.session_state[session.kept(session.own(field))] = value
    fields = tuple(session.own(f) for f in OWN_FIELDS)
    for key, default in zip(fields, OWN_FIELDS.values(), strict=True):  # each page draws its own form
        session.restore(key, default)
    with st.sidebar, st.form(session.OWN_FORM, border=False):
        data = st.text_input("Data path", key=session.own("data"), placeholder="/data/my-images",
                             help="An image folder (one sub-folder per class; train/ and test/ optional), a .csv or "
                                  ".jsonl of texts (columns text, label, optional split) or a .npz of arrays. A path "
                                  "on the machine running attrex.")
        cols = st.columns(2)
        size = cols[0].text_input("Image size", key=session.own("size"), placeholder="HxW", help="Resize every image (needed when sizes differ)")
        share = cols[1].number_input("Test share", key=session.own("share"), min_value=0.05, max_value=0.9, step=0.05,
                                     help="Held out as the test split where the data has none")
        known = st.text_input("Known-bad list (optional)", key=session.own("known"), placeholder="bad.csv",
                              help="A CSV of training points known to be mislabelled (column id or path, optional "
                                   "label): the Mislabels and Evaluate pages score methods against it.")
        seed = int(st.number_input("Seed", min_value=0, max_value=links.SEED_MAX, step=1, key=session.own("seed"),
                                   help="Seeds the held-out split and, when attrex trains the model, the training."))
        st.markdown("**Your model** (leave empty: attrex trains its default architecture)")
        entry = st.text_input("Model entry point", key=session.own("entry"), placeholder="package.module:build or /path/net.py:build",
                              help="A function returning an nn.Module (called with n_classes= if it takes it)")
        weights = st.text_input("Weights", key=session.own("weights"), placeholder="final.safetensors or state_dict.pt")
        ckpts = st.text_input("Checkpoints folder (optional)", key=session.own("ckpts"), placeholder="ckpts/ with checkpoints.json",
                              help='checkpoints.json lists {"file": ..., "lr": ...} in training order; TracIn, GAS '
                                   "and FLIA need them.")
        cols = st.columns(2)
        features = cols[0].text_input("Features layer", key=session.own("features"), placeholder="auto", help="Only where attrex cannot split "
                                      "the model itself: the layer whose flattened output feeds the head")
        head = cols[1].text_input("Head layer", key=session.own("head"), placeholder="auto", help="The last nn.Linear (found by attrex)")
        submitted = st.form_submit_button("Load", type="primary", key=session.own("load"), on_click=session.remember, args=fields)
    if submitted:
        try:
            selection = own_selection(data, size, share, known, seed, entry, weights, ckpts, features, head)
            st.session_state[session.OWN_SELECTION], st.session_state[session.OWN_ERROR] = selection, None
        except AttrexError as exc:
            st.session_state[session.OWN_ERROR] = str(exc)
    if st.session_state.get(session.OWN_ERROR):
        kept = st.session_state.get(session.OWN_SELECTION)
        st.sidebar.error(st.session_state[session.OWN_ERROR] +
                         (f" Still showing {kept.scenario}." if kept else ""))
    selection = st.session_state.get(session.OWN_SELECTION)
    if selection is not None:
        st.query_params["own"] = state.remember_own(selection)
    else:
        st.title("Your data")
        st.markdown("Enter the path of your data in the sidebar, and your model's if you have one, then press "
                    "**Load**. Everything is checked before anything runs. Without a model attrex trains its "
                    "default architecture for the data (cached on disk). The README's *Your own data and model* "
                    "section shows the layouts.")
        st.stop()
    return selection


# the form's fields and their values before a first Load; what Load submitted is kept for every page's form
OWN_FIELDS = {"data": "", "size": "", "share": 0.2, "known": "", "seed": 0, "entry": "", "weights": "", "ckpts": "",
              "features": "", "head": ""}


def _fields_of(selection: Selection) -> dict:
    """The form's fields as they were when ``selection`` loaded (for a reload or a link)."""
    from core.models import ModelSource

    spec, cfg = selection.spec, selection.config
    values = {"data": spec.data_dir, "size": "x".join(map(str, spec.image_size)) if spec.image_size else "",
              "share": spec.test_share, "known": spec.known_bad or "", "seed": spec.seed}
    if isinstance(cfg, ModelSource):
        values.update(entry=cfg.entry, weights=cfg.weights, ckpts=cfg.checkpoints or "",
                      features=cfg.features_layer or "", head=cfg.head_layer or "")
    return values


def own_selection(data: str, size: str, share: float, known: str, seed: int, entry: str, weights: str,
                  ckpts: str, features: str, head: str) -> Selection:
    """The sidebar's form as a :class:`Selection`, with the data built and the model loaded (or its training
    recipe chosen); raises :class:`AttrexError` on anything wrong, before anything is kept."""
    from core.models import ModelSource, recipe_of

    data, size, known, entry, weights, ckpts = (v.strip() for v in (data, size, known, entry, weights, ckpts))
    if not data:
        raise AttrexError("Enter the path of your data.")
    spec = custom_spec(data, seed=seed, image_size=size or None, test_share=float(share), known_bad=known or None)
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
        st.markdown(f"**Model** · `{trained.config.arch}`" + (" (yours)" if not trained.retrainable else ""))
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
            st.warning(msg)
