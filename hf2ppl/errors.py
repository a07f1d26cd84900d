"""The exception classes users catch.

Every error hf2ppl raises on bad input derives from :class:`HF2PPLError` and
carries a one-line message that names *what* is wrong and *where* (a JSON
pointer into the workspace, e.g. ``/channels/0/samples/1/data``).
"""

from __future__ import annotations

__all__ = [
    "HF2PPLError",
    "WorkspaceError",
    "SchemaError",
    "PatchError",
    "MeasurementError",
    "ModelError",
    "ParameterError",
    "FitError",
]


class HF2PPLError(Exception):
    """Base class of all hf2ppl errors."""

    def __init__(self, message: str, *, path: str | None = None):
        self.path = path
        message = " ".join(str(message).split())  # always one line
        if path is not None:
            message = f"at {path or '/'}: {message}"
        super().__init__(message)


class WorkspaceError(HF2PPLError, ValueError):
    """The workspace is malformed or semantically inconsistent."""


class SchemaError(WorkspaceError):
    """The workspace does not validate against the HistFactory JSON schema."""


class PatchError(WorkspaceError):
    """A JSON patch or a PatchSet patch could not be found or applied."""


class MeasurementError(WorkspaceError):
    """The requested measurement or its parameter of interest does not exist."""


class ModelError(WorkspaceError):
    """The workspace validates but describes an inconsistent model
    (bin-count mismatch, bad yields, conflicting parameter definitions)."""


class ParameterError(HF2PPLError, ValueError):
    """Parameter values given by the user do not fit the model
    (unknown name, wrong shape)."""


class FitError(HF2PPLError, RuntimeError):
    """A fit did not converge or produced a non-finite result."""
