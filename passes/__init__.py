"""graphconv's built-in passes, written against the public API in `graphconv.pass_manager`
exactly as a user's plugin would be. Importing this package registers them all."""
from passes import (  # noqa: F401
    conv_to_fc,
    dead_node_elimination,
    fc_to_conv,
    fuse_conv_relu,
    output_stride,
    receptive_field,
    remove_dropout,
    shape_inference,
)
