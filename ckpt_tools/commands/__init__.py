"""One module (or a few) per command: validate, upcast/quantize, reshard, info, diff, make-tiny,
forward/verify, download, and plot (the charts of their reports).
"""
