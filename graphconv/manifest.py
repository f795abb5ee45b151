"""The list of what an --images batch did (`graphconv-maps.csv` in its --output-dir): a
row per image, with its map, whether it was written, the map's shape, where its cells
stand on the image, with --top its best classes, the image's error, and with
--skip-damaged how many cells were left out around TIFF tiles that cannot be decoded.
It is for the user's scripts (which photos failed, and why, without reading stderr;
where an .npy map's cells lie; which photos show a deer, whatever order the workers
finished in; which slides' maps have holes), and for graphconv itself: an .npy map
records nothing of who wrote it, so a later run replaces an .npy of another shape (a
photo cropped since, another --classes) only where this list says graphconv wrote
exactly that file (its size, time and inode); and its `made_with` (the model and
settings, JSON, as a .tif map states them) tells --skip-existing a map of another model
or --resize of the same shape from this run's.

Each image's row is appended as the image is done, so a batch stopped at any moment
leaves the rows of the maps it kept; at the end the list is written again with one row
per map (the latest), rows of earlier runs over other images kept. Appends and the
rewrite hold a lock on the folder, so two batches into one folder keep each other's rows
(where the file system refuses the lock, Lustre without `-o flock`, they go on unlocked:
two batches at once may then lose rows of each other's until one's final rewrite).
"""
from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from graphconv.errors import GraphconvError, shown_path
from graphconv.files import atomic_write, file_stamp, locked_if_possible, same_file

if TYPE_CHECKING:
    from graphconv.cluster import RankedClasses
    from graphconv.georef import CellPlacement
    from graphconv.tiling import DamagedCells

MANIFEST_NAME = "graphconv-maps.csv"
LABELS_NAME = "graphconv-labels.json"  # the label lists rows name by digest (`Manifest._labels_named`)
PLACEMENT_COLUMNS = ("first_cell_centre_y", "first_cell_centre_x", "cell_step_y", "cell_step_x", "cell_area_h",
                     "cell_area_w")
TOP_COLUMNS = ("top", "top_by")
DAMAGE_COLUMNS = ("damaged_cells", "damaged_tiff_tiles")
COLUMNS = ("image", "map", "status", "shape", "error", "map_stamp", "made_with", *PLACEMENT_COLUMNS, *TOP_COLUMNS,
           *DAMAGE_COLUMNS, "failed_with")
# Lists earlier versions wrote, with fewer of these columns: read, and written anew at the next row.
EARLIER_HEADERS = (COLUMNS[:17], COLUMNS[:15], COLUMNS[:13], COLUMNS[:7], COLUMNS[:6])
MANIFEST_LIMIT = 256 << 20  # bytes: a list of millions of maps; a larger file is not one graphconv wrote
# File names are bytes on POSIX: one that is not UTF-8 (a Latin-1 'café.png') is kept as its
# bytes, as Python's os functions keep it, rather than stopping the batch. A byte-order mark,
# which a spreadsheet saving the list adds, is read past.
WRITING = {"encoding": "utf-8", "errors": "surrogateescape"}
READING = {"encoding": "utf-8-sig", "errors": "surrogateescape"}


class Manifest:
    """The rows of one --output-dir's list, by map (relative to the folder)."""

    def __init__(self, output_dir: str | os.PathLike):
        self.folder = Path(output_dir)
        self.path = self.folder / MANIFEST_NAME
        self.rows = _read_rows(self.path)
        self.found = dict(self.rows)  # the rows as this run began: another batch's since are told from them
        self.recorded: set[str] = set()  # the maps this run has a row for
        if self.path.exists() and _cut_short(self.path):  # a kill mid-append: later rows would join the cut one
            with self._locked():  # read again under the lock: another batch may have appended since
                if _cut_short(self.path):
                    self.rows = _read_rows(self.path)
                    _write_rows(self.path, self.rows)

    def record(self, image: str, output: str, shape: tuple[int, ...] | None, error: str | None,
               written: bool, made_with: dict | None = None, placement: CellPlacement | None = None,
               top: RankedClasses | None = None, top_by: str | None = None,
               damaged: DamagedCells | None = None) -> None:
        """Note what became of `image`, whose map goes to `output`, at once (appended):
        `written`, its map is there (an error then is what failed after it, its heatmap),
        made with `made_with` (`cluster.map_settings`), its cells placed on the image as
        `placement` says (an .npy map has no room for it), its best classes `top` (--top,
        ranked by --top-by's `top_by`), `damaged` the cells --skip-damaged left out of it.
        A failed image's earlier map, unchanged, keeps its stamp, settings, placement,
        classes and damage count: it is still graphconv's; `made_with`, what the failed
        attempt was made with, is its `failed_with` (`failed_alike`)."""
        key = self._key(output)
        earlier = self.rows.get(key) or {}
        stamp = _stamp_text(output) if written else earlier.get("map_stamp", "")
        if not written and stamp and not _still_there(stamp, output):
            stamp = ""  # the earlier map is gone or changed since
        if written:
            settings = json.dumps(self._labels_named(made_with), sort_keys=True) if made_with is not None else ""
            cells = {**_placement_fields(placement), **_top_fields(top, top_by), **_damage_fields(damaged)}
        else:  # the earlier map's, while it is there unchanged
            settings = earlier.get("made_with", "") if stamp else ""
            cells = {name: earlier.get(name, "") if stamp else ""
                     for name in (*PLACEMENT_COLUMNS, *TOP_COLUMNS, *DAMAGE_COLUMNS)}
        attempt = {name: value for name, value in (made_with or {}).items() if name != "labels"}
        row = {"image": os.path.abspath(image), "map": key, "status": "written" if written else "failed",
               "shape": "x".join(map(str, shape)) if shape and written else "", "error": _unnamed(error or "", image),
               "map_stamp": stamp, "made_with": settings, **cells,
               "failed_with": json.dumps(attempt, sort_keys=True) if attempt and not written else ""}
        self.rows[key] = row
        self.recorded.add(key)
        self.folder.mkdir(parents=True, exist_ok=True)  # where the first image failed, no map made it
        with self._locked():
            if not written and self._keeps_another_batchs_row(key, image, output):
                return
            if _written_with_fewer_columns(self.path):  # its rows, and this one, under one header
                _write_rows(self.path, _read_rows(self.path))
            _append(self.path, row)

    def _keeps_another_batchs_row(self, key: str, image: str, output: str) -> bool:
        """Whether the map at `output`, which this image failed to write, is listed by a
        batch running beside this one: its row stays, and this failure, said on stderr,
        takes no row of its own (the list is one row per map). Either the map is another
        image's (refused here: `cluster._as_found`; the row said a map of this image
        failed, and graphconv lost the record that it wrote the other one), or the other
        batch wrote this image's map since this one began (the same array task run twice:
        the loser's "failed" rows replaced the winner's written ones)."""
        listed = _read_rows(self.path).get(key) if self.path.exists() else None
        another_image_s = (listed is not None and listed["image"] != os.path.abspath(image)
                           and bool(listed["map_stamp"]) and listed["map_stamp"] == _stamp_text(output))
        if not (another_image_s or _written_since(listed, self.found.get(key), output)):
            return False
        self.rows[key] = listed
        return True

    def record_kept(self, image: str, output: str, stamp_before: list[int] | None,
                    made_with: Callable[[], dict] | None = None) -> None:
        """A map written in this run (its file stamp no longer `stamp_before`'s) whose
        image's row a stop cut off (Ctrl-C after the map was renamed into place, a
        worker's map not collected yet): listed as written, its shape read from the file,
        so that a later run knows it is graphconv's."""
        if self._key(output) in self.recorded or not output.lower().endswith(".npy"):
            return
        if file_stamp(output) in (None, stamp_before):
            return
        try:
            shape = np.load(output, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError):
            return
        self.record(image, output, shape, None, True, made_with() if made_with is not None else None)

    def record_top(self, output: str, top: RankedClasses, top_by: str | None) -> None:
        """The best classes of a map an earlier run made and this one keeps (--top with
        --skip-existing), in its row at the `rewrite`: the list then ranks every map the
        same way, as the run's lines on stdout do."""
        key = self._key(output)
        if self.image_of(output) is not None:
            self.rows[key] = {**self.rows[key], **_top_fields(top, top_by)}
            self.recorded.add(key)

    def record_moved(self, image: str, output: str) -> bool:
        """Where the row of the map at `output`, which this run keeps, names a path of its
        image that is no longer there (the library moved: `mv photos archive/photos`), it
        names `image` at the `rewrite`; returns whether it did. The list named the old
        paths for good, though every map was kept (a photo review)."""
        key = self._key(output)
        row = self.rows.get(key)
        if row is None or row["image"] == os.path.abspath(image) or os.path.exists(row["image"]):
            return False
        self.rows[key] = {**row, "image": os.path.abspath(image)}
        self.recorded.add(key)
        return True

    def _labels_named(self, made_with: dict) -> dict:
        """`made_with` with its labels named by their digest, the list itself kept once in
        LABELS_NAME beside the list of maps: an ImageNet model's 1000 names in every row
        made 17 KB rows, and a batch of 15,000 photos a list past MANIFEST_LIMIT."""
        labels = made_with.get("labels")
        if not isinstance(labels, list):
            return made_with
        digest = hashlib.sha256(json.dumps(labels).encode()).hexdigest()[:16]
        if digest not in _label_lists(self.folder):
            with self._locked():  # another batch may have added its own list since
                lists = {**_label_lists(self.folder), digest: labels}
                text = json.dumps(lists, indent=1, ensure_ascii=False)
                atomic_write(self.folder / LABELS_NAME, lambda p: Path(p).write_text(text, **WRITING))
        return {**{key: value for key, value in made_with.items() if key != "labels"}, LABELS_DIGEST: digest}

    def made_with(self, output: str) -> dict | None:
        """The model and settings graphconv made the file now at `output` with, as its row
        records them; None where it did not make it as it is now, or recorded none."""
        if self.image_of(output) is None:
            return None
        return row_settings(self.folder, self.rows[self._key(output)]) or None

    def failed_alike(self, output: str, attempt: dict) -> str | None:
        """The error of the map at `output` where its row says it failed, tried with the
        very settings and image file of `attempt` (`cluster.map_settings` and the image's
        stamp): tried again, it would fail again (--skip-failed). None otherwise."""
        row = self.rows.get(self._key(output))
        if row is None or row["status"] != "failed" or not row.get("failed_with"):
            return None
        try:
            recorded, expected = json.loads(row["failed_with"]), json.loads(json.dumps(attempt))
        except ValueError:
            return None
        alike = isinstance(recorded, dict) and all(recorded.get(key) == value for key, value in expected.items())
        return row["error"] if alike else None

    def wrote(self, output: str) -> bool:
        """Whether graphconv wrote the file now at `output`, as it is now."""
        return self.image_of(output) is not None

    def image_of(self, output: str) -> str | None:
        """The image graphconv made the file now at `output` from, where it wrote it as it is now."""
        row = self.rows.get(self._key(output))
        return row["image"] if row and _still_there(row["map_stamp"], output) else None

    def lists(self, output: str) -> bool:
        """Whether the list has a row for the map at `output` (a row whose file changed since
        included: `image_of` tells those apart)."""
        return self._key(output) in self.rows

    def rewrite(self) -> None:
        """The list again, one row per map: what the appends of reruns repeated, once.
        Rows another batch appended meanwhile are read back first and kept."""
        if not self.recorded:
            return
        with self._locked():
            rows = _read_rows(self.path)
            for key in self.recorded:
                mine = self.rows[key]
                if not (mine["status"] == "failed" and _written_since(rows.get(key), self.found.get(key),
                                                                      str(self.folder / key))):
                    rows[key] = mine
            _write_rows(self.path, rows)
        self.recorded.clear()

    def _key(self, output: str) -> str:
        return Path(os.path.relpath(os.path.abspath(output), os.path.abspath(self.folder))).as_posix()

    def _locked(self):
        """The folder locked (flock) against another batch's append or rewrite; unlocked
        where the file system refuses (the list is a record: the maps come first)."""
        return locked_if_possible(self.folder)


def listed_maps(output_dir: str | os.PathLike) -> dict[str, str]:
    """Each image --output-dir's list records a written map of, to that map's path (the
    folder joined to the row's map); nothing where there is no list. Read once for the
    list as it is (the names of one batch's maps are asked for several times)."""
    path = Path(output_dir) / MANIFEST_NAME
    try:
        stat = path.stat()
    except OSError:
        return {}
    return dict(_listed_maps(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=4)
def _listed_maps(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, str], ...]:
    folder = os.path.dirname(path)
    return tuple((row["image"], os.path.join(folder, key)) for key, row in _read_rows(Path(path)).items()
                 if row["status"] == "written")


def listed_map(map_path: str) -> tuple[Path, dict[str, str]] | None:
    """The list (graphconv-maps.csv) that lists the map at `map_path` as written, and its
    row: an --images batch's .npy, whose placement and contents only that row records
    (`graphconv cells` reads them). The list is looked for in the map's folder and the
    folders above it (an image in a subfolder has its map in a subfolder of --output-dir);
    None where none lists it. Refused where the row's map is not the file there now
    (replaced or changed since): the row would place another map's cells."""
    folder = Path(os.path.abspath(map_path)).parent
    for listing in (folder, *folder.parents):
        path = listing / MANIFEST_NAME
        if not path.is_file():
            continue
        key = Path(os.path.relpath(os.path.abspath(map_path), listing)).as_posix()
        row = _read_rows(path).get(key)
        if row is None or row["status"] != "written":
            continue
        if not _still_there(row["map_stamp"], map_path):
            raise GraphconvError(f"{shown_path(str(path))} lists this map, but the file changed since graphconv "
                                 "wrote it (its size or time differ): map the image again, or give the map that "
                                 "run wrote", file=map_path)
        return path, row
    return None


def row_settings(folder: str | os.PathLike, row: dict[str, str]) -> dict:
    """A row's `made_with` (`cluster.map_settings`, and `cluster._what_an_npy_holds`),
    with its labels as LABELS_NAME in the list's `folder` keeps them (rows of before it
    hold them themselves); {} where the row records none. Labels whose list is gone (the
    CSV copied without it) are left out: the classes are then named by their index."""
    try:
        settings = json.loads(row.get("made_with") or "{}")
    except ValueError:
        return {}
    if not isinstance(settings, dict):
        return {}
    digest = settings.pop(LABELS_DIGEST, None)
    if digest is not None and digest in _label_lists(Path(folder)):
        settings["labels"] = _label_lists(Path(folder))[digest]
    return settings


LABELS_DIGEST = "labels_digest"  # a row's name of its labels in LABELS_NAME


def _label_lists(folder: Path) -> dict[str, list]:
    """LABELS_NAME's lists by digest ({} where there is none, or it is not one graphconv
    wrote), read again only once the file changed."""
    path = folder / LABELS_NAME
    try:
        stat = path.stat()
    except OSError:
        return {}
    return _read_label_lists(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read_label_lists(path: str, mtime_ns: int, size: int) -> dict[str, list]:
    try:
        lists = json.loads(Path(path).read_text(**READING))
    except (OSError, ValueError):
        return {}
    return {digest: labels for digest, labels in lists.items() if isinstance(labels, list)} \
        if isinstance(lists, dict) else {}


def placement_of(row: dict[str, str]) -> CellPlacement | None:
    """The `CellPlacement` a row's placement columns record (`_placement_fields`), with
    no contents; None where they are empty (a --scales vector, a map another run made)."""
    from graphconv.georef import CellPlacement

    try:
        values = [float(row[name]) for name in PLACEMENT_COLUMNS[:4]]
    except (KeyError, ValueError):
        return None
    area = tuple(float(row[name]) for name in PLACEMENT_COLUMNS[4:]) if all(
        row.get(name) for name in PLACEMENT_COLUMNS[4:]) else None
    return CellPlacement(tuple(values[:2]), tuple(values[2:]), None, area=area)


def _written_since(listed: dict | None, found: dict | None, output: str) -> bool:
    """Whether `listed`, a map's row as the list holds it now, is another batch's that
    wrote the map now at `output` since this one found `found` there."""
    return (listed is not None and listed != found and listed["status"] == "written"
            and bool(listed["map_stamp"]) and listed["map_stamp"] == _stamp_text(output))


def _still_there(stamp_text: str, output: str) -> bool:
    """Whether the file at `output` is the one a row's `map_stamp` recorded, or a copy of
    it that kept its time (`files.same_file`: an --output-dir rsynced from a node's
    scratch to shared storage is still graphconv's, for --skip-existing)."""
    try:
        recorded = [int(part) for part in stamp_text.split(":")] if stamp_text else None
    except ValueError:
        return False
    return same_file(recorded, file_stamp(output))


def _stamp_text(path: str) -> str:
    stamp = file_stamp(path)
    return ":".join(map(str, stamp)) if stamp else ""


def _append(path: Path, row: dict[str, str]) -> None:
    """One row at the end, the header first in a new file."""
    fresh = not path.exists()
    with open(path, "a", newline="", **WRITING) as file:
        writer = csv.DictWriter(file, COLUMNS)
        if fresh:
            writer.writeheader()
        writer.writerow(row)


def _write_rows(path: Path, rows: dict[str, dict[str, str]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, COLUMNS)
    writer.writeheader()
    writer.writerows(rows[key] for key in sorted(rows))
    atomic_write(path, lambda p: Path(p).write_text(text.getvalue(), newline="", **WRITING))


def _placement_fields(placement: CellPlacement | None) -> dict[str, str]:
    """A map's row's placement columns: its first cell's centre, the step between cells
    and the crop each is the classifier on, in the level-0 pixels `CellPlacement` counts
    in; empty where unknown (a map another run made)."""
    fields = dict.fromkeys(PLACEMENT_COLUMNS, "")
    if placement is not None:
        values = (*placement.first, *placement.step, *(placement.area or ()))
        fields.update(zip(PLACEMENT_COLUMNS, (f"{value:.10g}" for value in values)))
    return fields


def _top_fields(top: RankedClasses | None, top_by: str | None) -> dict[str, str]:
    """A map's row's --top columns: its best classes as JSON, [["cat", 0.81], ["dog",
    0.1]] (a class name may hold any character; [] where no cell was computed), and what
    ranked them, "mean" or "max"; empty without --top."""
    if top is None:
        return dict.fromkeys(TOP_COLUMNS, "")
    ranked = [[label, float(f"{score:.6g}")] for label, score in top]
    return {"top": json.dumps(ranked, ensure_ascii=False), "top_by": top_by or "mean"}


def _damage_fields(damaged: DamagedCells | None) -> dict[str, str]:
    """A map's row's --skip-damaged columns: the cells left out (NaN, or the argmax map's
    65535) because their crops reach TIFF tiles or strips that cannot be decoded, and how
    many such tiles they reach (0 and 0 for an intact slide); empty without --skip-damaged,
    where a damaged slide fails."""
    if damaged is None:
        return dict.fromkeys(DAMAGE_COLUMNS, "")
    return dict(zip(DAMAGE_COLUMNS, (str(damaged.cells), str(len(damaged.chunks)))))


def _written_with_fewer_columns(path: Path) -> bool:
    """Whether the list at `path` has the columns of an earlier version's list."""
    try:
        with open(path, newline="", **READING) as file:
            return tuple(next(csv.reader(file), ())) in EARLIER_HEADERS
    except (OSError, csv.Error):
        return False


def _cut_short(path: Path) -> bool:
    """Whether the list ends in a row a kill cut short: no line end after it, or a quoted
    field (an error of several lines) left open."""
    try:
        with open(path, newline="", **READING) as file:
            text = file.read()
        for _ in csv.reader(io.StringIO(text, newline=""), strict=True):
            pass
    except csv.Error:
        return True
    except OSError:
        return False
    return bool(text) and not text.endswith("\n")


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
        with open(path, newline="", **READING) as file:
            reader = csv.reader(file)
            header = tuple(next(reader, ()))
            if header not in (COLUMNS, *EARLIER_HEADERS):
                raise GraphconvError(f"is already there and is not graphconv's list of maps (its first line is not "
                                     f"{','.join(COLUMNS)}): choose another --output-dir, or move it", file=str(path))
            lengths = {len(header), *map(len, EARLIER_HEADERS)}  # an earlier version's row appended
            return {row[1]: {**dict.fromkeys(COLUMNS, ""), **dict(zip(header, row))} for row in reader
                    if len(row) in lengths}
    except (OSError, csv.Error) as err:
        raise GraphconvError(f"cannot be read as graphconv's list of maps: {err}", file=str(path)) from None


def _unnamed(error: str, image: str) -> str:
    """An image's error as its row says it: without the image's path ahead, which the row's
    first column holds (a reading error began with it, a network's refusal did not)."""
    absolute = os.path.abspath(image)
    for name in (image, shown_path(absolute), absolute):
        if error.startswith(f"{name}: "):
            return error[len(name) + 2:]
    return error
