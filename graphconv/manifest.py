"""The list of what an --images batch did (`graphconv-maps.csv` in its --output-dir): a
row per image, with its map, whether it was written, the map's shape and the image's
error. It is for the user's scripts (which photos failed, and why, without reading
stderr), and for graphconv itself: an .npy map records nothing of who wrote it, so a
later run replaces an .npy of another shape (a photo cropped since, another --classes)
only where this list says graphconv wrote exactly that file (its size, time and inode).

Each image's row is appended as the image is done, so a batch stopped at any moment
leaves the rows of the maps it kept; at the end the list is written again with one row
per map (the latest), rows of earlier runs over other images kept."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from graphconv.errors import GraphconvError
from graphconv.files import atomic_write, file_stamp

MANIFEST_NAME = "graphconv-maps.csv"
COLUMNS = ("image", "map", "status", "shape", "error", "map_stamp")
MANIFEST_LIMIT = 256 << 20  # bytes: a list of millions of maps; a larger file is not one graphconv wrote


class Manifest:
    """The rows of one --output-dir's list, by map (relative to the folder)."""

    def __init__(self, output_dir: str | os.PathLike):
        self.folder = Path(output_dir)
        self.path = self.folder / MANIFEST_NAME
        self.rows = _read_rows(self.path)
        self._changed = False

    def record(self, image: str, output: str, shape: tuple[int, ...] | None, error: str | None) -> None:
        """Note what became of `image`, whose map goes to `output`, at once (appended)."""
        stamp = file_stamp(output) if error is None else None
        row = {"image": os.path.abspath(image), "map": self._key(output), "status": "failed" if error else "written",
               "shape": "x".join(map(str, shape)) if shape and not error else "", "error": error or "",
               "map_stamp": ":".join(map(str, stamp)) if stamp else ""}
        self.rows[row["map"]] = row
        self._changed = True
        self.folder.mkdir(parents=True, exist_ok=True)  # where the first image failed, no map made it
        fresh = not self.path.exists()
        with open(self.path, "a", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, COLUMNS)
            if fresh:
                writer.writeheader()
            writer.writerow(row)

    def wrote(self, output: str) -> bool:
        """Whether graphconv wrote the file now at `output`, as it is now."""
        row = self.rows.get(self._key(output))
        stamp = file_stamp(output)
        return bool(row and row["status"] == "written" and stamp and row["map_stamp"] == ":".join(map(str, stamp)))

    def rewrite(self) -> None:
        """The list again, one row per map: what the appends of reruns repeated, once."""
        if not self._changed:
            return
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows[key] for key in sorted(self.rows))
        atomic_write(self.path, lambda p: Path(p).write_text(text.getvalue(), encoding="utf-8", newline=""))
        self._changed = False

    def _key(self, output: str) -> str:
        return Path(os.path.relpath(os.path.abspath(output), os.path.abspath(self.folder))).as_posix()


def _read_rows(path: Path) -> dict[str, dict[str, str]]:
    """The rows of an existing list, the last of each map's; a file of that name that is
    not such a list is the user's, and refused before any work rather than appended to.
    A row cut short (a kill mid-write) is left out."""
    if not path.exists():
        return {}
    try:
        if path.stat().st_size > MANIFEST_LIMIT:
            raise GraphconvError(f"is over {MANIFEST_LIMIT >> 20} MiB: not a list of maps graphconv wrote (delete "
                                 "it, or choose another --output-dir)", file=str(path))
        with open(path, newline="", encoding="utf-8") as file:
            reader = csv.reader(file)
            if tuple(next(reader, ())) != COLUMNS:
                raise GraphconvError(f"is already there and is not graphconv's list of maps (its first line is not "
                                     f"{','.join(COLUMNS)}): choose another --output-dir, or move it", file=str(path))
            return {row[1]: dict(zip(COLUMNS, row)) for row in reader if len(row) == len(COLUMNS)}
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise GraphconvError(f"cannot be read as graphconv's list of maps: {err}", file=str(path)) from None
