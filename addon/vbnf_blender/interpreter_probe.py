"""Run by the add-on in a candidate training Python: can it train, and on what?

``python interpreter_probe.py [cuda]``, with the engine's folder on ``PYTHONPATH``. Prints one
line, ``VBNF-PROBE {json}``: the Python version, the version of each package training imports
(or why it failed to import), whether the engine's trainer imports, and the devices torch sees.
Everything is tried, so one Check names every missing piece at once. Only the standard library
is imported before the probes, and no syntax newer than Python 3.6 is used, so that an old or
broken Python still gets as far as printing what is wrong with it.

This file is a script, not a module of the add-on: Blender never imports it.
"""

import importlib
import json
import sys

MARKER = "VBNF-PROBE "
MIN_PYTHON = (3, 11)
# (module to import, name to pip install)
PACKAGES = (("numpy", "numpy"), ("torch", "torch"), ("PIL", "pillow"), ("OpenEXR", "OpenEXR"))
ENGINE_MODULE = "core.commands.train"


def _import_failure(module_name):
    """None if ``module_name`` imports, else the exception's own words, on one line."""
    try:
        importlib.import_module(module_name)
    except BaseException as error:  # a broken install can raise anything, even SystemExit
        text = str(error).strip().splitlines()
        return f"{type(error).__name__}: {text[-1] if text else ''}"
    return None


def probe(device):
    packages, missing = {}, {}
    for module_name, pip_name in PACKAGES:
        failure = _import_failure(module_name)
        if failure is None:
            packages[pip_name] = str(getattr(sys.modules[module_name], "__version__", "?"))
        else:
            missing[pip_name] = failure
    report = {
        "python": ".".join(str(part) for part in sys.version_info[:3]),
        "python_ok": tuple(sys.version_info[:2]) >= MIN_PYTHON,
        "packages": packages,
        "missing": missing,
        "device": device,
    }
    if not missing:
        report["engine_error"] = _import_failure(ENGINE_MODULE)
    if "torch" in packages:
        torch = sys.modules["torch"]
        report["cuda_available"] = bool(torch.cuda.is_available())
        report["cuda_version"] = torch.version.cuda
        if report["cuda_available"]:
            report["cuda_device"] = torch.cuda.get_device_name(0)
    return report


if __name__ == "__main__":
    print(MARKER + json.dumps(probe(sys.argv[1] if len(sys.argv) > 1 else "cpu")))
