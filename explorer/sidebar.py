"""The sidebar every page shares: scenario picker, seed and model options, the model's status."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from core.data import DATASETS, DEFAULT_SCENARIO, PRESETS
from core.models import ARCHITECTURES, TrainedModel, default_config
from explorer.state import Selection


def pick_scenario() -> Selection:
    """Scenario, seed and training options from the sidebar (the scenario is mirrored in the URL)."""
    names = list(PRESETS)
    wanted = st.query_params.get("scenario", DEFAULT_SCENARIO)
    if wanted not in PRESETS:
        st.sidebar.warning(f"Unknown scenario {wanted!r} in the link; showing {DEFAULT_SCENARIO}.")
        wanted = DEFAULT_SCENARIO
    with st.sidebar:
        st.markdown("### attrex")
        name = st.selectbox(
            "Scenario", names, index=names.index(wanted), key="scenario",
            help="A data set, perhaps with something planted in it: flipped labels, a backdoor trigger, a mark.",
        )
        st.caption(PRESETS[name].description)
        dataset = PRESETS[name].dataset
        with st.expander("Model and seed"):
            seed = int(st.number_input("Seed", min_value=0, max_value=1_000_000, value=0, step=1,
                                       help="Seeds the scenario (which points are corrupted) and the training."))
            kind = DATASETS[dataset].kind
            archs = [a for a, (_, k, _) in ARCHITECTURES.items() if k == kind]
            base = default_config(dataset)
            arch = st.selectbox("Architecture", archs, index=archs.index(base.arch), key=f"arch-{dataset}",
                                format_func=lambda a: f"{a}: {ARCHITECTURES[a][2]}")
            cfg = default_config(dataset, arch, seed=seed)
            epochs = int(st.number_input("Epochs", min_value=1, max_value=200, value=cfg.epochs, step=1,
                                         key=f"epochs-{dataset}-{arch}"))
            st.caption(f"{cfg.optimizer.upper()}, lr {cfg.lr:g} (cosine to {cfg.lr * cfg.final_lr_ratio:g}), "
                       f"batch {cfg.batch_size}, {cfg.n_checkpoints} checkpoints")
    if st.query_params.get("scenario") != name:
        st.query_params["scenario"] = name
    return Selection(name, seed, replace(cfg, epochs=epochs))


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
        origin = "loaded from the cache" if trained.cache_status == "hit" else f"trained in {trained.train_seconds:.0f} s"
        st.caption(f"{trained.config.epochs} epochs, {len(trained.checkpoints)} checkpoints · {origin}")
        for msg in trained.cache_messages:
            st.warning(msg)
