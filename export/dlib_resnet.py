"""dlib's face descriptor network in Keras, built from its published weights.

``dlib_face_recognition_resnet_model_v1.dat`` (Davis King, public domain; shipped
in the face_recognition_models wheel) is the metric network of dlib's
``dnn_face_recognition_ex.cpp``: 150 px RGB chips, a 7x7/2 convolution, 3x3/2
max pooling, 13 residual units of two 3x3 convolutions (32, 64, 128 and 256
filters; the first unit of each wider stage halves the map, its shortcut
average-pooled), global average pooling and a 128-d fully connected layer
without bias. Every convolution is followed by an ``affine`` layer (batch
normalisation frozen into a per-channel scale and shift).

``read_dlib_resnet`` reads the file against that structure (``DLIB_RESNET``)
and refuses anything else whole; ``build_dlib_resnet`` makes the Keras model,
each affine folded into the convolution before it (the same function, one
layer fewer, so onnxruntime runs 27 plain convolutions). Two of dlib's
behaviours a port must copy exactly: convolutions and pools with a stride
other than 1 have no padding, and ``add_prev`` adds tensors of different
shapes where they overlap, the larger one's rest unchanged (the last
down-sampling unit adds a 3x3 block output to a 4x4 shortcut).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import keras
import numpy as np

from lookalike.export.dlib_format import DlibFormatError, DlibReader

WEIGHTS_NAME = "dlib_face_recognition_resnet_model_v1.dat"
WEIGHTS_LICENCE = "public domain (Davis King, dlib.net); dlib's own code is Boost-licensed"
INPUT_SIZE = 150
DESCRIPTOR_SIZE = 128


@dataclass(frozen=True)
class Spec:
    """One layer of dlib's template, as the file must hold it."""

    kind: str  # loss fc avg_pool max_pool relu add_prev skip tag affine con input
    filters: int = 0
    size: int = 0  # kernel or pool side; 0: the whole map
    stride: int = 1
    tag: int = 0  # for tag, skip and add_prev


def _block(filters: int, stride: int) -> list[Spec]:
    return [
        Spec("affine"),
        Spec("con", filters, 3, 1),
        Spec("relu"),
        Spec("affine"),
        Spec("con", filters, 3, stride),
    ]


def _unit(filters: int) -> list[Spec]:
    """``ares``: relu(block(x) + x)."""
    return [Spec("relu"), Spec("add_prev", tag=1), *_block(filters, 1), Spec("tag", tag=1)]


def _down_unit(filters: int) -> list[Spec]:
    """``ares_down``: relu(block_stride2(x) + avg_pool_2x2(x)), shapes added where they overlap."""
    return [
        Spec("relu"),
        Spec("add_prev", tag=2),
        Spec("avg_pool", size=2, stride=2),
        Spec("skip", tag=1),
        Spec("tag", tag=2),
        *_block(filters, 2),
        Spec("tag", tag=1),
    ]


# dlib's anet_type, outermost layer first, as it is written to the file.
DLIB_RESNET: tuple[Spec, ...] = (
    Spec("loss"),
    Spec("fc", DESCRIPTOR_SIZE),
    Spec("avg_pool", size=0),
    *_down_unit(256),
    *_unit(256),
    *_unit(256),
    *_down_unit(256),
    *_unit(128),
    *_unit(128),
    *_down_unit(128),
    *_unit(64),
    *_unit(64),
    *_unit(64),
    *_down_unit(64),
    *_unit(32),
    *_unit(32),
    *_unit(32),
    Spec("max_pool", size=3, stride=2),
    Spec("relu"),
    Spec("affine"),
    Spec("con", 32, 7, 2),
    Spec("input", size=INPUT_SIZE),
)


@dataclass
class Layer:
    """A layer as read: its spec and what the file gave it."""

    spec: Spec
    padding: int = 0
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    disabled: bool = False


def _layer_details(reader: DlibReader, spec: Spec) -> Layer:
    """One layer's own details; the checks name what differs from the template."""
    layer = Layer(spec)
    kind = spec.kind
    if kind == "con":
        version = reader.tag(("con_4", "con_5", "con_6"), "convolution")
        params = reader.tensor().ravel()
        filters, rows, cols = reader.integer(), reader.integer(), reader.integer()
        stride_y, stride_x = reader.integer(), reader.integer()
        pad_y, pad_x = reader.integer(), reader.integer()
        shape = reader.alias()
        reader.alias()  # the biases' shape: (1, filters)
        for _ in range(4):  # learning-rate and weight-decay multipliers
            reader.floating()
        use_bias = reader.boolean() if version in ("con_5", "con_6") else True
        if version == "con_6" and reader.boolean():
            raise reader.fail("a convolution with a fused relu, which dlib's face network has not")
        found = (filters, rows, cols, stride_y, stride_x)
        if found != (spec.filters, spec.size, spec.size, spec.stride, spec.stride):
            raise reader.fail(
                f"a convolution of (filters, rows, cols, strides) {found}, the template has "
                f"{(spec.filters, spec.size, spec.size, spec.stride, spec.stride)}"
            )
        if pad_y != pad_x or shape[0] != filters or shape[2:] != (rows, cols):
            raise reader.fail(f"a convolution with padding {pad_y},{pad_x} and filters {shape}")
        count = int(np.prod(shape))
        if params.size != count + (filters if use_bias else 0):
            raise reader.fail(f"{params.size} convolution parameters for filters {shape}")
        layer.padding = pad_y
        layer.weights["filters"] = params[:count].reshape(shape)
        layer.weights["bias"] = params[count:] if use_bias else np.zeros(filters, np.float32)
    elif kind == "affine":
        version = reader.tag(("affine_", "affine_2"), "affine layer")
        params = reader.tensor().ravel()
        gamma, beta = reader.alias(), reader.alias()
        reader.integer()  # mode: per channel (conv) or per unit (fc)
        layer.disabled = reader.boolean() if version == "affine_2" else False
        size = int(np.prod(gamma))
        if gamma != beta or params.size != 2 * size:
            raise reader.fail(f"an affine layer of {params.size} parameters, shapes {gamma}")
        layer.weights["gamma"], layer.weights["beta"] = params[:size], params[size:]
    elif kind == "relu":
        if reader.tag(("relu_", "relu_2"), "relu") == "relu_2":
            layer.disabled = reader.boolean()
    elif kind in ("max_pool", "avg_pool"):
        reader.tag((f"{kind}_2",), kind)
        found = tuple(reader.integer() for _ in range(6))
        expected = (spec.size, spec.size, spec.stride, spec.stride, 0, 0)
        if found != expected:
            raise reader.fail(f"{kind} (rows, cols, strides, padding) {found}, not {expected}")
    elif kind == "add_prev":
        reader.tag(("add_prev_",), "add_prev")
    elif kind == "fc":
        version = reader.tag(("fc_2", "fc_3"), "fully connected layer")
        outputs, inputs = reader.integer(), reader.integer()
        params = reader.tensor().ravel()
        reader.alias(), reader.alias()
        bias_mode = reader.integer()
        for _ in range(4):
            reader.floating()
        use_bias = reader.boolean() if version == "fc_3" else True
        use_bias = use_bias and bias_mode == 0  # FC_HAS_BIAS is 0, FC_NO_BIAS 1
        if outputs != spec.filters or params.size != (inputs + use_bias) * outputs:
            raise reader.fail(f"a fully connected layer {inputs} -> {outputs}")
        matrix = params.reshape(inputs + use_bias, outputs)
        layer.weights["kernel"] = matrix[:inputs]
        if use_bias:
            layer.weights["bias"] = matrix[inputs]
    elif kind == "input":
        reader.tag(("input_rgb_image_sized",), "input layer")
        layer.weights["means"] = np.array([reader.floating() for _ in range(3)], np.float32)
        size = (reader.integer(), reader.integer())
        if size != (spec.size, spec.size):
            raise reader.fail(f"an input of {size} pixels, the template has {spec.size}")
    else:  # pragma: no cover - the template has no other kinds
        raise AssertionError(kind)
    return layer


def _trailing_state(reader: DlibReader, version: int, on_input: bool) -> None:
    """What dlib's add_layer keeps after a layer's details: flags and cached tensors."""
    for _ in range(3):
        reader.boolean()
    reader.tensor(), reader.tensor()  # x_grad, cached_output
    if on_input:
        reader.tensor()  # grad_final
        if version >= 3:
            reader.integer()  # sample expansion factor
    elif version >= 2:
        reader.tensor()  # params_grad


def _read(reader: DlibReader, specs: tuple[Spec, ...], at: int, layers: list[Layer]) -> None:
    """Layer ``at`` of ``specs`` and all below it, appended to ``layers`` input first."""
    spec = specs[at]
    if spec.kind == "loss":
        reader.version((1,), "loss layer")
        if reader.tag(("loss_metric_", "loss_metric_2"), "loss layer") == "loss_metric_2":
            reader.floating(), reader.floating()  # margin, distance threshold
        _read(reader, specs, at + 1, layers)
    elif spec.kind in ("tag", "skip"):
        reader.version((1,), f"{spec.kind} layer")
        _read(reader, specs, at + 1, layers)
        layers.append(Layer(spec))
    elif specs[at + 1].kind == "input":
        version = reader.version((2, 3), "first layer")
        layers.append(_layer_details(reader, specs[at + 1]))
        layers.append(_layer_details(reader, spec))
        _trailing_state(reader, version, on_input=True)
    else:
        version = reader.version((1, 2), f"{spec.kind} layer")
        _read(reader, specs, at + 1, layers)
        layers.append(_layer_details(reader, spec))
        _trailing_state(reader, version, on_input=False)


def read_dlib_resnet(path: Path) -> list[Layer]:
    """Every layer of the file, input first; DlibFormatError unless it is all there."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise DlibFormatError(f"cannot read dlib weights {path}: {error.strerror}") from None
    if data[:3] == b"BZh":
        raise DlibFormatError(f"{path} is bzip2-compressed: decompress it first (bunzip2)")
    reader = DlibReader(data, name=str(path))
    layers: list[Layer] = []
    try:
        _read(reader, DLIB_RESNET, 0, layers)
    except DlibFormatError as error:
        raise DlibFormatError(
            f"{error}; not dlib's face recognition ResNet ({WEIGHTS_NAME}), or damaged"
        ) from None
    if not reader.at_end():
        raise DlibFormatError(
            f"{path}: {len(data) - reader.offset} bytes follow the network; "
            f"not dlib's face recognition ResNet ({WEIGHTS_NAME}), or damaged"
        )
    return layers


@keras.saving.register_keras_serializable(package="lookalike")
class DlibInput(keras.layers.Layer):
    """RGB 0..255 to what dlib's input layer feeds its network: (pixel - mean) / 256."""

    def __init__(self, means=(122.782, 117.001, 104.298), **kwargs) -> None:
        super().__init__(**kwargs)
        self.means = tuple(float(m) for m in means)

    def call(self, pixels):
        means = keras.ops.convert_to_tensor(self.means, dtype=pixels.dtype)
        return (pixels - means) / 256.0

    def get_config(self) -> dict:
        return {**super().get_config(), "means": self.means}


@keras.saving.register_keras_serializable(package="lookalike")
class OverlapAdd(keras.layers.Layer):
    """dlib's add_prev: the sum where two maps overlap (top-left aligned), each one's
    rest as it is; so the output has the larger rows, columns and channels."""

    def call(self, inputs):
        first, second = inputs
        shape = [max(a, b) for a, b in zip(first.shape[1:], second.shape[1:], strict=True)]

        def grown(tensor):
            pads = [[0, 0]] + [[0, s - t] for s, t in zip(shape, tensor.shape[1:], strict=True)]
            return keras.ops.pad(tensor, pads) if any(p[1] for p in pads) else tensor

        return grown(first) + grown(second)

    def compute_output_shape(self, shapes):
        first, second = shapes
        return (first[0], *(max(a, b) for a, b in zip(first[1:], second[1:], strict=True)))


def _folded(layers: list[Layer]) -> list[Layer]:
    """Each affine folded into the convolution before it; disabled layers dropped."""
    out: list[Layer] = []
    for layer in layers:
        if layer.disabled:
            continue
        if layer.spec.kind == "affine":
            if not out or out[-1].spec.kind != "con":
                raise DlibFormatError("an affine layer that follows no convolution")
            con = out[-1]
            gamma = layer.weights["gamma"].astype(np.float64)
            beta = layer.weights["beta"].astype(np.float64)
            filters = con.weights["filters"] * gamma[:, None, None, None]
            bias = con.weights["bias"] * gamma + beta
            folded = {"filters": filters.astype(np.float32), "bias": bias.astype(np.float32)}
            out[-1] = replace(con, weights=folded)  # the layers read stay as they were
            continue
        out.append(layer)
    return out


def build_dlib_resnet(layers: list[Layer]) -> keras.Model:
    """(N, 150, 150, 3) RGB 0..255 -> (N, 128) descriptors, as dlib computes them."""
    pixels = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), dtype="float32", name="pixels")
    current = pixels
    tags: dict[int, keras.KerasTensor] = {}
    counts: dict[str, int] = {}

    def name(kind: str) -> str:
        counts[kind] = counts.get(kind, 0) + 1
        return f"{kind}{counts[kind]}"

    weighted: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
    for layer in _folded(layers):
        spec = layer.spec
        if spec.kind == "input":
            current = DlibInput(tuple(layer.weights["means"]), name="dlib_input")(current)
        elif spec.kind == "con":
            if layer.padding and (spec.stride != 1 or layer.padding != spec.size // 2):
                current = keras.layers.ZeroPadding2D(layer.padding)(current)
            conv = keras.layers.Conv2D(
                spec.filters,
                spec.size,
                strides=spec.stride,
                padding="same" if layer.padding and spec.stride == 1 else "valid",
                name=name("conv"),
            )
            current = conv(current)
            kernel = layer.weights["filters"].transpose(2, 3, 1, 0)  # (rows, cols, in, out)
            weighted.append((conv, [kernel, layer.weights["bias"]]))
        elif spec.kind == "relu":
            current = keras.layers.ReLU(name=name("relu"))(current)
        elif spec.kind == "max_pool":
            current = keras.layers.MaxPooling2D(spec.size, spec.stride, name=name("max_pool"))(
                current
            )
        elif spec.kind == "avg_pool" and spec.size == 0:
            current = keras.layers.GlobalAveragePooling2D(name="avg_pool_all")(current)
        elif spec.kind == "avg_pool":
            current = keras.layers.AveragePooling2D(spec.size, spec.stride, name=name("avg_pool"))(
                current
            )
        elif spec.kind == "tag":
            tags[spec.tag] = current
        elif spec.kind == "skip":
            current = tags[spec.tag]
        elif spec.kind == "add_prev":
            current = OverlapAdd(name=name("add"))([current, tags[spec.tag]])
        elif spec.kind == "fc":
            has_bias = "bias" in layer.weights
            dense = keras.layers.Dense(spec.filters, use_bias=has_bias, name="descriptor")
            current = dense(current)
            values = [layer.weights["kernel"]] + ([layer.weights["bias"]] if has_bias else [])
            weighted.append((dense, values))
    model = keras.Model(pixels, current, name="dlib_resnet")
    for keras_layer, values in weighted:
        keras_layer.set_weights(values)
    return model


def dlib_weights_path(weights: str | None) -> Path:
    """The .dat file: a path, or None / "dlib" for the face_recognition_models copy."""
    if weights in (None, "dlib"):
        from lookalike.server.vision.align import model_file

        return model_file(WEIGHTS_NAME)
    return Path(weights)


class PortedTeacher:
    """The teacher ``lookalike train --teacher dlib`` learns from: dlib's network as ported
    here, run by Keras in batches (several times dlib's own one-chip-at-a-time call on
    this CPU), with dlib's identity (``teacher_info``) so descriptor caches carry over."""

    provider = "Keras (dlib's network, ported)"
    providers = [provider]

    def __init__(self, mirror: bool = False, batch_size: int = 64) -> None:
        from lookalike.export.model import mirrored
        from lookalike.server.vision.teacher import teacher_info

        self.info = teacher_info(mirror)
        self.network = build_dlib_resnet(read_dlib_resnet(self.info.path))
        if mirror:
            self.network = mirrored(self.network)
        self.batch_size = batch_size

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 150, 150, 3) RGB 0..255 chips to (n, 128) descriptors (dlib takes uint8
        chips, so the pixels are rounded as its call rounds them)."""
        chips = np.clip(np.round(pixels), 0, 255).astype(np.float32)
        if not len(chips):
            return np.empty((0, DESCRIPTOR_SIZE), np.float32)
        return np.ascontiguousarray(
            np.concatenate(
                [
                    np.asarray(self.network.predict_on_batch(chips[i : i + self.batch_size]))
                    for i in range(0, len(chips), self.batch_size)
                ]
            ),
            dtype=np.float32,
        )
