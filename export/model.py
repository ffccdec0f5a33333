"""The Keras face embedder: ResNet101 without its classifier, preprocessing inside the graph."""

from __future__ import annotations

import keras

from lookalike.export.checkpoint import EMBEDDER_LAYER

EMBEDDING_SIZE = 2048
# keras.applications.resnet.preprocess_input ("caffe" mode): BGR order, ImageNet means.
IMAGENET_BGR_MEANS = (103.939, 116.779, 123.68)


class ExportError(RuntimeError):
    """The model cannot be built or exported; the message says what to do instead."""


@keras.saving.register_keras_serializable(package="lookalike")
class ResNetPreprocess(keras.layers.Layer):
    """RGB 0..255 to what ResNet101's ImageNet weights expect, so callers cannot get it wrong."""

    def call(self, pixels):
        bgr = keras.ops.flip(pixels, axis=-1)
        return bgr - keras.ops.convert_to_tensor(IMAGENET_BGR_MEANS, dtype=pixels.dtype)


def build_embedder(
    image_size: int = 224, weights: str = "imagenet", seed: int = 0, pooling: str | None = "avg"
) -> keras.Model:
    """pixels (N, S, S, 3) float32 RGB 0..255 -> (N, 2048) average-pooled ResNet101 features.

    ``weights``: "imagenet" (Keras' own download), "none" (random, seeded) or a
    path to a ResNet101 no-top weights file. ``pooling=None`` keeps the last feature
    map, (N, S/32, S/32, 2048), for a head that needs where things are.
    """
    keras.utils.set_random_seed(seed)
    pixels = keras.Input((image_size, image_size, 3), dtype="float32", name="pixels")
    try:
        backbone = keras.applications.ResNet101(
            include_top=False,
            pooling=pooling,
            weights=None if weights == "none" else weights,
            input_shape=(image_size, image_size, 3),
        )
    except Exception as error:  # Keras raises bare Exception for a failed download
        if weights == "imagenet":
            raise ExportError(
                f"cannot download the ImageNet weights of ResNet101 ({error}); "
                "with no network, pass --weights none (random) or --weights PATH "
                "(a ResNet101 no-top .h5 weights file)"
            ) from None
        raise ExportError(f"cannot load weights {weights!r}: {error}") from None
    embedding = backbone(ResNetPreprocess(name="preprocess")(pixels))
    return keras.Model(pixels, embedding, name="resnet101_embedder")


@keras.saving.register_keras_serializable(package="lookalike")
class CentredPixels(keras.layers.Layer):
    """Flattened pixels minus the image's own mean, L2-normalised (so nearest neighbours by
    Euclidean distance rank by correlation of pixels, blind to brightness)."""

    def call(self, flat):
        centred = flat - keras.ops.mean(flat, axis=1, keepdims=True)
        norm = keras.ops.sqrt(keras.ops.sum(centred * centred, axis=1, keepdims=True))
        return centred / keras.ops.maximum(norm, 1e-6)


@keras.saving.register_keras_serializable(package="lookalike")
class L2Normalize(keras.layers.Layer):
    """Each embedding scaled to unit length: the index ranks by Euclidean distance, which
    on unit vectors ranks by the angle between faces."""

    def call(self, x):
        return x / keras.ops.maximum(keras.ops.norm(x, axis=-1, keepdims=True), 1e-12)


def build_student(
    image_size: int,
    embedding_size: int,
    weights: str,
    seed: int = 0,
    pooling: str = "avg",
    features_from: str | None = None,
) -> keras.Model:
    """pixels -> ResNet101 (preprocessing in graph) up to ``features_from`` (default: all of
    it) -> ["avg" pool | "flatten"] -> dense head -> L2: the embedder distillation trains,
    built here so that export can rebuild it at another input size."""
    whole = features_from is None and pooling == "avg"  # the layout of older checkpoints
    base = build_embedder(image_size, weights, seed, "avg" if whole else None)
    features = base.output
    if features_from is not None:
        backbone = base.layers[-1]
        names = [layer.name for layer in backbone.layers]
        if features_from not in names:
            raise ExportError(f"--features-from {features_from!r} is not a ResNet101 layer")
        read = keras.Model(
            backbone.input, backbone.get_layer(features_from).output, name="resnet101"
        )
        features = read(base.get_layer("preprocess").output)
    if not whole:
        pool = keras.layers.Flatten if pooling == "flatten" else keras.layers.GlobalAveragePooling2D
        features = pool(name=pooling)(features)
    head = keras.layers.Dense(embedding_size, name="head")(features)
    return keras.Model(base.input, L2Normalize(name="l2")(head), name=EMBEDDER_LAYER)


def build_pixels_embedder(image_size: int) -> keras.Model:
    """The no-network baseline: (N, S, S, 3) pixels -> (N, S*S*3) centred unit vectors."""
    pixels = keras.Input((image_size, image_size, 3), dtype="float32", name="pixels")
    flat = keras.layers.Flatten(name="flatten")(pixels)
    return keras.Model(pixels, CentredPixels(name="centred_pixels")(flat), name="pixels")


def mirrored(embedder: keras.Model) -> keras.Model:
    """The mean embedding of each image and of its mirror image, in one graph: both go
    through ``embedder`` in one batch. Faces are near-symmetric, so the mean keeps who it
    is and averages away some of the pose and light of one side."""
    size = embedder.input_shape[1]
    pixels = keras.Input((size, size, 3), dtype="float32", name="pixels")
    flipped = keras.layers.Lambda(lambda x: keras.ops.flip(x, axis=2), name="mirror")(pixels)
    both = keras.layers.Concatenate(axis=0, name="with_mirror")([pixels, flipped])
    embeddings = embedder(both)
    mean = keras.layers.Lambda(
        lambda e: (e[: keras.ops.shape(e)[0] // 2] + e[keras.ops.shape(e)[0] // 2 :]) / 2,
        name="mirror_mean",
    )(embeddings)
    return keras.Model(pixels, mean, name=f"{embedder.name}_mirror")
