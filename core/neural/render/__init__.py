"""Rendering a field with torch (the reference) or the CUDA kernels of ``cuda/`` (``gpu/``)."""
