"""Checkpoints where they live: Hub repositories and object stores, read by byte range
(`stores`, `path`, `byte_source`), object-store destinations (`output`), and hf:// files read
from copies checked against the Hub's SHA-256 (`verified`)."""
