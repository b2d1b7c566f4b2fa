"""Page script: Compare (the view lives in explorer/compare.py)."""

from explorer.compare import render

render()
