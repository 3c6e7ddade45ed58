"""One module (or a few) per command: validate, upcast/quantize, reshard, info, diff, make-tiny, forward/verify, download, and the figures and charts they show."""
