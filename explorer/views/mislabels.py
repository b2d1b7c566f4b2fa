"""Page script: Mislabels (the view lives in explorer/mislabels.py)."""

from explorer.mislabels import render

render()
