"""graphconv's built-in passes, written against the public API in `graphconv.pass_manager`
exactly as a user's plugin would be. Importing this package registers them all.

This folder is installed as `graphconv.passes` (see setup.py), never as a top-level
`passes` package: a `passes.py` or `passes/` in the user's working folder cannot
shadow it."""
from . import (  # noqa: F401
    channels_last,
    conv_to_fc,
    dead_node_elimination,
    fc_to_conv,
    fold_batchnorm,
    fold_pad,
    fuse_batchnorm_activation,
    fuse_concat_batchnorm,
    fuse_conv_activation,
    fuse_conv_add,
    global_pool_to_window,
    output_stride,
    receptive_field,
    remove_dropout,
    remove_flatten,
    shape_inference,
)
