"""Reading sigmoid from ONNX files: the Sigmoid node is one `sigmoid` layer. The ONNX
front end imports this module (`<package>.onnx_import`) before it reads a file."""
from graphconv.frontends.onnx import POINTWISE_LAYOUTS, Importer, converts


@converts("Sigmoid")
def sigmoid(imp: Importer, node) -> None:
    imp.add_layer(node, "sigmoid", [imp.tensor(node.input[0], POINTWISE_LAYOUTS)])
