"""The sidebar every page shares: scenario picker, seed and model options, the model's status."""

from __future__ import annotations

import streamlit as st

from core.data import DATASETS, DEFAULT_SCENARIO, PRESETS
from core.models import ARCHITECTURES, TrainedModel, default_config
from explorer import session
from explorer.state import Selection


def pick_scenario() -> Selection:
    """Scenario, seed and training options from the sidebar (the scenario is mirrored in the URL)."""
    names = list(PRESETS)
    wanted = st.query_params.get("scenario", DEFAULT_SCENARIO)
    if wanted not in PRESETS:
        st.sidebar.warning(f"The link names an unknown scenario; showing {DEFAULT_SCENARIO}. It named:")
        st.sidebar.text(str(wanted)[:120])  # plain text: a link's content is never rendered as Markdown
        wanted = DEFAULT_SCENARIO
    with st.sidebar:
        st.markdown("### attrex")
        name = st.selectbox(
            "Scenario", names, index=names.index(wanted), key=session.SCENARIO,
            help="A data set, perhaps with something planted in it: flipped labels, a backdoor trigger, a mark.",
        )
        st.caption(PRESETS[name].description)
        dataset = PRESETS[name].dataset
        kind = DATASETS[dataset].kind
        archs = [a for a, (_, k, _) in ARCHITECTURES.items() if k == kind]
        with st.expander("Model and seed"), st.form(session.model_form(dataset), border=False):
            seed = int(st.number_input("Seed", min_value=0, max_value=1_000_000, value=0, step=1, key=session.SEED,
                                       help="Seeds the scenario (which points are corrupted) and the training."))
            arch = st.selectbox("Architecture", archs, index=archs.index(default_config(dataset).arch),
                                key=session.arch(dataset), format_func=lambda a: f"{a}: {ARCHITECTURES[a][2]}")
            epochs = st.number_input("Epochs", min_value=1, max_value=200, value=None, step=1, key=session.epochs(dataset),
                                     placeholder="default",
                                     help="Leave empty for the architecture's default (shown below).")
            st.form_submit_button("Apply", help="Train (or load) the model with these options")
            cfg = default_config(dataset, arch, seed=seed, epochs=int(epochs) if epochs else None)
            st.caption(f"{cfg.epochs} epochs, {cfg.optimizer.upper()}, lr {cfg.lr:g} (cosine to "
                       f"{cfg.lr * cfg.final_lr_ratio:g}), batch {cfg.batch_size}, "
                       f"{len(cfg.checkpoint_epochs())} checkpoints")
    if st.query_params.get("scenario") != name:
        st.query_params["scenario"] = name
    return Selection(name, seed, cfg)


def model_status(trained: TrainedModel) -> None:
    """Accuracy, attack success and provenance of the model in use."""
    with st.sidebar:
        st.divider()
        st.markdown(f"**Model** · `{trained.config.arch}`")
        cols = st.columns(2)
        cols[0].metric("Test accuracy", f"{trained.test_accuracy:.1%}")
        if trained.attack_success is not None:
            cols[1].metric("Attack success", f"{trained.attack_success:.1%}",
                           help="Share of triggered test inputs classified as the backdoor target.")
        st.caption(f"{trained.config.epochs} epochs, {len(trained.checkpoints)} checkpoints · trained in "
                   f"{trained.train_seconds:.0f} s, kept in the disk cache")
        for msg in trained.cache_messages:
            st.warning(msg)
