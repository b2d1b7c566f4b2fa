"""Page script: Evaluate (the view lives in explorer/evaluate.py)."""

from explorer.evaluate import render

render()
