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
import os
import signal
import sys

EXIT_USER_ERROR = 2


def main() -> int:
    """The command: its status is the process's exit status (it does not return when the
    command ran: `_leave`)."""
    problem = environment_problem(os.environ)
    if problem:
        print(f"graphconv: {problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _leave_at_once)
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


def environment_problem(environ) -> str | None:
    """What is wrong with the environment variables read as numba is imported, or None."""
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
    return None


def _leave_at_once(signum, frame):
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    try:
        sys.stderr.write(f"graphconv: {what} (nothing was written)\n")
        sys.stderr.flush()
    finally:
        os._exit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
