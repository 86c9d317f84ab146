"""VBNF for Blender: bake a scene into a compressed, streamable neural radiance field.

The sidebar's VBNF tab bakes (Cycles capture, training in a separate Python process, import);
File > Import/Export > Neural Field (.vbnf) read and write assets, shown as Volume objects
with a level-of-detail slider (``Object.vbnf.lod``). ``batch.py`` bakes without a window.
Runs as an extension (``blender_manifest.toml``; ``build_addon.py`` packs the engine in) or
straight from a repository checkout, where ``engine.py`` finds the top-level ``core``.
"""

from __future__ import annotations

from . import handlers, ops_bake, ops_export, ops_import, panels, preferences, properties
from .training_process import kill_all

# Registration order: what others refer to comes first; unregistering runs it backwards.
_MODULES = (preferences, properties, ops_bake, ops_import, ops_export, panels, handlers)


def register() -> None:
    for module in _MODULES:
        module.register()


def unregister() -> None:
    kill_all()  # a bake's training child must not outlive the add-on
    for module in reversed(_MODULES):
        module.unregister()
