"""`python -m graphconv`: the `graphconv` command, with the same startup handling
(graphconv.console: the environment checked and a Ctrl-C answered before numba is imported)."""
import sys

from graphconv.console import main

sys.exit(main())
