"""Small pieces the pages share."""

from __future__ import annotations

import time
from collections.abc import Hashable

import streamlit as st

from core.jobs import Job
from explorer import state


def job_progress(job: Job, explanation: str) -> None:
    """A background job's progress, polled once a second; the page reruns when it is done."""
    st.info(explanation)

    @st.fragment(run_every=1.0)
    def poll() -> None:
        if job.done:
            st.rerun()
        st.progress(min(job.fraction, 1.0), text=f"{job.message} · {time.time() - job.started:.0f} s")

    poll()


def job_panel(job: Job, what: str, explanation: str, retry_key: Hashable | None = None) -> None:
    """A job still running (its progress) or failed (its error and a *Try again* button)."""
    if job.error:
        st.error(f"{what} failed: {job.error}")
        st.button("Try again", key=retry_key, on_click=state.forget_job, args=(job.key,))
    else:
        job_progress(job, explanation)
