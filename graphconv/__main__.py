import sys

from graphconv.cli import main

sys.exit(main())
