"""Every file graphconv writes goes through here: nothing lost, nothing half-written.

The promises (docs/cli.md, "Safety"):

* Nothing is written unless the command succeeds: single files are written to a
  temporary name beside the target and renamed into place when complete.
* A model folder is replaced only by a complete model, and at every instant the
  folder holds either the old model or the new one, even if the process is killed:
  the weights and labels are written first under content-hashed names
  (`weights-<hash>.npz`), then `model.yaml`, which names them, is renamed over the old
  one. That rename is the commit; files the old model used are removed after it.
* graphconv never deletes a file it did not make. In a model folder it owns
  `model.yaml` (recognised by its first line) and the weights and labels files a
  model.yaml it wrote named (`weights-<hash>.npz`, `labels-<hash>.txt`, and the older
  fixed names `weights.npz`, `labels.txt`), or that a save listed in its journal
  (below) before creating them; anything else a user puts there stays, even a file
  named like a weights file. A folder that is neither empty nor a graphconv model is
  refused.
* Two compiles to one folder take turns (an exclusive `flock` on the folder), so the
  last one wins cleanly. Temporaries left by a killed run are removed by the next.
  A save's journal (a temporary) lists the files it creates and the old model's, so
  the next save removes those a killed one left unused, and only those.
* Other outputs (score maps: `graphconv.tiling.MapFile`) are written under a temporary
  name (`temporary_beside`) and renamed into place (`move_into_place`); a folder (a
  .zarr map) replacing a folder is swapped by two renames, the old one set aside under
  a name the next run restores should the process die between them.
* Unchanged weights are not rewritten: the same content hashes to the same name.
* `run --resume` is the one exception to "nothing unless it succeeds", and only when
  asked: its map is written into `<output>.partial` (`graphconv.tiling.MapFile`), a
  folder kept when the run stops, whose tiles are listed in an append-only, synced log
  (`append_synced`) after their blocks are on disk (`sync_file`); held by one run at a
  time (`held_exclusively`).

GRAPHCONV_FAULT_KILL_AT=<checkpoint> kills the process at one of the `_checkpoint`
calls below: the tests use it to show that a kill at any point loses nothing.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import yaml

from graphconv.errors import GraphconvError

MODEL_SPEC = "model.yaml"
SIGNATURE = "# written by graphconv"
TMP_PREFIX = ".graphconv-tmp-"
ASIDE_PREFIX = ".graphconv-old-"  # a folder being replaced, until its replacement is in
JOURNAL = "journal.txt"  # a model save's temporary list of the files it may leave behind
LEGACY_OWNED = ("weights.npz", "labels.txt")
HASHED_OWNED = re.compile(r"(weights-[0-9a-f]{16}\.npz|labels-[0-9a-f]{16}\.txt)")
FAULT_ENV = "GRAPHCONV_FAULT_KILL_AT"
# what only a write fails with: a full disk, a quota, a file too large (libraries such as
# zarr raise them without the file's name)
WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())

try:
    import fcntl
except ImportError:  # Windows: no locking; concurrent compiles to one folder are not serialised
    fcntl = None


# ---- signals ------------------------------------------------------------------------------------

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM back for the block, and deliver them after it:
    for what must not be cut in half, a temporary's removal, a set of renames. Python
    raises KeyboardInterrupt (and the `graphconv` command its Terminated) at whatever
    line runs when the signal comes, so without this a signal landing between
    creating a temporary and removing it leaves the temporary, and one landing between
    two renames leaves half of a pair. Each signal that arrives in the block is
    delivered once as it leaves (`signal.raise_signal`, to the handler that was there
    before: nested blocks pass it outwards), every one of them: a SIGTERM at its default
    still ends the process when a Ctrl-C came first, whose KeyboardInterrupt is raised
    once all are delivered. A signal whose handler was installed outside Python (C code:
    `signal.getsignal` says None) is not held back, as it could not be put back. Only the
    main thread receives Python's signals; in another thread this does nothing. SIGKILL
    cannot be held back: what must survive a kill -9 is ordered so that any instant
    leaves a usable state (`save_model_folder`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def defer(signum, frame):
        if signum not in received:
            received.append(signum)

    previous: dict[int, object] = {}
    try:
        for signum in DEFERRED_SIGNALS:
            # A handler installed outside Python (getsignal: None) is left alone: once
            # replaced it could never be put back, and `defer` would swallow every later
            # signal for good; nor is SIG_DFL put there instead, which would kill the
            # process on a signal the C code meant to handle. Such a handler raises no
            # Python exception in the block, so there is nothing to hold back anyway.
            if signal.getsignal(signum) is None:
                continue
            previous[signum] = signal.signal(signum, defer)
        yield
    finally:
        raised = _restore_handlers(previous)
        for signum in received:  # each, even after one raised: a later SIGTERM must not be lost
            try:
                signal.raise_signal(signum)  # the restored handler: KeyboardInterrupt, Terminated, or death
            except BaseException as err:  # noqa: B902 - raised once all are delivered
                raised = raised or err
        if raised is not None:
            raise raised


def _restore_handlers(previous: dict[int, object]) -> BaseException | None:
    """Put back the handlers `signals_deferred` replaced, every one of them, even when a
    signal whose handler is already back arrives meanwhile (Python runs a pending
    handler as `signal.signal` is called, before it changes anything): what it raises
    is returned, to be raised once all are restored."""
    raised = None
    for signum, handler in previous.items():
        if handler is None:  # a C handler installed between getsignal and signal: cannot be put back
            continue
        for _ in range(3):
            try:
                signal.signal(signum, handler)
                break
            except BaseException as err:  # noqa: B902 - a restored handler's KeyboardInterrupt
                raised = raised or err
    return raised


# ---- what this process has put in place ---------------------------------------------------------

_COMMITTED: list[str] = []


def committed_outputs() -> list[str]:
    """The outputs renamed into place (complete) since `forget_committed`, as they were
    named: what an interrupted command did write (the `interrupted` line says so)."""
    return list(_COMMITTED)


def forget_committed() -> None:
    _COMMITTED.clear()


# ---- single files ---------------------------------------------------------------------------

def spare_the_model(model, outputs: list[tuple[str, str | None]]) -> None:
    """Refuse, before any work, an output (flag, path) that would write over a file the
    model was read from (`graph.meta["read_from"]`: its spec, weights and labels files,
    an ONNX model's external data) or into the folder of a compiled one: `run digits.yaml
    --output digits.npz` would replace the trained weights with a score map."""
    read_from = [Path(p) for p in model.graph.meta.get("read_from", ())]
    for flag, path in outputs:
        if not path:
            continue
        target = Path(path.rstrip("/")).resolve()
        for source in read_from:
            if target == source or source in target.parents:
                raise GraphconvError(f"{flag} would write over {source.name}, which the model is read from; write "
                                     "it somewhere else", file=path)


def check_writable(path: str | os.PathLike, shown: str | None = None) -> None:
    """Fail before any work is done if `path` could never be written: it is a folder, an
    empty name, or its folder (or the nearest one that exists) refuses new files. The
    error names `shown` if given (the user's output, where `path` is a stand-in for a
    file in its folder)."""
    target = _output_path(path)
    if target.is_dir():
        raise GraphconvError("is a folder; give a file name", file=shown or str(path))
    refuse_a_special_file(target, shown or str(path))
    existing = _nearest_existing_folder(target)
    _probe_write(existing, shown or str(path))


def refuse_a_special_file(path: str | os.PathLike, shown: str) -> None:
    """An output name that is a pipe, a device or a socket is no file to replace: a run
    reading it as an earlier map (an .npy's header) waited on a FIFO for ever, and the
    rename would have put a file in the device's place."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return  # not there (or a broken link): a new file
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise GraphconvError("is there and is not a regular file (a pipe or a device?): give the name of a file to "
                             "write", file=shown)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "",
                 size: int | None = None, unchanged: Callable[[], None] | None = None) -> None:
    """Call write(temporary path) and rename the result onto `path` once complete;
    missing folders above it are created, and removed again if the write fails. `size`:
    about how many bytes it writes, for the error should they not fit; `unchanged`
    (`replacing_checked`) may refuse the rename."""
    target = _output_path(path)
    if target.is_dir():
        raise GraphconvError("is a folder; give a file name", file=str(path))
    with output_folders(target):
        folder = target.resolve().parent
        _remove_stale_temporaries(folder)
        tmp = _temporary(folder, target.name + suffix)
        try:
            write(str(tmp))
            with replacing_checked(folder, unchanged), signals_deferred():
                os.replace(tmp, target)
                _COMMITTED.append(str(path))
        except BaseException as err:
            with signals_deferred():  # before the message: the free space it reports counts the room freed
                _unlink_quietly(tmp)
            if isinstance(err, OSError):
                raise GraphconvError(f"cannot write: {_why_not_written(err, folder, size)}",
                                     file=str(path)) from None
            raise


def _why_not_written(err: OSError, folder: Path, size: int | None) -> str:
    """An OSError from a write as the user can act on it. numpy's tofile (np.save of an
    array) reports a short write as '1274196 requested and 25568 written', the OS's
    reason lost: worked out again here, the file size limit (`ulimit -f`) or the free
    space, with the size it needed."""
    from graphconv.memory import format_size

    needs = f"; it needs {format_size(size)}" if size else ""
    if err.errno is not None:
        return f"{err.strerror or err}{needs if err.errno in WRITE_ERRNOS else ''}"
    try:
        import resource
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and (size is None or size > limit):
            return f"File too large (over the file size limit, ulimit -f, of {format_size(limit)}){needs}"
    except (ImportError, OSError, ValueError):
        pass
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(folder).free
        if size is None or free < size:
            return f"No space left on device ({format_size(free)} free){needs}"
    return f"{err}{needs}"


def atomic_write_all(files: list[tuple[str | os.PathLike, Callable[[str], None], str]]) -> None:
    """Write files that belong together (a spec and the weights it names), each
    (path, write(temporary path), suffix): all to temporaries first, then renamed into
    place from the last to the first with Ctrl-C and SIGTERM held back
    (`signals_deferred`). All old or all new: a write that fails (a full disk) leaves
    every file as it was, and so does a rename that fails partway (a folder that refuses
    it): before its rename each old file is given a second name (`_second_name`), from
    which those already replaced are put back, and a new file where there was none is
    removed. Only SIGKILL or a crash between two renames (microseconds), or a put-back
    that fails in its turn (the error says which file is then new), can leave some new
    beside some old: the first, renamed last, is the one that names the others. The
    second names a killed run leaves are settled by the next run writing into their
    folder (`_settle_set_aside`)."""
    targets = [_output_path(path) for path, _, _ in files]
    for target, (path, _, _) in zip(targets, files):
        if target.is_dir():
            raise GraphconvError("is a folder; give a file name", file=str(path))
    with contextlib.ExitStack() as stack:
        for target in targets:
            stack.enter_context(output_folders(target))
        made: list[Path] = []
        shown, folder = "", Path()  # the file at work, for the error
        left_new: list[Path] = []  # files a failed rename left new, that could not be put back
        try:
            for target, (path, write, suffix) in zip(targets, files):
                shown, folder = str(path), target.resolve().parent
                _remove_stale_temporaries(folder)
                made.append(_temporary(folder, target.name + suffix))
                write(str(made[-1]))
            with signals_deferred():
                steps: list[list] = []  # [target, its old file's second name or None, renamed yet]
                try:
                    for tmp, target, (path, _, _) in reversed(list(zip(made, targets, files))):
                        shown, folder = str(path), target.resolve().parent
                        steps.append([target, _second_name(target), False])
                        os.replace(tmp, target)
                        steps[-1][2] = True
                except BaseException:
                    left_new = _put_back(steps)
                    raise
                _COMMITTED.extend(str(path) for path, _, _ in files)
                for _, old, _ in steps:  # all new now; one left is settled by the next run
                    if old is not None:
                        with contextlib.suppress(OSError):
                            os.unlink(old)
        except BaseException as err:
            with signals_deferred():  # before the message: the free space it reports counts the room freed
                for tmp in made:
                    _unlink_quietly(tmp)
            if isinstance(err, OSError):
                still = f" ({', '.join(map(str, left_new))} could not be put back: new beside old)" if left_new else ""
                raise GraphconvError(f"cannot write: {_why_not_written(err, folder, None)}{still}",
                                     file=shown) from None
            raise


def _second_name(target: Path) -> Path | None:
    """Give the file at `target` a second name beside it (`.graphconv-old-<owner>-...`)
    before a file is renamed over it, for `atomic_write_all` to put it back from: a hard
    link, so `target` never goes missing, or where the file system has none the file
    itself renamed aside (a kill before the new one is in: the next run renames it
    back, `_settle_set_aside`). None when there is nothing at `target`."""
    if not os.path.lexists(target):
        return None
    aside = target.parent / f"{ASIDE_PREFIX}{_owner()}-{os.urandom(4).hex()}-{target.name}"
    try:
        os.link(target, aside, follow_symlinks=False)  # a symlink itself, as os.replace replaces it
    except (OSError, NotImplementedError):
        if target.is_dir() and not target.is_symlink():
            return None  # a folder put there meanwhile: the rename over it fails, and it stays as it is
        os.rename(target, aside)
    return aside


def _put_back(steps: list[list]) -> list[Path]:
    """Undo `atomic_write_all`'s renames after one failed: each old file back under its
    name from its second name, each new file where there was none removed, the second
    names of the files not reached removed. Returns the targets left new."""
    left_new = []
    for target, old, renamed in reversed(steps):
        try:
            if renamed and old is None:
                os.unlink(target)
            elif old is not None and (renamed or not os.path.lexists(target)):
                os.replace(old, target)
            elif old is not None:
                os.unlink(old)  # a link to the file still there, untouched
        except OSError:
            if renamed:
                left_new.append(target)
    return left_new


# ---- outputs written in pieces (score maps) ---------------------------------------------------

def temporary_beside(path: str | os.PathLike) -> Path:
    """A temporary name in `path`'s folder (which must exist: `output_folders`) for an
    output written in pieces, a memory-mapped .npy or a zarr folder. It carries this
    process's id, so if the process dies without cleaning up (SIGKILL, SIGTERM) the next
    run writing into the folder removes it; those of processes already gone are removed
    now."""
    target = Path(os.path.abspath(path))
    _remove_stale_temporaries(target.parent)
    return _temporary(target.parent, target.name)


def move_into_place(tmp: str | os.PathLike, target: str | os.PathLike,
                    unchanged: Callable[[], None] | None = None) -> None:
    """Rename the complete output `tmp` onto `target` (`put_in_place`), then remove the
    old output it replaced, if any: only the renames hold Ctrl-C and SIGTERM back, not
    the removal, which for a map of many GB takes long (`remove_temporary`). `unchanged`
    (`replacing_checked`) may refuse the rename."""
    with replacing_checked(Path(target).parent, unchanged):
        replaced = put_in_place(tmp, target)
    if replaced is not None:
        _checkpoint("output-replaced")
        remove_temporary(replaced)


@contextmanager
def replacing_checked(folder: str | os.PathLike, unchanged: Callable[[], None] | None) -> Iterator[None]:
    """The block (a rename onto an output) run after `unchanged()`, which raises where
    the output may not be replaced now, with `folder` locked between the two: two
    batches into one --output-dir, each checking its maps' names before any work, both
    found them free, then replaced each other's maps. Under the lock, the second one's
    check sees the first one's map. Unlocked where the file system refuses locks."""
    if unchanged is None:
        yield
        return
    with locked_if_possible(folder):
        unchanged()
        yield


@contextmanager
def locked_if_possible(folder: str | os.PathLike) -> Iterator[None]:
    """`_locked`, or nothing where the folder cannot be opened or locked (Lustre without
    flock): what it guards (a check before a rename, a list's append) is then done
    unlocked, which still catches all but a race to the same instant."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass
        yield
    finally:
        os.close(fd)


def put_in_place(tmp: str | os.PathLike, target: str | os.PathLike) -> Path | None:
    """The renames of `move_into_place`, with signals held back: `tmp` in under
    `target`'s name. A folder cannot be renamed over a folder, so one there (a .zarr map
    being replaced) is first renamed aside: were the process to die before the new one
    is in, the next run in the folder renames it back (`_remove_stale_temporaries`), so
    the name holds the old map or the new one, never neither. Once the new one is in,
    the old one is renamed to a temporary name (never to be renamed back), returned for
    the caller to remove (`remove_temporary`) once it has no more renames to make; None
    where no folder was replaced."""
    tmp, target = Path(tmp), Path(target)
    with signals_deferred():  # a Ctrl-C here would leave the old map aside and the new one in its temporary
        if target.is_symlink() or not target.is_dir():
            os.replace(tmp, target)
            _COMMITTED.append(str(target))
            return None
        aside = target.parent / f"{ASIDE_PREFIX}{_owner()}-{os.urandom(4).hex()}-{target.name}"
        os.rename(target, aside)
        try:
            _checkpoint("output-set-aside")
            os.rename(tmp, target)
        except BaseException:
            os.rename(aside, target)
            raise
        _COMMITTED.append(str(target))
        return as_temporary(aside)


def scratch_folder(purpose: str) -> Path:
    """A new folder of this process's in the system's temporary directory
    (`<TMP_PREFIX><pid>@<machine>-<purpose>-...`), after removing those of runs that are
    gone (`_remove_stale_temporaries`): a run killed with -9 never removes its own, and a
    local Dask cluster's folder, where its workers spill tiles, stayed in /tmp."""
    parent = Path(tempfile.gettempdir())
    _remove_stale_temporaries(parent)
    return Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{_owner()}-{purpose}-", dir=parent))


def remove_temporary(path: str | os.PathLike) -> None:
    """Remove a temporary file or folder, if it is there. Its name goes at once, with
    Ctrl-C and SIGTERM held back (`signals_deferred`): a file is unlinked; a folder is
    renamed to a temporary name of this process (`as_temporary`). Then the folder's
    contents are removed with signals not held back: for a .zarr map of many GB that
    takes long, and a job scheduler's SIGTERM kept waiting is followed by its SIGKILL. A
    signal cutting the removal short leaves the rest under that temporary name, which
    the next run writing into the folder removes once this process is gone
    (`_remove_stale_temporaries`)."""
    path = Path(path)
    with signals_deferred():
        if not path.is_dir() or path.is_symlink():
            _unlink_quietly(path)
            return
        path = as_temporary(path)
        if not path.name.startswith(TMP_PREFIX):  # it cannot be renamed (a mount point): removed whole, here
            shutil.rmtree(path, ignore_errors=True)
            return
    shutil.rmtree(path, ignore_errors=True)


def as_temporary(path: Path) -> Path:
    """`path` renamed to a fresh temporary name of this process, for a removal a signal
    may cut short: what is left of a folder half removed must be a temporary, which the
    sweep removes (`_remove_stale_temporaries`), not keep a name that says more (a
    `.graphconv-old-` folder would be renamed back as the output, `_settle_set_aside`; a
    partial map without its job would be refused). `path` as it is where its name is a
    temporary already, or it cannot be renamed."""
    if path.name.startswith(TMP_PREFIX):
        return path
    renamed = _temporary(path.parent, "removed")
    try:
        os.rename(path, renamed)
    except OSError:
        return path
    return renamed


def reserve_space(path: str | os.PathLike, shown_path: str) -> None:
    """Give the file `path` all its disk blocks now. A memory-mapped output is a sparse
    file (np.lib.format.open_memmap only sets its length); on a disk that fills up, a
    tile written into it has nowhere to go and the process dies of SIGBUS, losing the
    run. With posix_fallocate, or where a system or file system lacks it a check of the
    free space, a full disk is one error naming the output before any work is done. The
    free space is checked first in any case: a 2.5 TB map with 61 GB free went to
    posix_fallocate, which failed saying 0 B were free, so the file system may hand the
    file every free block of a disk others share before it refuses."""
    size = os.path.getsize(path)
    check_free_space(Path(path).parent, size - getattr(os.stat(path), "st_blocks", 0) * 512, shown_path, size)
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        fd = os.open(path, os.O_RDWR)
        try:
            fallocate(fd, 0, size)
            return
        except OSError as err:
            if err.errno in WRITE_ERRNOS - {errno.EFBIG}:
                raise _no_room(Path(path).parent, size, shown_path) from None
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
        finally:
            os.close(fd)


def check_free_space(folder: str | os.PathLike, missing: int, shown_path: str, size: int | None = None) -> None:
    """Refuse a memory-mapped file of `size` bytes (default `missing`) in `folder` whose
    `missing` bytes, those not on disk yet, are more than the disk has free."""
    if _free_bytes(folder) < missing:
        raise _no_room(folder, missing if size is None else size, shown_path)


def _free_bytes(folder: str | os.PathLike) -> int:
    """What this process may write in `folder`'s file system: what shutil.disk_usage says
    (statvfs' f_bavail), for root too. The blocks a file system keeps back (5% of an
    ext4 disk) are root's only where it is the file system's reserved user or holds
    CAP_SYS_RESOURCE, which a container's root often does not: counted, a 215 GB "free"
    disk with 51 GB usable passed maps it could not hold."""
    return shutil.disk_usage(folder).free


def _no_room(folder: str | os.PathLike, size: int, shown_path: str) -> GraphconvError:
    from graphconv.memory import format_size
    free = _free_bytes(folder)
    return GraphconvError(f"not enough disk space: it needs {format_size(size)} while it is written "
                          f"(memory-mapped), {format_size(free)} are free", file=shown_path)


@contextmanager
def write_errors_named(shown_path: str, *paths: str | os.PathLike) -> Iterator[None]:
    """Report an OSError from writing an output as one GraphconvError naming it: one
    about a file at or under `paths` (the output's temporaries), or one only a write
    gives (`WRITE_ERRNOS`: a full disk, which zarr's chunk writes raise with no file
    name). Any other (an input that cannot be read) passes as it is."""
    try:
        yield
    except OSError as err:
        if err.errno not in WRITE_ERRNOS and not _is_under(err.filename, paths):
            raise
        raise GraphconvError(f"cannot write: {err.strerror or err}", file=shown_path) from None


def _is_under(filename, paths) -> bool:
    if not isinstance(filename, (str, os.PathLike)):
        return False
    name = os.path.abspath(filename)
    return any(name == os.path.abspath(p) or name.startswith(os.path.abspath(p) + os.sep) for p in paths)


class HeldByAnotherRun(GraphconvError):
    """A partial map another graphconv run is writing now (`held_exclusively`)."""


class FinishedByAnotherRun(GraphconvError):
    """A partial map whose run, waited for, finished it: its map is in place (`held_exclusively`)."""


LOCK_POLL_S = 0.5  # how often a run waiting for another's partial map tries its lock


@contextmanager
def held_exclusively(folder: str | os.PathLike, shown_path: str,
                     waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive lock on `folder` for the block: two runs resuming one partial map
    would write it in turns. Where another process holds it, refused at once
    (`HeldByAnotherRun`), or with `waiting` (a batch's image whose map another batch is
    writing: a requeued array task beside its predecessor) `waiting()` is called and the
    lock waited for; if that run finished the map meanwhile (it moves the folder away
    before it lets go), `FinishedByAnotherRun`; if it stopped, the block goes on from its
    tiles."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        if not _locked_now(fd):
            if waiting is None:
                raise HeldByAnotherRun("another graphconv run is writing it now (wait for it, or stop it)",
                                       file=shown_path)
            waiting()
            while not _locked_now(fd):
                time.sleep(LOCK_POLL_S)  # polled, not blocked on: Ctrl-C stops a wait at once
            if not _same_folder(fd, folder):
                raise FinishedByAnotherRun("another graphconv run finished it while this one waited",
                                           file=shown_path)
        yield
    finally:
        os.close(fd)


def _locked_now(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _same_folder(fd: int, folder: str | os.PathLike) -> bool:
    """Whether `folder` is still the folder open as `fd` (not moved away, or made anew)."""
    try:
        now, held = os.stat(folder), os.fstat(fd)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def append_synced(path: str | os.PathLike, text: str) -> None:
    """Append `text` to a file and flush it to disk before returning: a log a kill at any
    moment leaves holding every line appended before, and at most the last one cut
    short."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_file(path: str | os.PathLike, folder_too: bool = False) -> None:
    """Flush a file written by another library (a zarr chunk) to disk, and its folder's
    entry for it with `folder_too`; nothing where it is not there (zarr writes no chunk
    that holds only its fill value)."""
    _fsync(path)
    if folder_too:
        _sync_folder(Path(path).parent)


def file_stamp(path: str | os.PathLike) -> list[int] | None:
    """A file's (or folder's) size, modification time (ns) and inode; None where it is
    not there. What says a file changed without reading it: a model's weights retrained,
    an image replaced (a file renamed into place is a new inode, should its time fall in
    the same tick; a folder's time changes as files are renamed into it)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return [status.st_size, status.st_mtime_ns, status.st_ino]


def same_file(recorded: list[int] | None, now: list[int] | None) -> bool:
    """Whether two `file_stamp`s are of one file left as it was: the same size and
    modification time to the second. Not the inode, nor the time's fraction: a folder
    copied with its times (cp -a, rsync -a, a backup restored, a node's scratch copied to
    shared storage) gets new inodes, and a file system of whole seconds (Lustre) keeps
    only those. (Batches writing one folder at once compare whole stamps: a map renamed
    into place in the same tick is a new inode.)"""
    if not recorded or not now or len(recorded) < 2:
        return False
    return recorded[0] == now[0] and recorded[1] // 10**9 == now[1] // 10**9


def model_digest(paths: Iterable[str | os.PathLike]) -> str:
    """16 hex digits of sha256 over the contents of the files a model was read from
    (`graph.meta["read_from"]` and the model's own path): what says two maps were made
    with the same network and weights, where a path says nothing of a model compiled
    again to the same folder or of weights retrained into the same file."""
    digest = hashlib.sha256()
    for file_sha256 in model_file_digests(paths).values():
        digest.update(file_sha256.encode())
    return digest.hexdigest()[:16]


def model_file_digests(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """Each file that says what a model is, by absolute path: its sha256 ("" where it
    cannot be read). A model folder counts by its model.yaml, which names its weights
    and labels files by their contents' hash, so its files inside are not read again (a
    VGG-16 folder's 553 MB), and a file added to the folder changes nothing. Each
    file's digest is kept while its `file_stamp` holds."""
    paths = [Path(p).resolve() for p in paths]  # a folder given as out/m names its files by absolute paths
    folders = [p for p in paths if p.is_dir()]
    files = [p / MODEL_SPEC if p.is_dir() else p for p in paths
             if p.is_dir() or not any(folder in p.parents for folder in folders)]
    return {str(file): _file_digest(str(file), tuple(file_stamp(file) or ())) for file in dict.fromkeys(files)}


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, stamp: tuple) -> str:
    """sha256 of a file's bytes ("" where it cannot be read), for `model_file_digests`; cached
    by path and `file_stamp`, so a file rewritten is read again."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def write_synced_text(path: str | os.PathLike, text: str) -> None:
    """A small text file written whole and flushed to disk."""
    _write_synced(Path(path), _text_writer(text))


# ---- model folders ----------------------------------------------------------------------------

def check_model_target(directory: str | os.PathLike) -> None:
    """Refuse, before anything is computed or written, an output that is not a new
    folder, an empty folder, or a model folder graphconv wrote."""
    target = _output_path(directory)
    if target.exists() and not target.is_dir():
        raise GraphconvError("exists and is not a folder; a compiled model is a folder",
                             file=str(directory))
    if target.is_dir():
        foreign = _foreign_folder_entries(target)
        if foreign is not None:
            shown_names = ", ".join(repr(n) for n in foreign[:3])
            raise GraphconvError(
                f"is a folder that graphconv did not write (it holds {shown_names}"
                f"{', ...' if len(foreign) > 3 else ''}); compile into a new or empty folder",
                file=str(directory))
        _probe_write(target, str(directory))
    else:
        _probe_write(_nearest_existing_folder(target), str(directory))


def save_model_folder(directory: str | os.PathLike, spec_text: Callable[[str, str | None], str],
                      weights: dict[str, np.ndarray], labels: list[str] | None) -> Path:
    """Write a model folder as the module docstring describes. `spec_text(weights_file,
    labels_file)` returns model.yaml's text naming those files."""
    target = _output_path(directory)
    check_model_target(target)
    with output_folders(target / MODEL_SPEC):
        with _locked(target):
            check_model_target(target)  # another process may have changed it while we waited
            _remove_journaled(target)
            _remove_stale_temporaries(target, locked=True)
            old_files = _files_named_by(target / MODEL_SPEC)
            journal_path = _temporary(target, JOURNAL)
            written: list[Path] = [journal_path]
            try:
                journal = _Journal(journal_path, old_files)  # a full disk can fail it, leaving it empty
                weights_name = _write_hashed(target, "weights", ".npz", _weights_writer(weights), written, journal)
                _checkpoint("weights-written")
                labels_name = None
                if labels is not None:
                    text = "\n".join(labels) + "\n"
                    labels_name = _write_hashed(target, "labels", ".txt", _text_writer(text), written, journal)
                spec = _temporary(target, MODEL_SPEC)
                written.append(spec)
                _write_synced(spec, _text_writer(spec_text(weights_name, labels_name)))
                _checkpoint("before-commit")
                os.replace(spec, target / MODEL_SPEC)
                _COMMITTED.append(str(directory))
                written.remove(spec)
                _sync_folder(target)
            except BaseException as err:
                with signals_deferred():
                    for path in reversed(written):  # the journal last: it names what a kill here would leave
                        _unlink_quietly(path)
                if isinstance(err, OSError):  # a full disk, a file too large: numpy and the OS name no file
                    raise GraphconvError(f"cannot write: {err.strerror or err}", file=str(directory)) from None
                raise
            _checkpoint("after-commit")
            _remove_superseded(target, old_files, keep={weights_name, labels_name})
            _unlink_quietly(journal.path)
    return target


def is_model_folder(folder: Path) -> bool:
    """Whether `folder` holds a model.yaml that graphconv wrote."""
    spec = folder / MODEL_SPEC
    try:
        with open(spec, "rb") as f:
            return f.read(len(SIGNATURE)).decode("utf-8", "replace") == SIGNATURE
    except OSError:
        return False


def _foreign_folder_entries(folder: Path) -> list[str] | None:
    """None when graphconv may write into `folder` (empty, or a model it wrote);
    otherwise the names of what is there."""
    try:
        entries = sorted(os.listdir(folder))
    except OSError as err:
        raise GraphconvError(f"cannot read the folder: {err.strerror}", file=str(folder)) from None
    if not entries or is_model_folder(folder):
        return None
    if all(name.startswith(TMP_PREFIX) or HASHED_OWNED.fullmatch(name) for name in entries):
        return None  # what a first compile, killed before its commit, left
    return entries


def _files_named_by(spec: Path) -> set[str]:
    """The graphconv-made files an existing model.yaml uses (to remove once replaced)."""
    if not is_model_folder(spec.parent):
        return set()
    try:
        doc = yaml.safe_load(spec.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return set()
    names = {doc.get(key) for key in ("weights", "labels")} if isinstance(doc, dict) else set()
    return {n for n in names if isinstance(n, str) and _owned_name(n)}


def _owned_name(name: str) -> bool:
    return name in LEGACY_OWNED or HASHED_OWNED.fullmatch(name) is not None


def _remove_superseded(folder: Path, old_files: set[str], keep: set[str | None]) -> None:
    """After the commit: the files the old model.yaml named, read before it was
    replaced. Nothing else: a file merely named like ours (a user's copy of another
    model's `weights-<hash>.npz`) is not ours to delete."""
    for name in old_files - keep:
        _unlink_quietly(folder / name)


class _Journal:
    """What a model save may leave behind if killed: the old model's files (removed only
    after the commit) and each file it creates, listed before the file exists. A
    temporary (`.graphconv-tmp-<pid>-...-journal.txt`), appended to and synced line by
    line; the next save removes the names it lists that its model.yaml does not use
    (`_remove_journaled`), which keeps the promise to delete only files graphconv made."""

    def __init__(self, path: Path, names: set[str]):
        self.path = path
        self._append(sorted(names))

    def add(self, name: str) -> None:
        self._append([name])

    def _append(self, names: list[str]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(name + "\n" for name in names))
            f.flush()
            os.fsync(f.fileno())


def _remove_journaled(folder: Path) -> None:
    """The files a killed save listed that the folder's model no longer (or not yet)
    uses: its orphaned weights, or the old model's files it had not removed. Called under
    the folder's lock, before the journals are swept with the other temporaries. A line
    cut short by the kill is no name graphconv owns, and is ignored."""
    in_use = _files_named_by(folder / MODEL_SPEC)
    for journal in folder.glob(f"{TMP_PREFIX}*-{JOURNAL}"):
        try:
            listed = set(journal.read_text(encoding="utf-8").splitlines())
        except (OSError, UnicodeDecodeError):
            continue
        for name in {n for n in listed if _owned_name(n)} - in_use:
            _unlink_quietly(folder / name)


def _write_hashed(folder: Path, stem: str, suffix: str, write: Callable[[Path], None],
                  written: list[Path], journal: _Journal) -> str:
    """Write through a temporary, then rename to `<stem>-<content hash><suffix>`; an
    existing file of that name already holds the same content and is kept as it is. A
    new name goes in the journal before the file appears under it."""
    tmp = _temporary(folder, stem + suffix)
    written.append(tmp)
    digest = _write_synced(tmp, write)
    name = f"{stem}-{digest}{suffix}"
    if (folder / name).exists():
        _unlink_quietly(tmp)
    else:
        journal.add(name)
        os.replace(tmp, folder / name)
        written.append(folder / name)
    written.remove(tmp)
    return name


def _weights_writer(weights: dict[str, np.ndarray]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, **weights)
    return write


def _text_writer(text: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_text(text, encoding="utf-8")
    return write


def _write_synced(path: Path, write: Callable[[Path], None]) -> str:
    """Write, flush to disk, and return a short digest of the bytes written."""
    write(path)
    digest = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
        os.fsync(f.fileno())
    return digest.hexdigest()


# ---- folders, temporaries, locks --------------------------------------------------------------

def _output_path(path: str | os.PathLike) -> Path:
    if str(path).strip() == "":
        raise GraphconvError("the output path is empty")
    return Path(path)


def _nearest_existing_folder(path: Path) -> Path:
    folder = path.resolve().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise GraphconvError(f"cannot create the output's folder: {folder} is a file", file=str(path))
    return folder


def _probe_write(folder: Path, shown_path: str) -> None:
    """Create and delete a file in `folder`: the only reliable test (as root, permission
    bits say yes where /proc or a read-only mount say no). Ctrl-C or SIGTERM waits until
    the probe is gone (`signals_deferred`)."""
    with signals_deferred():
        try:
            fd, probe = tempfile.mkstemp(prefix=TMP_PREFIX + f"{_owner()}-probe-", dir=folder)
        except OSError as err:
            raise GraphconvError(f"cannot write in {folder}: {err.strerror or err}", file=shown_path) from None
        try:
            os.close(fd)
        finally:
            _unlink_quietly(Path(probe))


def missing_folders(path: str | os.PathLike) -> list[Path]:
    """The folders above `path` that do not exist yet, innermost first."""
    missing = []
    folder = Path(path).resolve().parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


def check_name_fits(path: str, flag: str) -> None:
    """Refuse, before any work, an output whose name is longer than its file system takes:
    it was refused when written, after the run."""
    folder = next((p for p in Path(os.path.abspath(path)).parents if p.is_dir()), Path("/"))
    length, limit = len(os.fsencode(Path(path.rstrip("/")).name)), name_max(folder)
    if length > limit:
        raise GraphconvError(f"{flag}'s name is {length} bytes, longer than the {limit} its file system takes: "
                             "give a shorter one", file=path)


@contextmanager
def output_folders(path: str | os.PathLike) -> Iterator[None]:
    """Create the missing folders above `path` for a write (`-o build/model` works in a
    fresh checkout), and remove them again if the write fails: a failed command
    leaves nothing behind."""
    _nearest_existing_folder(Path(path))
    missing = missing_folders(path)
    try:
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                pass
            except OSError as err:
                raise GraphconvError(f"cannot create folder {folder}: {err.strerror}", file=str(path)) from None
        yield
    except BaseException:
        with signals_deferred():
            for folder in missing:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (released by the kernel if the process dies)."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _temporary(folder: Path, name: str) -> Path:
    """A temporary for `name` in `folder`, named for its owner (`_owner`). A name that
    would not fit the file system's limit once the prefix is added (70 CJK characters
    are 210 bytes of 255) is cut to a digest, its last suffix kept (np.save and Pillow
    go by it): a map was computed, then refused "File name too long" for a legal name.
    Room is kept for a scratch name made from it (a .tif map's `<temporary>.npy`)."""
    prefix = f"{TMP_PREFIX}{_owner()}-{os.urandom(4).hex()}-"
    if len(os.fsencode(prefix + name)) + len(".npy") > name_max(folder):
        name = hashlib.sha256(os.fsencode(name)).hexdigest()[:16] + Path(name).suffix[:16]
    return folder / (prefix + name)


def name_max(folder: str | os.PathLike) -> int:
    """The longest file name, in bytes, the file system holding `folder` takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _owner() -> str:
    """`<pid>@<machine>`: the process a temporary belongs to, and where it runs."""
    return f"{os.getpid()}@{_machine()}"


@functools.lru_cache(maxsize=1)
def _machine() -> str:
    """This host and pid namespace, as 8 hex digits. Process ids mean something only
    there: on a folder shared between the nodes of a cluster (a SLURM array writing its
    maps to one NFS folder), or between containers, another machine's live run has a pid
    that is not running here, and its map in progress must not be swept as a dead run's."""
    parts = [socket.gethostname()]
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        with contextlib.suppress(OSError):
            parts.append(os.readlink(source) if source.endswith("/pid") else Path(source).read_text().strip())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:8]


def _remove_stale_temporaries(folder: Path, locked: bool = False) -> None:
    """Remove temporaries of runs that died (their process is gone; in a locked model
    folder, every temporary is stale: a live writer would hold the lock), and settle the
    outputs they had set aside to replace (`move_into_place`)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name.startswith(TMP_PREFIX) and _stale(name[len(TMP_PREFIX):], locked):
            remove_temporary(folder / name)
        elif name.startswith(ASIDE_PREFIX) and _stale(name[len(ASIDE_PREFIX):], locked):
            _settle_set_aside(folder, name)


def _stale(owner_and_name: str, locked: bool) -> bool:
    """Whether a temporary named `<pid>@<machine>-...` belongs to a run that is gone:
    one of this machine's (`_machine`; names without one are from before it was added)
    whose process is not running. Another machine's is left alone: its process cannot be
    seen from here. In a locked model folder every temporary is stale: a live writer
    would hold the lock."""
    pid, _, machine = owner_and_name.split("-", 1)[0].partition("@")
    if locked:
        return True
    return pid.isdigit() and machine in ("", _machine()) and not _process_alive(int(pid))


def _settle_set_aside(folder: Path, name: str) -> None:
    """An output a dead run renamed aside to replace (`.graphconv-old-<pid>-<hex>-<name>`):
    renamed back if the run died before its replacement was in, else removed."""
    parts = name[len(ASIDE_PREFIX):].split("-", 2)
    if len(parts) != 3 or not parts[2]:
        return
    original = folder / parts[2]
    if os.path.lexists(original):
        remove_temporary(folder / name)
    else:
        with contextlib.suppress(OSError):
            os.rename(folder / name, original)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
    _fsync(folder)


def _fsync(path: str | os.PathLike) -> None:
    """fsync a file or folder by its path; nothing where it cannot be opened or synced."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
        path.unlink()


def _checkpoint(name: str) -> None:
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
