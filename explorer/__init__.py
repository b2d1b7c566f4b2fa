"""The Streamlit app: pages, widgets, rendering. It calls ``core`` and holds no maths."""
