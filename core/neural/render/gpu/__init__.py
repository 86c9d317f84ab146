"""GPU backend: the CUDA kernels of ``cuda/`` (loaded with CuPy) behind torch-shaped callables.

Nothing here imports CuPy at import time; :func:`.backend.select_backend` decides at run
time whether the kernels can be used: ``auto`` falls back to the torch reference where they
cannot, ``cupy`` then fails with the reason.
"""
