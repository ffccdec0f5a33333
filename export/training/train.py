"""Fine-tune an embedder on face identities (`lookalike train`): the ResNet101, or dlib's
face network ported from its published weights (``--architecture dlib-resnet``).

Why this loss: a cosine-softmax identity head (NormFace: L2-normalised
embeddings and class weights, logits scaled by ``scale``). It needs no pair or
triplet mining, which batches of 16 would starve, and it trains the embedding
for the angle between faces, which is what a Euclidean search over normalised
vectors ranks by. The head is dropped at export; the embedder keeps its
normalisation, so its output (2048-d, or 128-d for the face network) is what the
index stores. On a pretrained embedder the head starts where the embedder already
puts each person (the normalised mean of their embeddings: "imprinting"), so the
first steps refine what the network knows instead of undoing it to fit random
class directions.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from lookalike.export.checkpoint import EMBEDDER_LAYER, CosineHead
from lookalike.export.model import L2Normalize, build_embedder
from lookalike.export.records import publish_with_record
from lookalike.export.training.chips import cached_chips
from lookalike.server.evaluation.evaluate import leave_one_out_hit_at_1
from lookalike.server.index.gallery import GalleryImage, list_gallery
from lookalike.server.vision.imaging import ALIGNED, Crop, CropMode, ImageError, decode

# Share of the training people held out to report validation hit@1 each epoch.
VALIDATION_SHARE = 0.1


class TrainingError(ValueError):
    """The data cannot train an identity model; the message says why."""


ARCHITECTURES = ("resnet101", "dlib-resnet")
# What an unset setting means, per architecture: the ResNet101 trains its last two stages
# on centre crops from ImageNet weights; the face network all of itself, on its own chips.
DEFAULTS: dict[str, dict[str, object]] = {
    "resnet101": {
        "weights": "imagenet",
        "image_size": 112,
        "trainable_from": "conv4_block1_1_conv",
        "crop": Crop(CropMode.CENTER),
    },
    "dlib-resnet": {"weights": "dlib", "image_size": 150, "trainable_from": "conv1", "crop": None},
}


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    out: Path = Path("model.keras")
    architecture: str = "resnet101"
    weights: str | None = None  # DEFAULTS
    image_size: int | None = None
    epochs: int = 4
    batch_size: int = 16
    learning_rate: float = 1e-3
    trainable_from: str | None = None
    crop: Crop | None = None
    split: str = "train"
    max_images: int | None = None
    seed: int = 0
    scale: float = 16.0
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise TrainingError(f"--architecture must be one of {', '.join(ARCHITECTURES)}")
        for name, value in DEFAULTS[self.architecture].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.architecture == "dlib-resnet":
            from lookalike.export.dlib_resnet import INPUT_SIZE

            if self.image_size != INPUT_SIZE or self.crop not in (None, ALIGNED):
                raise TrainingError(
                    f"dlib-resnet takes {INPUT_SIZE} px aligned chips (--crop align) only"
                )
            object.__setattr__(self, "crop", ALIGNED)

    @property
    def checkpoints(self) -> Path:
        return self.out.with_name(self.out.name + ".checkpoints")

    def to_json(self) -> dict[str, object]:
        body = asdict(self)
        body.update(data=str(self.data), out=str(self.out), crop=self.crop.to_dict())
        return body


def build_base(config: TrainConfig) -> tuple[keras.Model, keras.Model]:
    """The embedder before normalisation, and the network whose layers may be frozen."""
    if config.architecture == "dlib-resnet":
        from lookalike.export.dlib_resnet import (
            build_dlib_resnet,
            dlib_weights_path,
            read_dlib_resnet,
        )

        base = build_dlib_resnet(read_dlib_resnet(dlib_weights_path(config.weights)))
        return base, base
    base = build_embedder(config.image_size, config.weights, config.seed)
    return base, base.layers[-1]


def build_training_model(config: TrainConfig, classes: int) -> keras.Model:
    """Augmentation, then the normalised embedder, then the identity head."""
    base, backbone = build_base(config)
    names = [layer.name for layer in backbone.layers]
    if config.trainable_from not in names:
        raise TrainingError(
            f"--trainable-from {config.trainable_from!r} is not a layer of {config.architecture}"
        )
    trainable = False
    for layer in backbone.layers:
        trainable = trainable or layer.name == config.trainable_from
        layer.trainable = trainable
    embedder = keras.Model(base.input, L2Normalize(name="l2")(base.output), name=EMBEDDER_LAYER)
    pixels = keras.Input((config.image_size, config.image_size, 3), name="pixels")
    x = keras.layers.RandomFlip("horizontal", seed=config.seed)(pixels)
    x = keras.layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=config.seed)(x)
    x = keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=config.seed)(x)
    x = keras.layers.RandomBrightness(0.15, value_range=(0, 255), seed=config.seed)(x)
    logits = CosineHead(classes, config.scale, name="identity")(embedder(x))
    model = keras.Model(pixels, logits, name="face_identity")
    model.compile(
        optimizer=keras.optimizers.Adamax(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def split_people(
    images: list[GalleryImage], seed: int, singletons: bool = False
) -> tuple[list, list]:
    """Training and validation images, split by person. People with one photo cannot be
    validated on, so they only train, and only when ``singletons`` (a class of one image
    teaches an identity loss nothing; a teacher's descriptor of it still teaches)."""
    counts = Counter(image.label for image in images)
    people = sorted(label for label, count in counts.items() if count >= 2)
    if len(people) < 2:
        raise TrainingError(
            f"need at least two people with two or more images each, found {len(people)}"
        )
    rng = np.random.default_rng(seed)
    held_out = set(
        rng.choice(people, max(1, round(len(people) * VALIDATION_SHARE)), replace=False).tolist()
    )
    minimum = 1 if singletons else 2
    train = [i for i in images if counts[i.label] >= minimum and i.label not in held_out]
    validation = [i for i in images if i.label in held_out]
    return train, validation


def training_people(
    data: Path, split: str, max_images: int | None, seed: int, singletons: bool = False
) -> tuple[list[GalleryImage], list[GalleryImage]]:
    """The images to train on and those of the people held out for validation, all
    checked to decode before the first step."""
    images = list_gallery(data, split)  # type: ignore[arg-type]
    if max_images:
        images = images[:max_images]
    train_images, validation = split_people(images, seed, singletons)
    check_readable(data, train_images + validation)
    return train_images, validation


def check_readable(root: Path, images: list[GalleryImage]) -> None:
    """Fail before the first epoch, not in the middle of one, on files that do not decode."""
    broken = []
    for image in images:
        try:
            decode((root / image.path).read_bytes())
        except (OSError, ImageError) as error:
            broken.append(f"{image.path}: {error}")
    if broken:
        listing = "\n  ".join(broken[:20])
        raise TrainingError(f"{len(broken)} images cannot be read:\n  {listing}")


class FaceBatches(keras.utils.PyDataset):
    """Shuffled batches of cached chips (``chips.py``) and their class numbers."""

    def __init__(
        self, chips: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.chips, self.labels, self.batch_size, self.seed = chips, labels, batch_size, seed
        self.order = np.arange(len(chips))
        self.epoch = 0
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.chips) / self.batch_size)

    def __getitem__(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.sort(self.order[batch * self.batch_size : (batch + 1) * self.batch_size])
        return self.chips[rows].astype(np.float32), self.labels[rows]

    def on_epoch_end(self) -> None:
        np.random.default_rng([self.seed, self.epoch]).shuffle(self.order)
        self.epoch += 1


def pixels_of(root: Path, images: list[GalleryImage], config: TrainConfig) -> np.ndarray:
    """The chips training sees: the served pixels, cut once and kept as uint8."""
    return cached_chips(
        root, images, config.crop, config.image_size, config.checkpoints, config.progress
    )


class ValidationHitAt1(keras.callbacks.Callback):
    """hit@1 of the embedder on held-out people, the figure the training is for."""

    def __init__(self, chips: np.ndarray, labels: np.ndarray, log_file: Path) -> None:
        super().__init__()
        self.pixels, self.labels, self.log_file = chips, labels, log_file
        self.started = time.time()

    def hit_at_1(self) -> float:
        embedder = self.model.get_layer(EMBEDDER_LAYER)
        features = np.asarray(
            embedder.predict(self.pixels, batch_size=32, verbose=0), dtype=np.float32
        )
        return leave_one_out_hit_at_1(features, self.labels)

    def _log(self, line: dict[str, object]) -> None:
        with self.log_file.open("a") as stream:
            stream.write(json.dumps(line) + "\n")

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.started = time.time()
        hit = self.hit_at_1()
        self._log(
            {"stage": "start", "epoch": 0, "time": time.time(), "minutes": 0.0, "val_hit_at_1": hit}
        )
        print(f"validation hit@1 before this run: {hit:.4f}", file=sys.stderr, flush=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        logs["val_hit_at_1"] = self.hit_at_1()
        self._log(
            {
                "epoch": epoch + 1,
                "time": time.time(),
                "minutes": (time.time() - self.started) / 60,
                **{k: float(v) for k, v in logs.items()},
            }
        )
        print(
            f"epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f}, "
            f"validation hit@1 {logs['val_hit_at_1']:.4f}",
            file=sys.stderr,
            flush=True,
        )


def imprint_head(model: keras.Model, chips: np.ndarray, labels: np.ndarray) -> None:
    """Each person's class direction set to the normalised mean of their embeddings."""
    embedder = model.get_layer(EMBEDDER_LAYER)
    embeddings = np.asarray(embedder.predict(chips.astype(np.float32), batch_size=64, verbose=0))
    head = model.get_layer("identity")
    centres = np.zeros(head.centres.shape, np.float32)
    np.add.at(centres.T, labels, embeddings)
    head.centres.assign(centres / np.maximum(np.linalg.norm(centres, axis=0), 1e-12))


def latest_checkpoint(folder: Path) -> tuple[Path, int] | None:
    found = sorted(folder.glob("epoch-*.keras"))
    return (found[-1], int(found[-1].stem.split("-")[1])) if found else None


def train(config: TrainConfig) -> Path:
    keras.utils.set_random_seed(config.seed)
    train_images, validation = training_people(
        config.data, config.split, config.max_images, config.seed
    )
    classes = {label: n for n, label in enumerate(sorted({i.label for i in train_images}))}
    config.checkpoints.mkdir(parents=True, exist_ok=True)
    (config.checkpoints / "config.json").write_text(json.dumps(config.to_json(), indent=2))
    print(
        f"training on {len(train_images)} images of {len(classes)} people, validating on "
        f"{len(validation)} images of {len({i.label for i in validation})} other people; "
        f"devices: {[d.name for d in _devices()]}",
        file=sys.stderr,
        flush=True,
    )

    chips = pixels_of(config.data, train_images + validation, config)
    train_chips, validation_chips = chips[: len(train_images)], chips[len(train_images) :]
    labels = np.array([classes[image.label] for image in train_images], dtype=np.int32)
    resumed = latest_checkpoint(config.checkpoints) if config.resume else None
    if resumed:
        if config.architecture == "dlib-resnet":
            import lookalike.export.dlib_resnet  # noqa: F401  (registers its layers)
        model, initial_epoch = keras.saving.load_model(resumed[0]), resumed[1]
        print(f"resuming from {resumed[0]} (epoch {initial_epoch})", file=sys.stderr)
    else:
        model, initial_epoch = build_training_model(config, len(classes)), 0
        if config.weights != "none":
            imprint_head(model, train_chips, labels)
    batches = FaceBatches(train_chips, labels, config.batch_size, config.seed)
    batches.epoch = initial_epoch
    model.fit(
        batches,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        callbacks=[
            ValidationHitAt1(
                validation_chips,
                np.array([i.label for i in validation]),
                config.checkpoints / "history.jsonl",
            ),
            keras.callbacks.ModelCheckpoint(str(config.checkpoints / "epoch-{epoch:03d}.keras")),
        ],
        verbose=1 if sys.stderr.isatty() else 2,
    )
    return publish_model(model, config.out, config.to_json())


def publish_model(model: keras.Model, out: Path, record: dict[str, object]) -> Path:
    """Publish the checkpoint ``out`` with its training record (export/records.py)."""
    return publish_with_record(out, record, lambda path: keras.saving.save_model(model, path))


def _devices() -> list:
    import tensorflow as tf

    return tf.config.list_logical_devices()
