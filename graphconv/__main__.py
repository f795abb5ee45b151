"""`python -m graphconv`: the `graphconv` command, once graphconv has been imported (the
console command, graphconv_console.py, also handles a Ctrl-C during that import)."""
import sys

from graphconv.cli import console_main

sys.exit(console_main())
