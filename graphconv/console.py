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
    problem = environment_problem(os.environ)
    if problem:
        print(f"graphconv: {problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _leave_at_once)
    from graphconv.cli import console_main
    return console_main()  # its first line puts its own handlers in place of these


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
