"""graphconv's built-in passes, written against the public API in `graphconv.pass_manager`
exactly as a user's plugin would be. Importing this package registers them all: each
module here is imported, so adding a pass is adding its file.

This folder is installed as `graphconv.passes` (see setup.py), never as a top-level
`passes` package: a `passes.py` or `passes/` in the user's working folder cannot
shadow it."""
import importlib
import pkgutil


def _import_pass_modules() -> None:
    """Import every module of this folder in name order (pkgutil sorts), so a new pass is
    one new file here: nothing else lists it."""
    for found in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{found.name}")


_import_pass_modules()
