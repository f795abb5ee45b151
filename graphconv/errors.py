"""User-facing errors.

A `GraphconvError` is a mistake the user can fix (a bad spec, a wrong array, an
unknown option). The CLI prints it as one line and exits with status 2; anything
else is an internal bug and keeps its traceback.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Location:
    """Where a layer was defined: kept on every IR node so late passes can point back."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        name = Path(self.file).name if self.file else "<spec>"
        return f"{name}:{self.line}" if self.line else name


class GraphconvError(Exception):
    """An error in the user's input, reported as `file:line: layer 'x': message`."""

    def __init__(self, message: str, *, loc: Location | None = None, layer: str | None = None,
                 file: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc if loc is not None else (Location(file) if file else None)
        self.layer = layer

    def __str__(self) -> str:
        parts = []
        if self.loc is not None:
            parts.append(str(self.loc))
        if self.layer is not None:
            parts.append(f"layer '{self.layer}'")
        parts.append(self.message)
        return ": ".join(parts)


class ShapeError(GraphconvError):
    """A layer cannot be applied to the shapes that reach it."""


class PassError(GraphconvError):
    """A pass failed, or left the IR broken (the message names the pass)."""
