"""Checks for data that comes from elsewhere (a dataset folder written by another tool): every
value is the type and range it must be, every referenced file is a regular file inside the
dataset's folder, and every failure is one :class:`DatasetError` naming the file and the field.

A dataset is shared with other tools, so it is read as untrusted input: ``w: 32.7`` is not 32,
``true`` is not 1, a frame path may not leave the folder (``../``, an absolute path, a symbolic
link pointing out), and a named pipe or ``/dev/zero`` is reported as what it is instead of being
read forever.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from ..errors import DatasetError

MAX_JSON_BYTES = 64 << 20  # a transforms file of thousands of frames is a few MB


def read_json(path: Path) -> Any:
    """The parsed document at ``path``, refusing what is not a regular file of sane size, not
    UTF-8 JSON, or nested too deep for the parser."""
    size_bytes = regular_file(path, "transforms file").stat().st_size
    if size_bytes > MAX_JSON_BYTES:
        raise DatasetError(f"is {size_bytes} bytes, over the {MAX_JSON_BYTES}-byte limit", path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"not valid JSON ({error})", path) from error
    except RecursionError as error:
        raise DatasetError("not valid JSON (nested too deep)", path) from error
    except OSError as error:
        raise DatasetError(f"cannot read ({error.strerror})", path) from error


def regular_file(path: Path, what: str) -> Path:
    """``path`` if it is a regular file (links followed); otherwise say what it is."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DatasetError(f"{what} is missing", path) from None
    except OSError as error:
        raise DatasetError(f"{what} cannot be opened ({error.strerror})", path) from error
    if stat.S_ISREG(mode):
        return path
    kind = (
        "a folder"
        if stat.S_ISDIR(mode)
        else "a named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    raise DatasetError(f"{what} is {kind}, not a file", path)


def inside(dataset_dir: Path, relative: Any, field: str, json_path: Path) -> Path:
    """``dataset_dir / relative``, refused unless it is a relative path that stays inside the
    dataset folder once links are resolved."""
    if not isinstance(relative, str) or not relative or "\0" in relative:
        raise DatasetError(f"{field} must be a non-empty path string, got {relative!r}", json_path)
    if os.path.isabs(relative):
        raise DatasetError(f"{field} {relative!r} is absolute; frames must be inside", json_path)
    candidate = dataset_dir / relative
    root = dataset_dir.resolve()
    if not candidate.resolve().is_relative_to(root):
        raise DatasetError(
            f"{field} {relative!r} leads outside the dataset folder {root}", json_path
        )
    return candidate


def integer(document: dict[str, Any], field: str, json_path: Path) -> int:
    """A whole number (``32`` or ``32.0``; never ``32.7`` or ``true``)."""
    value = required(document, field, json_path)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise DatasetError(f"{field} must be a whole number, got {value!r}", json_path)
    return int(value)


def number(document: dict[str, Any], field: str, json_path: Path, default: float | None) -> float:
    """A finite number; ``default`` when absent (None: the field is required)."""
    if default is not None and document.get(field) is None:
        return default
    value = required(document, field, json_path)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DatasetError(f"{field} must be a finite number, got {value!r}", json_path)
    return float(value)


def required(document: dict[str, Any], field: str, json_path: Path) -> Any:
    if field not in document:
        raise DatasetError(f"missing field {field!r}", json_path)
    return document[field]
