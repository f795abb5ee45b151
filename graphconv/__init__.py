"""graphconv: compile ConvNet classifiers into fully convolutional networks.

    import graphconv
    model = graphconv.compile_model("specs/alexnet.yaml")      # fc -> conv and friends
    scores = model.run(image)                                  # (N, classes, rows, cols)
    model.cell_box(0, 1)                                       # that cell's field in the image
    scores = model.run_image("photo.jpg")                      # a picture, read and preprocessed
    graphconv.verify(graphconv.load(spec), model, image)       # the dense map against the crop loop

Pass authors start at `graphconv.pass_manager` (register_pass) and `graphconv.ir` (Graph).

Importing graphconv (or any graphconv.* module) imports nothing else: each name below is
imported from its module on first use (PEP 562), and so is each sub-module read as an
attribute (`graphconv.ops` after a plain `import graphconv`). The `graphconv` command's
entry point, graphconv.console, must run before numba (about a second of imports with
networkx) and check the environment numba reads as it is imported. Kernels find their
cache because graphconv.ops (and graphconv.sources) install it before defining any
(graphconv/kernel_cache.py).
"""
import importlib as _importlib
import importlib.util as _importlib_util
from typing import TYPE_CHECKING as _TYPE_CHECKING

__version__ = "0.1.0"

# name: (module, attribute there). The TYPE_CHECKING block and __all__ below repeat these names as the literal
# imports and list that type checkers, IDEs and linters read (no dict); tests/test_api.py checks all three agree
_EXPORTS = {
    "install_kernel_cache": ("graphconv.kernel_cache", "install_kernel_cache"),  # kept working, not in __all__
    "configure_process": ("graphconv.process", "configure_process"),
    "set_memory_limit": ("graphconv.memory", "set_memory_limit"),
    "GraphconvError": ("graphconv.errors", "GraphconvError"),
    "GraphconvWarning": ("graphconv.errors", "GraphconvWarning"),
    "Location": ("graphconv.errors", "Location"),
    "PassError": ("graphconv.errors", "PassError"),
    "ShapeError": ("graphconv.errors", "ShapeError"),
    "Graph": ("graphconv.ir", "Graph"),
    "Node": ("graphconv.ir", "Node"),
    "DEFAULT_PIPELINE": ("graphconv.pass_manager", "DEFAULT_PIPELINE"),
    "PassManager": ("graphconv.pass_manager", "PassManager"),
    "load_plugin": ("graphconv.pass_manager", "load_plugin"),
    "register_pass": ("graphconv.pass_manager", "register_pass"),
    "registered_passes": ("graphconv.pass_manager", "registered_passes"),
    "run_passes": ("graphconv.pass_manager", "run_passes"),
    "load_network": ("graphconv.frontends", "load_network"),  # a spec, a model folder, an ONNX or plugin format
    "load_spec": ("graphconv.frontends", "load_network"),  # its older name, kept working
    "save_model": ("graphconv.frontends.yaml", "save_model"),
    "Model": ("graphconv.model", "Model"),
    "compile_graph": ("graphconv.compiler", "compile_graph"),
    "compile_model": ("graphconv.compiler", "compile_model"),
    "Field": ("graphconv.receptive", "Field"),
    "receptive_fields": ("graphconv.receptive", "receptive_fields"),
    "verify": ("graphconv.dense", "verify"),
    "load_image": ("graphconv.images", "load_image"),
}

if _TYPE_CHECKING:  # for type checkers and IDEs; at run time, __getattr__ below
    from graphconv.compiler import compile_graph, compile_model
    from graphconv.dense import verify
    from graphconv.errors import GraphconvError, GraphconvWarning, Location, PassError, ShapeError
    from graphconv.frontends import load_network
    from graphconv.frontends import load_network as load_spec
    from graphconv.frontends.yaml import save_model
    from graphconv.images import load_image
    from graphconv.ir import Graph, Node
    from graphconv.memory import set_memory_limit
    from graphconv.model import Model
    from graphconv.pass_manager import (DEFAULT_PIPELINE, PassManager, load_plugin, register_pass,
                                        registered_passes, run_passes)
    from graphconv.process import configure_process
    from graphconv.receptive import Field, receptive_fields


def load(path, **options) -> "Model":
    """Load a spec file, a compiled model directory or an ONNX model as a runnable Model;
    `options` are `Model.load`'s (weights, labels, crop_size, task, preprocess, activation)."""
    from graphconv.model import Model
    return Model.load(path, **options)


def __getattr__(name: str):
    """An exported name, imported from its module on first use (then kept here), or a
    sub-module not imported yet (as the eager import of earlier versions left them all)."""
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        value = getattr(_importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    if name.isidentifier() and not name.startswith("_") and _importlib_util.find_spec(f"{__name__}.{name}"):
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names (a notebook's tab completion), with those imported so far."""
    return sorted(name for name in set(globals()) | set(_EXPORTS) if not name.startswith("_"))


__all__ = [
    "DEFAULT_PIPELINE", "Field", "Graph", "GraphconvError", "GraphconvWarning", "Location", "Model", "Node",
    "PassError", "PassManager", "ShapeError", "compile_graph", "compile_model", "configure_process", "load",
    "load_image", "load_network", "load_plugin", "load_spec", "receptive_fields", "register_pass", "registered_passes",
    "run_passes", "save_model", "set_memory_limit", "verify",
]
