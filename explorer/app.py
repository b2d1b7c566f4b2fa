"""Entry point of the app: ``streamlit run explorer/app.py`` (``make app``)."""

import streamlit as st

st.set_page_config(page_title="attrex · attribution explorer", page_icon="🔎", layout="wide")

page = st.navigation([st.Page("pages/explore.py", title="Explore", icon=":material/grid_view:", url_path="explore",
                              default=True)])
page.run()
