"""The project's own error types.

Every failure caused by user input (a malformed dataset folder, a damaged ``.vbnf`` file, a bad
command-line value) is raised as one of these, with the offending file named in the message, so
the CLI and the Blender extension can show it verbatim instead of a traceback from deep inside
numpy or torch.
"""

from __future__ import annotations

from pathlib import Path


class VbnfError(Exception):
    """Base class: a problem the user can act on, described in one sentence."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class DatasetError(VbnfError):
    """A dataset folder that does not follow the documented layout."""


class AssetError(VbnfError):
    """A ``.vbnf`` file that is truncated, corrupted or not a ``.vbnf`` file at all."""


class OutputError(VbnfError, OSError):
    """A file could not be written completely (a full disk, a read-only folder); the file
    that was there before is intact. Also an ``OSError``, so code that handles a failed write
    as one keeps doing so."""


class TrainingCancelled(VbnfError):
    """Training was stopped by a signal; the checkpoint written at that moment is resumable."""
