"""The rate-distortion report: the paper's baselines, run orchestration, tables and plots.
Not shipped in the Blender extension (see build_addon.py)."""
