"""graphconv: compile ConvNet classifiers into fully convolutional networks.

    import graphconv
    model = graphconv.compile_model("specs/alexnet.yaml")      # fc -> conv and friends
    scores = model.run(image)                                  # (N, classes, rows, cols)
    model.cell_box(0, 1)                                       # that cell's field in the image
    scores = model.run_image("photo.jpg")                      # a picture, read and preprocessed
    graphconv.verify(graphconv.load(spec), model, image)       # the dense map against the crop loop

Pass authors start at `graphconv.pass_manager` (register_pass) and `graphconv.ir` (Graph).
"""
from graphconv.kernel_cache import install_kernel_cache

install_kernel_cache()  # before any kernel is compiled; graphconv's kernels only

from graphconv.process import configure_process
from graphconv.memory import set_memory_limit

from graphconv.errors import GraphconvError, Location, PassError, ShapeError
from graphconv.ir import Graph, Node
from graphconv.pass_manager import (DEFAULT_PIPELINE, PassManager, load_plugin, register_pass, registered_passes,
                                    run_passes)
from graphconv.frontends import load_network as load_spec
from graphconv.frontends.yaml import save_model
from graphconv.model import Model
from graphconv.compiler import compile_graph, compile_model
from graphconv.receptive import Field, receptive_fields
from graphconv.dense import verify
from graphconv.images import load_image

__version__ = "0.1.0"


def load(path, **options) -> Model:
    """Load a spec file, a compiled model directory or an ONNX model as a runnable Model;
    `options` are `Model.load`'s (weights, labels, crop_size, task, preprocess)."""
    return Model.load(path, **options)


__all__ = [
    "DEFAULT_PIPELINE", "Field", "Graph", "GraphconvError", "Location", "Model", "Node", "PassError", "PassManager",
    "ShapeError", "compile_graph", "compile_model", "configure_process", "load", "load_image", "load_plugin", "load_spec",
    "receptive_fields", "register_pass", "registered_passes", "run_passes", "save_model", "set_memory_limit", "verify",
]
