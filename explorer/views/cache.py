"""Page script: Cache (the view lives in explorer/cache_view.py)."""

from explorer.cache_view import render

render()
