"""Page script: Explore (the view lives in explorer/explore.py)."""

from explorer.explore import render

render()
