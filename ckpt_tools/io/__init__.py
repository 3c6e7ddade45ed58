"""Bytes in and out: safetensors headers and tensors, a source opened once, index files, shared
readers, part writers, safe output directories, side files, manifests.
"""
