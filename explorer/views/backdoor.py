"""Page script: Backdoor (the view lives in explorer/backdoor.py)."""

from explorer.backdoor import render

render()
