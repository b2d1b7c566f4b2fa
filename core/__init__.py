"""attrex core: scenarios, models, attribution machinery. No Streamlit import anywhere here."""

from core.errors import AttrexError

__all__ = ["AttrexError"]
__version__ = "0.1.0"
