"""User-facing errors.

A `GraphconvError` is a mistake the user can fix (a bad spec, a wrong array, an
unknown option). The CLI prints it as one line and exits with status 2; anything
else is an internal bug and keeps its traceback.

Messages echo what the user wrote, and what the user wrote can be hostile: a layer
name with a newline could print a fake `graphconv:` line, and a YAML alias can expand
a 600-byte spec into a value of many megabytes. So every echoed value goes through
`shown()`, which escapes control characters and cuts it to a short prefix.
"""
from __future__ import annotations

import errno
import os
import sys
import unicodedata
import warnings
from dataclasses import dataclass
from typing import Any

SHOWN_CHARS = 80
MESSAGE_CHARS = 2000


# the bidirectional controls, which make a printed name read otherwise than it is
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """`text` with its control characters written as escapes (\\x1b, \\n, \\u202e): what
    graphconv prints can echo a file name a downloaded folder chose, and one holding a
    terminal's escape sequences would retitle or clear the user's terminal. Other
    characters stay as they are (a CJK name's ideographic space, an emoji's joiner)."""
    if text.isprintable():
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if _is_control(c) else c for c in text)


def _is_control(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in BIDI_CONTROLS


def shown(value: Any, limit: int = SHOWN_CHARS, depth: int = 4) -> str:
    """`repr`-like text of a user's value, safe to print on one line: strings are
    quoted with non-printable characters escaped (as `repr` does), and containers are
    formatted piece by piece, at most `depth` levels deep, stopping after `limit`
    characters, so a list of a million entries (or one shared a million times, or
    nested a thousand deep) costs nothing to show."""
    if isinstance(value, str):
        text = repr(value[:limit + 1])
    elif isinstance(value, int) and value.bit_length() > 4000:  # repr fails past 4300 digits
        text = f"an integer of {value.bit_length()} bits"
    elif isinstance(value, (list, tuple, dict, set)):
        text = _shown_container(value, limit, depth)
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _shown_container(value: Any, limit: int, depth: int) -> str:
    opening, closing = {tuple: "()", dict: "{}", set: "{}"}.get(type(value), "[]")
    if depth <= 0:
        return f"{opening}...{closing}"
    items = value.items() if isinstance(value, dict) else value
    parts: list[str] = []
    size = 0
    for item in items:
        if size > limit:
            parts.append("...")
            break
        part = (f"{shown(item[0], limit, depth - 1)}: {shown(item[1], limit, depth - 1)}"
                if isinstance(value, dict) else shown(item, limit, depth - 1))
        parts.append(part)
        size += len(part) + 2
    return opening + ", ".join(parts) + closing


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 image', '3 images' ('1 copy', '2 copies' with `plural`): what messages say
    where they used to say '3 image(s)'."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def agreeing(n: int, singular: str, plural: str) -> str:
    """The word that agrees with a count: `agreeing(1, "is", "are")` is "is"."""
    return singular if n == 1 else plural


def nearest(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """The candidates closest to a name the user gave (difflib's near misses, else one
    that differs only in case): what a "did you mean" offers."""
    import difflib

    close = difflib.get_close_matches(str(name), candidates, n=n, cutoff=0.6)
    if not close:
        folded = {c.casefold(): c for c in candidates}
        close = [folded[str(name).casefold()]] if str(name).casefold() in folded else []
    return close


@dataclass(frozen=True)
class Location:
    """Where a layer was defined: kept on every IR node so late passes can point back.
    A layer a pass inserted has no line of its own: it takes its neighbour's, and
    `added` says so ("a pass added it after 'fc4'"), or the user reads the error as
    being about the layer written on that line. A layer read from an ONNX file has no
    line either; where the dynamo exporter recorded the PyTorch line that made it,
    `code` says it ("from squeeze_excite.py line 55: x_se = x.mean((2, 3), ...)"): its
    name, 'node_mean', says little."""

    file: str
    line: int | None = None
    added: str | None = None
    code: str | None = None  # an ONNX node's line of PyTorch source, as the dynamo exporter recorded it

    def __str__(self) -> str:
        name = shown_path(self.file) if self.file else "<spec>"
        where = f"{name}:{self.line}" if self.line else name
        notes = "; ".join(note for note in (self.added, self.code) if note)
        return f"{where} ({notes})" if notes else where


def shown_path(path: str) -> str:
    """A file as a message names it: as the user gave it, an absolute path inside the
    working folder made relative (as compilers print a file), so two `model.yaml`s in
    two model folders are told apart."""
    if os.path.isabs(path):
        try:
            relative = os.path.relpath(path)
        except ValueError:  # another drive (Windows)
            return path
        if not relative.startswith(os.pardir):
            return relative
    return path


class GraphconvWarning(UserWarning):
    """What the `graphconv` command says as a note on stderr (a network running on seeded
    random weights, an ONNX model fed 0..255 pixels), said to a Python caller, who sees
    no notes and would otherwise get nonsense scores without a word. The command turns
    these warnings off: it prints its own notes."""


def warn_caller(message: str, said: set | None = None) -> None:
    """A GraphconvWarning pointing at the first line outside graphconv on the stack (the
    user's `graphconv.load(...)`, whichever of our functions it went through), so the
    warning shows where to act, once per line, as Python's default filter does. `said`
    (an object's own set) keeps it once per line for that object even where Python's
    record of it is reset: every `warnings.catch_warnings` resets it, and reading each
    image of a loop enters one (Pillow's guards), so a loop warned once per image."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "graphconv":
        frame, level = frame.f_back, level + 1
    if said is not None and frame is not None and _said_once_per_line(message, frame):
        line = (message, frame.f_code.co_filename, frame.f_lineno)
        if line in said:
            return
        said.add(line)
    warnings.warn(message, GraphconvWarning, stacklevel=level)


def _said_once_per_line(message: str, frame) -> bool:
    """Whether the warnings filters give a GraphconvWarning from `frame` the "default"
    action (once per line), as `warnings.warn` would match them; "always", "error",
    "ignore" (pytest.warns, a user's filter) are left to it."""
    module = frame.f_globals.get("__name__", "<string>")
    for action, text, category, module_pattern, lineno in warnings.filters:
        if ((text is None or text.match(message)) and issubclass(GraphconvWarning, category)
                and (module_pattern is None or module_pattern.match(module))
                and (lineno == 0 or lineno == frame.f_lineno)):
            return action == "default"
    return warnings.defaultaction == "default"


def where_it_crashed(err: BaseException) -> str:
    """' at my_passes.py:41 in fold_scale': the last line of the user's own code the
    exception went through (not graphconv's, numpy's or Python's), which a plugin's
    author most needs and "crashed: KeyError: 'nope'" did not say."""
    import traceback

    library = [os.path.dirname(os.path.abspath(__file__)), *map(os.path.abspath, {sys.prefix, sys.base_prefix})]
    theirs = [frame for frame in traceback.extract_tb(err.__traceback__)
              if not any(os.path.abspath(frame.filename).startswith(root + os.sep) for root in library)]
    if not theirs:
        return ""
    frame = theirs[-1]
    return f" at {shown_path(frame.filename)}:{frame.lineno} in {frame.name}"


class GraphconvError(Exception):
    """An error in the user's input, reported as `file:line: layer 'x': message`. `param`
    names the layer parameter it is about, if one, so that a front end can point at the
    line that gives it rather than at the layer's first line."""

    def __init__(self, message: str, *, loc: Location | None = None, layer: str | None = None,
                 file: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc if loc is not None else (Location(file) if file else None)
        self.layer = layer
        self.param = param

    def __str__(self) -> str:
        parts = []
        if self.loc is not None:
            parts.append(str(self.loc))
        if self.layer is not None:
            parts.append(f"layer {shown(str(self.layer))}")
        parts.append(self.message)
        text = printable(": ".join(parts))
        return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."


class MissingFile(GraphconvError, FileNotFoundError):
    """A file the user named is not there. The command prints it as any GraphconvError;
    a Python caller's `except FileNotFoundError:` (or `OSError`) around
    `graphconv.load(path)` catches it as it catches open()'s."""

    def __init__(self, message: str, *, file: str | None = None, loc: Location | None = None):
        super().__init__(message, file=file, loc=loc)
        self.errno, self.strerror, self.filename = errno.ENOENT, message, file


class ShapeError(GraphconvError):
    """A layer cannot be applied to the shapes that reach it."""


class SmallerThanTheCrop(ShapeError):
    """An input smaller than the classifier's crop: no cell of its map fits (the CLI
    adds what pads it, --pad-image)."""


class PassError(GraphconvError):
    """A pass failed, or left the IR broken (the message names the pass)."""


class FrontEndError(GraphconvError):
    """A plugin's front end crashed reading a file (its own bug, not the file's): said in
    one line naming the front end and its line, as a crashed plugin pass is."""


def user_message(err: BaseException, traceback_shown: bool = False) -> str:
    """One line for an error that bad input (not a bug) can cause; a crashed plugin pass's
    or front end's says where its whole traceback is, where it was not printed above it."""
    if isinstance(err, GraphconvError):
        crashed_plugin = isinstance(err, (PassError, FrontEndError)) and err.__cause__ is not None \
            and not isinstance(err.__cause__, GraphconvError)
        return f"{err} (--traceback for the whole traceback)" if crashed_plugin and not traceback_shown else str(err)
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}"
    if isinstance(err, MemoryError):
        return ("ran out of memory; use a smaller input, or a lower --memory-limit so graphconv "
                "refuses such inputs up front")
    if isinstance(err, RecursionError):
        return "the input is nested too deeply"
    return f"{type(err).__name__}: {shown(str(err))} (--traceback for details)"


def import_optional(module: str, needs: str):
    """`module`, an optional dependency (Pillow, onnx, zarr, ...), imported; or one
    GraphconvError: `needs` (what needs it, and how to install it) where it is not
    installed, and where it is installed but fails to import (a numcodecs too new for
    the zarr pip allowed), that failure: "not installed" sent the user to a pip that said
    it was."""
    import importlib
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and (module == err.name or module.startswith(err.name + ".")):
            raise GraphconvError(needs) from None  # it, or the package it is in: not installed
        raise GraphconvError(f"{module} is installed but failed to import: {err}") from None
    except Exception as err:  # an ImportError of a name, a numpy ABI's RuntimeError or AttributeError
        raise GraphconvError(f"{module} is installed but failed to import: {type(err).__name__}: {err}") from None
