"""Make the Keras fixtures the ONNX import tests read: two tiny classifiers built the way
Keras applications are (MobileNet's and EfficientNet's padding), converted by tf2onnx.

    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu tf2onnx tf_keras onnxruntime
    /tmp/tfvenv/bin/python tests/data/make_keras_fixtures.py     # writes tests/data/keras_*.onnx

Made with Python 3.11, tensorflow-cpu 2.21.0, tf_keras 2.21.0, tf2onnx 1.17.0, onnx 1.23.2,
onnxruntime 1.32.0, protobuf 7.36.2 (each file's doc string names TensorFlow's and
tf2onnx's versions too). Before writing a file the script checks it in onnxruntime
against the Keras model itself.

Not run by the tests (TensorFlow is not a test dependency): the .onnx files it wrote are
committed beside it, with the versions that made them in each file's doc string.
The TF1 one is a bilinear resize with asymmetric coordinates, TF1's default. The three
before it are Keras layers tf2onnx writes on the channels-last map (caffe-style
RGB -> BGR and mean inside the model, LayerNormalization, Dense on a 4-D map, a
BatchNormalization between Flatten and Dense, ConvNeXt's LayerNormalization with
epsilon 1e-6), with tf2onnx's default NHWC input.
Keras' padding="same" with stride 2 on an even size pads only the bottom and right, and
ZeroPadding2D(((0, 1), (0, 1))) before a "valid" stride-2 depthwise conv is MobileNet's
and EfficientNet's way to write it; tf2onnx turns these into Conv/MaxPool pads like
[0, 0, 1, 1] and Pad nodes. The inputs are converted to NCHW (`inputs_as_nchw`), the
layout graphconv reads, and the MobileNet-like model is written once more as tf2onnx
writes it by default, an NHWC input and a Transpose to NCHW (`_nhwc.onnx`), which
graphconv reads as NCHW too. Weights are seeded, the BatchNormalization statistics made
non-trivial, so the files are the same every run (up to TensorFlow's own changes).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf2onnx converts tf.keras (Keras 2) models
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

keras = tf.keras
layers = keras.layers
HERE = Path(__file__).resolve().parent
CROP = 32


def mobilenet_like() -> keras.Model:
    """MobileNet's stem and blocks: a stride-2 'same' conv, ReLU6, depthwise separable
    convs, ZeroPadding2D(((0, 1), (0, 1))) before a stride-2 'valid' depthwise conv, a
    stride-2 'same' max pool, global pooling, dense, softmax."""
    x = inputs = keras.Input((CROP, CROP, 3), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="conv1")(x)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.ReLU(6.0, name="conv1_relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="conv_dw_1")(x)
    x = layers.BatchNormalization(name="conv_dw_1_bn")(x)
    x = layers.ReLU(6.0, name="conv_dw_1_relu")(x)
    x = layers.Conv2D(12, 1, use_bias=False, name="conv_pw_1")(x)
    x = layers.ReLU(6.0, name="conv_pw_1_relu")(x)
    x = layers.ZeroPadding2D(((0, 1), (0, 1)), name="conv_pad_2")(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="valid", name="conv_dw_2")(x)
    x = layers.ReLU(6.0, name="conv_dw_2_relu")(x)
    x = layers.Conv2D(16, 1, name="conv_pw_2")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = layers.Dense(5, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="mobilenet_like")


def efficientnet_like() -> keras.Model:
    """EfficientNet's stem and a block without squeeze-and-excitation: ZeroPadding2D of
    the correct_pad kind before a stride-2 'valid' conv, swish, a 5x5 stride-2 'same'
    depthwise conv, a 'same' conv, dropout, dense, softmax."""
    x = inputs = keras.Input((CROP, CROP, 3), name="image")
    x = layers.ZeroPadding2D(((0, 1), (0, 1)), name="stem_conv_pad")(x)
    x = layers.Conv2D(8, 3, strides=2, padding="valid", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("swish", name="stem_activation")(x)
    x = layers.DepthwiseConv2D(5, strides=2, padding="same", use_bias=False, name="block1_dwconv")(x)
    x = layers.BatchNormalization(name="block1_bn")(x)
    x = layers.Activation("swish", name="block1_activation")(x)
    x = layers.ZeroPadding2D(1, name="block2_pad")(x)
    x = layers.Conv2D(12, 3, padding="valid", name="block2_conv")(x)
    x = layers.Conv2D(12, 3, strides=2, padding="same", name="top_conv")(x)
    x = layers.Activation("swish", name="top_activation")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(0.2, name="top_dropout")(x)
    x = layers.Dense(4, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="efficientnet_like")


def channels_last_blocks() -> keras.Model:
    """Layers tf2onnx writes on the channels-last map itself: caffe-style preprocessing
    inside the model (x[..., ::-1], RGB to BGR, then a mean per channel off: a Slice of
    step -1 on the NHWC input), LayerNormalization (a Reshape to (1, N*H*W, C, 1), a
    BatchNormalization and the Reshape back) and a Dense on a 4-D map (a Tensordot: a
    Reshape to (N*H*W, C), a MatMul and the Reshape back)."""
    mean = tf.constant([103.939, 116.779, 123.68])
    x = inputs = keras.Input((CROP, CROP, 3), name="image")
    x = layers.Lambda(lambda image: image[..., ::-1] - mean, name="caffe_preprocess")(x)
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(x)
    x = layers.LayerNormalization(name="conv1_ln")(x)
    x = layers.Dense(6, activation="relu", name="pointwise_dense")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = layers.Dense(4, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="channels_last_blocks")


def flatten_batchnorm_dense() -> keras.Model:
    """A BatchNormalization between Flatten and Dense, on features in Keras' (H, W, C)
    order (tf2onnx writes it as a Mul and an Add of one value per feature), and another
    after the Dense."""
    x = inputs = keras.Input((CROP, CROP, 3), name="image")
    x = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(4, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.BatchNormalization(name="flatten_bn")(x)
    x = layers.Dense(8, name="fc1")(x)
    x = layers.BatchNormalization(name="fc1_bn")(x)
    x = layers.ReLU(name="fc1_relu")(x)
    x = layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="flatten_batchnorm_dense")


def moments_layer_norms() -> keras.Model:
    """ConvNeXt's LayerNormalization(epsilon=1e-6): below 1.001e-5 TensorFlow does not use
    its fused kernel, and tf2onnx writes the moments out (ReduceMean, the squared
    difference, Sqrt, Reciprocal, gamma, beta - mean * inv; the mean maybe through a
    Reshape at the crop's size); with and without center and scale, on the map and on
    the pooled features."""
    x = inputs = keras.Input((CROP, CROP, 3), name="image")
    x = layers.Conv2D(16, 4, strides=4, name="stem")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="stem_ln")(x)
    y = layers.DepthwiseConv2D(7, padding="same", name="block_dwconv")(x)
    y = layers.LayerNormalization(epsilon=1e-6, center=False, name="block_ln")(y)
    y = layers.Dense(32, activation="relu", name="block_pw1")(y)
    y = layers.Dense(16, name="block_pw2")(y)
    x = layers.Add(name="block_add")([x, y])
    x = layers.LayerNormalization(epsilon=1e-6, scale=False, name="down_ln")(x)
    x = layers.Conv2D(24, 2, strides=2, name="down_conv")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="head_ln")(x)
    x = layers.Dense(4, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="moments_layer_norms")


def tf1_resize_bilinear() -> keras.Model:
    """A feature-pyramid merge as TF1 code writes it: tf.compat.v1.image.resize_bilinear
    (align_corners=False without half-pixel centres: ONNX's asymmetric linear Resize) of
    a stride-4 map onto the stride-2 one, added, then a classifier's head."""
    def enlarge(t):
        return tf.compat.v1.image.resize_bilinear(t, (CROP // 2, CROP // 2), align_corners=False,
                                                   half_pixel_centers=False)

    x = inputs = keras.Input((CROP, CROP, 3), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(x)
    low = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = layers.Add(name="merge")([x, layers.Lambda(enlarge, name="resize")(low)])
    x = layers.Conv2D(12, 3, strides=2, padding="same", name="head")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(4, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="tf1_resize_bilinear")


def seeded(model: keras.Model, seed: int) -> keras.Model:
    """Every weight drawn from one seed; batch norms given statistics that do something."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        arrays = layer.get_weights()
        if not arrays:
            continue
        if isinstance(layer, layers.BatchNormalization):
            c = arrays[0].shape[0]
            arrays = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.2, c), rng.uniform(0.5, 1.5, c)]
        else:
            arrays = [rng.normal(0, 0.4, a.shape) for a in arrays]
        layer.set_weights([a.astype(np.float32) for a in arrays])
    return model


def convert(model: keras.Model, path: Path, nchw: bool = True) -> None:
    """tf2onnx's conversion, written to `path` once onnxruntime on it gives Keras' output:
    with an NCHW input (`inputs_as_nchw`), or as tf2onnx writes it by default, an NHWC
    input that a Transpose turns to NCHW."""
    spec = (tf.TensorSpec((None, CROP, CROP, 3), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=13,
                                          inputs_as_nchw=["image"] if nchw else None)
    layout = f"NCHW 1x3x{CROP}x{CROP}" if nchw else f"NHWC 1x{CROP}x{CROP}x3"
    proto.doc_string = (f"{model.name}: made by tests/data/make_keras_fixtures.py with TensorFlow {tf.__version__}, "
                        f"tf2onnx {tf2onnx.__version__}; seeded weights, input {layout}")
    check_against_keras(model, proto, nchw)
    path.write_bytes(proto.SerializeToString())
    print(f"{path.name}: {path.stat().st_size} bytes, ops {sorted({n.op_type for n in proto.graph.node})}")


def check_against_keras(model: keras.Model, proto, nchw: bool) -> None:
    """The ONNX file in onnxruntime against the Keras model (NHWC) on random images."""
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((4, CROP, CROP, 3)).astype(np.float32)
    want = model(x, training=False).numpy()
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.transpose(0, 3, 1, 2).copy() if nchw else x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"{model.name}: tf2onnx changed the numbers")


def main() -> int:
    keras.utils.set_random_seed(0)
    mobilenet = seeded(mobilenet_like(), 1)
    convert(mobilenet, HERE / "keras_mobilenet_like.onnx")
    convert(mobilenet, HERE / "keras_mobilenet_like_nhwc.onnx", nchw=False)
    convert(seeded(efficientnet_like(), 2), HERE / "keras_efficientnet_like.onnx")
    convert(seeded(channels_last_blocks(), 3), HERE / "keras_channels_last_blocks.onnx", nchw=False)
    convert(seeded(flatten_batchnorm_dense(), 4), HERE / "keras_flatten_batchnorm_dense.onnx", nchw=False)
    convert(seeded(moments_layer_norms(), 5), HERE / "keras_moments_layer_norms.onnx", nchw=False)
    convert(seeded(tf1_resize_bilinear(), 6), HERE / "keras_tf1_resize_bilinear.onnx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
