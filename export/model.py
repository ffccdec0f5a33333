"""The Keras face embedder: ResNet101 without its classifier, preprocessing inside the graph."""

from __future__ import annotations

import keras

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
