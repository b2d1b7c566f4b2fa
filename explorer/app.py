"""Entry point of the app: ``streamlit run explorer/app.py`` (``make app``). One page per job, one module each
(the table in explorer/nav.py)."""

import streamlit as st

from explorer import nav

st.set_page_config(page_title="attrex · attribution explorer", page_icon="🔎", layout="wide")

st.navigation([st.Page(p.script, title=p.title, icon=p.icon, url_path=p.url, default=p is nav.PAGES[0])
               for p in nav.PAGES]).run()
