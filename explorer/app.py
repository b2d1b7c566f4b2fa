"""Entry point of the app: ``streamlit run explorer/app.py`` (``make app``). One page per job, one module each."""

import streamlit as st

st.set_page_config(page_title="attrex · attribution explorer", page_icon="🔎", layout="wide")

PAGES = [
    st.Page("views/explore.py", title="Explore", icon=":material/grid_view:", url_path="explore", default=True),
    st.Page("views/mislabels.py", title="Mislabels", icon=":material/label_off:", url_path="mislabels"),
    st.Page("views/backdoor.py", title="Backdoor", icon=":material/bug_report:", url_path="backdoor"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
    st.Page("views/evaluate.py", title="Evaluate", icon=":material/leaderboard:", url_path="evaluate"),
    st.Page("views/cache.py", title="Cache", icon=":material/storage:", url_path="cache"),
]
st.navigation(PAGES).run()
