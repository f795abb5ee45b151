"""The `graphconv` command's entry point: what must happen before graphconv is imported.

Importing the command (graphconv.cli) and what it runs takes about a second (numba,
networkx, numpy), and until `graphconv.cli` installs its handlers, a Ctrl-C there would
end in a traceback through the imports: here it is the one line `graphconv: interrupted
(nothing was written)`, exit 130, and SIGTERM `graphconv: terminated (nothing was
written)`, exit 143. Nothing has been written yet, so the process leaves at once
(os._exit: the imports half done need no unwinding). And numba reads NUMBA_NUM_THREADS
as it is imported, failing with a traceback on 0 or a negative number and warning over
several lines on one that is not a number (empty included): it is checked here first,
one line, exit 2.

This module imports nothing of graphconv's until the checks and handlers are in place:
graphconv/__init__.py imports nothing itself (its names are imported on first use), so
importing graphconv.console costs only the standard library. `python -m graphconv`
(graphconv/__main__.py) runs this same entry point.
"""
import io
import os
import signal
import sys

EXIT_USER_ERROR = 2


def main() -> int:
    """The command: its status is the process's exit status (it does not return when the
    command ran: `_leave`)."""
    _closed_streams_to_devnull()
    _name_standard_output()
    problem = environment_problem(os.environ)
    if problem:
        print(f"graphconv: {problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _leave_at_once)
    from graphconv.threads import fit_pool_to_quota
    fit_pool_to_quota()  # before numba is imported, which sizes its pool then
    from graphconv.cli import console_main
    _leave(console_main())  # its first line puts its own handlers in place of these


def _leave(status: int) -> None:
    """End the process with the command's `status` once its exit handlers have run
    (under the command's last handlers: a signal now ends it at once with `status`),
    skipping the interpreter's teardown: that puts the default handlers back first, and
    a scheduler's SIGTERM in its last quarter second then killed a command that had
    finished, exit 143 with nothing said. Everything the command wrote is complete and
    flushed by now."""
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can go out
            pass
    os._exit(status)


def _closed_streams_to_devnull() -> None:
    """A stream the command was started without (`2>&-`: Python then has sys.stderr None)
    goes to os.devnull: print(file=None) wrote the notes into standard output, among the
    data, and the first write to sys.stderr ended the command with a traceback no one saw,
    exit 1. Its descriptor (the stream's own: the lowest free) stays open when the stream
    object is dropped (`_name_standard_output` replaces it): closed, the next file the
    command opened took descriptor 1, and what it printed went into that file."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.open(os.devnull, os.O_WRONLY), "w", closefd=False))


_LOST: list[OSError] = []  # the first error writing standard output


def standard_output_lost() -> OSError | None:
    """The error that stopped standard output (`_StandardOutput`), or None."""
    return _LOST[0] if _LOST else None


class _StandardOutput(io.FileIO):
    """File descriptor 1, whose first write error is kept, naming it, and not raised:
    what the command prints after it is dropped and its work goes on, so that what it
    writes to files is all or nothing. Raised, `> /dev/full` (or `| true`) stopped `run`
    after its map was in place, exit 2 with the map written; and with `--heatmap-out`
    after it, with the heatmap not written. `cli.after_lost_output` says at the end what
    was lost. The name: "No space left on device" alone was read as the map's disk."""

    def write(self, data):
        if not _LOST:
            try:
                return super().write(data)
            except OSError as err:  # OSError(errno, ...) is the errno's own class: BrokenPipeError stays one
                _LOST.append(OSError(err.errno, err.strerror, "standard output"))
        return len(data)


def _name_standard_output() -> None:
    """sys.stdout as it was (encoding, errors, line buffering), over `_StandardOutput`."""
    try:
        stream = sys.stdout
        raw = _StandardOutput(stream.fileno(), "w", closefd=False)
    except (AttributeError, OSError, ValueError):  # not a file descriptor's stream: left as it is
        return
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(raw), encoding=stream.encoding, errors=stream.errors,
                                  line_buffering=stream.line_buffering)


def environment_problem(environ) -> str | None:
    """What is wrong with the environment variables read as numba is imported, or None:
    a thread count it refuses with a traceback, or one so large that OpenMP failed to
    start the threads (40000: a libgomp error, exit 1) or crashed (65536: a segfault);
    its JIT turned off, where graphconv's kernels are only ever run compiled (a
    traceback from the first kernel)."""
    if environ.get("NUMBA_DISABLE_JIT", "0").strip() not in ("", "0"):
        return (f"NUMBA_DISABLE_JIT={environ['NUMBA_DISABLE_JIT']!r}: graphconv's kernels run only compiled by "
                "numba; unset it")
    value = environ.get("NUMBA_NUM_THREADS")
    if value is None:
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        return (f"NUMBA_NUM_THREADS={value!r}: it must be a whole number of threads, 1 or more "
                "(unset it for one per core)")
    cores = os.cpu_count() or 1
    most = max(MOST_THREADS, 8 * cores)
    if threads > most:
        return (f"NUMBA_NUM_THREADS={value!r}: more threads than this machine can use ({cores} cores: give at "
                f"most {most}, or unset it for one per core)")
    return None


MOST_THREADS = 256  # NUMBA_NUM_THREADS allowed on any machine (on one of many cores, 8 a core)


def _leave_at_once(signum, frame):
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    try:
        sys.stderr.write(f"graphconv: {what} (nothing was written)\n")
        sys.stderr.flush()
    finally:
        os._exit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
