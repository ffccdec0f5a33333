"""Teach the ResNet101 embedder to see faces as a pretrained face model does.

`lookalike train DATA --teacher dlib`: the student (ResNet101 without its top,
a dense head, L2 normalisation) sees faces aligned by ``--crop align`` and
learns to place them as dlib's face descriptor places the same faces, with the
losses of ``losses.py`` (which take out the descriptors' common direction).

Batches hold pairs of photos of the same person plus random others, so the
relational loss always has near neighbours to match. Teacher descriptors are
computed once per image content and kept in an index folder beside the
checkpoints (resumable like any index build); aligned chips are cached too.
Training is resumable from its last checkpoint (weights, optimiser state,
images seen, training time).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from lookalike.common.files import atomic_path
from lookalike.export.dlib_resnet import PortedTeacher
from lookalike.export.model import build_student
from lookalike.export.training.augment import TEACHER_SIZE, augmented_pairs
from lookalike.export.training.chips import cached_chips
from lookalike.export.training.losses import (
    BATCHNORMS,
    FITS,
    LOSSES,
    POOLINGS,
    BatchNorm,
    Fit,
    Loss,
    Pooling,
    Whitening,
    relational_loss,
    whitened_loss,
)
from lookalike.export.training.ridge import ridge_head
from lookalike.export.training.train import TrainingError, publish_model, training_people
from lookalike.server.evaluation.evaluate import leave_one_out_hit_at_1
from lookalike.server.index.build import build_index
from lookalike.server.index.gallery import GalleryImage
from lookalike.server.index.store import GalleryIndex
from lookalike.server.vision.imaging import ALIGNED, Crop
from lookalike.server.vision.teacher import TEACHERS

# BatchNorm statistics must follow the weights within hundreds of steps, not thousands.
BATCHNORM_MOMENTUM = 0.9


@dataclass(frozen=True)
class DistillConfig:
    data: Path
    out: Path = Path("student.keras")
    teacher: str = "dlib"
    weights: str = "imagenet"
    image_size: int = 64
    embedding_size: int = 128
    loss: Loss = "both"
    temperature: float = 0.1  # of the relational loss' softmax over cosines
    batch_size: int = 32
    pairs_share: float = 0.75  # of each batch: pairs of photos of one person
    learning_rate: float = 1e-3
    # first ResNet101 layer trained, or "head": only the dense head (the fastest recipe that
    # learns, see docs/RESULTS.md); None: every layer, each step through the whole network
    trainable_from: str | None = "head"
    batchnorm: BatchNorm = "frozen"
    # the ResNet101 layer whose output the head reads; None: its last. Early layers won on
    # held-out people while the later ones are untrained (docs/RESULTS.md, "which layer")
    features_from: str | None = "conv2_block3_out"
    pooling: Pooling = "flatten"
    # what the student sees; the teacher always describes the aligned face
    crop: Crop = ALIGNED
    fit: Fit = "ridge"
    # extra jittered copies of each training image, the teacher describing each (ridge fit)
    augment: int = 0
    # gradient steps on fresh augmentations described by the teacher in the graph
    fresh: bool = False
    mixed_precision: bool = False  # float16 compute for the fresh steps (GPUs)
    ridge_penalty: float = 0.3  # times the mean squared norm of a centred feature row
    minutes: float | None = None  # training time budget (evaluations not counted)
    steps: int | None = None  # or a number of optimiser steps
    eval_every_minutes: float = 10.0
    split: str = "train"
    max_images: int | None = None
    seed: int = 0
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise TrainingError(f"--fit must be one of {', '.join(FITS)}")
        if self.fit == "gradient" and self.minutes is None and self.steps is None:
            raise TrainingError("give a budget: --minutes or --steps")
        if self.fit == "ridge" and self.trainable_from != "head":
            raise TrainingError("--fit ridge fits the head alone: use --trainable-from head")
        if self.ridge_penalty <= 0:
            raise TrainingError("--ridge-penalty must be positive")
        if self.loss not in LOSSES:
            raise TrainingError(f"--loss must be one of {', '.join(LOSSES)}")
        if self.pooling not in POOLINGS:
            raise TrainingError(f"--pooling must be one of {', '.join(POOLINGS)}")
        if self.batchnorm not in BATCHNORMS:
            raise TrainingError(f"--batchnorm must be one of {', '.join(BATCHNORMS)}")
        if self.teacher not in TEACHERS:
            raise TrainingError(f"--teacher must be one of {', '.join(TEACHERS)}")
        if self.augment < 0:
            raise TrainingError("--augment must be 0 or more")
        if self.augment and (self.fit != "ridge" or self.trainable_from != "head"):
            raise TrainingError("--augment adds rows to the ridge fit: use it with --fit ridge")
        if self.mixed_precision and not self.fresh:
            raise TrainingError("--mixed-precision is for the --fresh gradient steps")
        if self.batch_size < 4:
            raise TrainingError("--batch-size must be at least 4")

    @property
    def checkpoints(self) -> Path:
        return self.out.with_name(self.out.name + ".checkpoints")

    def to_json(self) -> dict[str, object]:
        return {
            **asdict(self),
            "data": str(self.data),
            "out": str(self.out),
            "crop": self.crop.to_dict(),
        }


# --- what the student learns from -------------------------------------------------------


def teacher_descriptors(config: DistillConfig, images: list[GalleryImage]) -> np.ndarray:
    """The teacher's descriptor of each image, computed once per content and kept in an
    index folder (a killed run resumes it); rows in the order of ``images``."""
    teacher = PortedTeacher(mirror=config.teacher == "dlib-mirror")
    folder = config.checkpoints / f"teacher-{config.teacher}"
    if not (folder / "manifest.json").is_file():
        print(f"computing {config.teacher} descriptors (once)...", file=sys.stderr, flush=True)
        build_index(
            config.data,
            teacher,
            folder,
            ALIGNED,
            batch_size=16,
            progress=config.progress,
            split=config.split,  # type: ignore[arg-type]
            resume=True,
        )
    index = GalleryIndex.open(folder)
    index.check_model(teacher.info)
    row_of = {}
    for row, item in enumerate(index.manifest.items):
        for path in (item.path, *item.also):
            row_of[path] = row
    missing = [image.path for image in images if image.path not in row_of]
    if missing:
        raise TrainingError(f"{len(missing)} images have no teacher descriptor, e.g. {missing[0]}")
    return np.asarray(index.features)[[row_of[image.path] for image in images]]


def student_chips(config: DistillConfig, images: list[GalleryImage]) -> np.ndarray:
    """(n, size, size, 3) uint8 chips cut by the student's crop, cached beside the
    checkpoints."""
    return cached_chips(
        config.data, images, config.crop, config.image_size, config.checkpoints, config.progress
    )


def prefix_cache(config: DistillConfig, images: list[GalleryImage]) -> Path | None:
    """Where the frozen layers' outputs are kept: named after everything they depend on."""
    if config.trainable_from is None:
        return None
    key = [[image.path for image in images], config.weights, config.seed, config.image_size]
    key += [config.pooling] if config.pooling != "avg" else []  # names of older caches hold
    key += [config.features_from] if config.features_from else []
    key += [config.crop.to_dict()] if config.crop != ALIGNED else []
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]
    return config.checkpoints / f"frozen-{config.trainable_from}-{digest}.npy"


def prefix_outputs(
    prefix: keras.Model, chips: np.ndarray, cache: Path | None, progress: bool
) -> np.ndarray:
    """(2, n, ...) float16 outputs of the frozen prefix for each chip and its mirror image,
    kept in ``cache`` (valid while the chips, weights and cut stay the same)."""
    if cache is not None and cache.is_file():
        cached = np.load(cache, mmap_mode="r")
        if cached.shape[:2] == (2, len(chips)) and cached.shape[2:] == prefix.output.shape[1:]:
            return np.asarray(cached)
    outputs = np.stack(
        [prefix_pass(prefix, chips, progress), prefix_pass(prefix, chips[:, :, ::-1], progress)]
    )
    if cache is not None:
        with atomic_path(cache) as staging, staging.open("wb") as stream:
            np.save(stream, outputs)
    return outputs


def prefix_pass(prefix: keras.Model, chips: np.ndarray, progress: bool) -> np.ndarray:
    """(n, ...) float16 outputs of the frozen prefix for ``chips``."""
    outputs = np.empty((len(chips), *prefix.output.shape[1:]), np.float16)
    batch = 64
    with tqdm(total=len(chips), desc="frozen layers", unit="img", disable=not progress) as bar:
        for start in range(0, len(chips), batch):
            pixels = chips[start : start + batch].astype(np.float32)
            outputs[start : start + batch] = prefix.predict_on_batch(pixels)
            bar.update(len(pixels))
    return outputs


def augmented_rows(
    config: DistillConfig, images: list[GalleryImage]
) -> tuple[np.ndarray, np.ndarray]:
    """``config.augment`` jittered copies of each image: the student's chips and the
    teacher's descriptors of the same faces (``augment.py``), both cached."""
    teacher_chips, student = augmented_pairs(
        config.data,
        images,
        config.augment,
        config.image_size,
        config.seed,
        config.checkpoints,
        config.progress,
    )
    cache = (
        config.checkpoints / f"augmented-{config.augment}x-seed{config.seed}-{config.teacher}.npy"
    )
    if cache.is_file() and np.load(cache, mmap_mode="r").shape[0] == len(teacher_chips):
        return student, np.load(cache)
    say(f"the teacher describes {len(teacher_chips)} augmented chips...")
    descriptors = PortedTeacher(mirror=config.teacher == "dlib-mirror").embed(teacher_chips)
    with atomic_path(cache) as staging, staging.open("wb") as stream:
        np.save(stream, descriptors)
    return student, descriptors


# --- the student ----------------------------------------------------------------------------


def follow_faster(student: keras.Model) -> None:
    """BatchNorm statistics that follow the weights within hundreds of steps."""
    for layer in backbone_of(student).layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BATCHNORM_MOMENTUM


def backbone_of(student: keras.Model) -> keras.Model:
    return next(layer for layer in student.layers if isinstance(layer, keras.Model))


def split_student(
    student: keras.Model, first_trained: str | None
) -> tuple[keras.Model | None, keras.Model]:
    """(frozen prefix: pixels -> the input of ``first_trained``, trained suffix: that
    tensor -> embedding). They share the student's layers, so training the suffix trains
    the student; the prefix runs once per image, its outputs cached, not once per step."""
    if first_trained is None:
        return None, student
    backbone = backbone_of(student)
    pixels = keras.Input(student.input.shape[1:], name="pixels")
    after = student.layers[student.layers.index(backbone) + 1 :]  # [flatten], head, l2
    if first_trained == "head":  # the whole ResNet101 frozen: a projection of its features
        backbone.trainable = False
        frozen = backbone(student.get_layer("preprocess")(pixels))
        for layer in after[:-2]:  # the flatten layer, if any
            frozen = layer(frozen)
        features = keras.Input(frozen.shape[1:], name="features")
        embedding = student.get_layer("l2")(student.get_layer("head")(features))
        return keras.Model(pixels, frozen), keras.Model(features, embedding)
    names = [layer.name for layer in backbone.layers]
    if first_trained not in names:
        raise TrainingError(
            f"--trainable-from {first_trained!r} is not a layer of the ResNet101 the head "
            f"reads (up to {backbone.layers[-1].name}; see --features-from)"
        )
    cut = backbone.get_layer(first_trained).input
    if isinstance(cut, list | tuple):
        raise TrainingError(f"--trainable-from {first_trained!r} must be a layer with one input")
    try:
        inner_suffix = keras.Model(cut, backbone.output)
    except ValueError as error:
        raise TrainingError(
            f"--trainable-from {first_trained!r}: later layers need more than its input "
            f"({error}); name the first layer of a block, e.g. conv5_block1_0_conv"
        ) from None
    for layer in backbone.layers[: names.index(first_trained)]:
        layer.trainable = False
    prefix = keras.Model(
        pixels, keras.Model(backbone.input, cut)(student.get_layer("preprocess")(pixels))
    )
    features = keras.Input(cut.shape[1:], name="features")
    embedding = inner_suffix(features)
    for layer in after:
        embedding = layer(embedding)
    return prefix, keras.Model(features, embedding)


def freeze_batchnorm(student: keras.Model) -> None:
    """Keras runs a BatchNormalization that is not trainable in inference mode."""
    for layer in backbone_of(student).layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


class PairBatches:
    """Batches of pairs of one person's photos, filled up with random other photos."""

    def __init__(self, labels: np.ndarray, batch_size: int, pairs_share: float, seed: int):
        self.rng = np.random.default_rng(seed)
        by_person: dict[str, list[int]] = {}
        for row, label in enumerate(labels):
            by_person.setdefault(str(label), []).append(row)
        self.people = [rows for rows in by_person.values() if len(rows) >= 2]
        self.rows = len(labels)
        self.pairs = min(len(self.people), max(1, round(batch_size * pairs_share / 2)))
        self.extra = batch_size - 2 * self.pairs

    def next(self) -> np.ndarray:
        chosen = self.rng.choice(len(self.people), self.pairs, replace=False)
        rows = [row for p in chosen for row in self.rng.choice(self.people[p], 2, replace=False)]
        rows += self.rng.choice(self.rows, self.extra, replace=False).tolist()
        return np.asarray(rows)


# --- the loop -------------------------------------------------------------------------------


@dataclass
class Progress:
    """What a resumed run continues from."""

    step: int = 0
    images: int = 0
    train_seconds: float = 0.0


class Distiller:
    """The student, its optimiser and one training step. With ``trainable_from`` the step
    runs only the trained suffix, on cached prefix outputs of each chip and its mirror."""

    def __init__(
        self,
        config: DistillConfig,
        chips: np.ndarray,
        descriptors: np.ndarray,
        cache: Path | None = None,
        augmented: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        import tensorflow as tf

        self.config = config
        self.whitening = whitening = Whitening.fit(descriptors)
        self.whitened = whitening.whitened(descriptors)
        self.centred = whitening.centred(descriptors)
        self.student = build_student(
            config.image_size,
            config.embedding_size,
            config.weights,
            config.seed,
            config.pooling,
            config.features_from,
        )
        follow_faster(self.student)
        if config.batchnorm == "frozen":
            freeze_batchnorm(self.student)
        prefix, self.suffix = split_student(self.student, config.trainable_from)
        self.inputs = (
            np.stack([chips, chips[:, :, ::-1]])
            if prefix is None
            else prefix_outputs(prefix, chips, cache, config.progress)
        )
        self.extra_inputs = self.extra_whitened = None
        if augmented is not None and prefix is not None:
            student_chips, teacher_descriptors = augmented
            self.extra_inputs = prefix_pass(prefix, student_chips, config.progress)
            self.extra_whitened = whitening.whitened(teacher_descriptors)
        self.rng = np.random.default_rng(config.seed)
        self.optimizer = keras.optimizers.Adamax(config.learning_rate)
        self.optimizer.build(self.suffix.trainable_variables)
        suffix, optimizer, loss_name = self.suffix, self.optimizer, config.loss
        temperature = config.temperature

        @tf.function
        def step(inputs, whitened, centred):  # noqa: ANN001, ANN202
            with tf.GradientTape() as tape:
                embedding = suffix(inputs, training=True)
                loss = 0.0
                if loss_name in ("whitened", "both"):
                    loss += whitened_loss(embedding, whitened)
                if loss_name in ("relational", "both"):
                    loss += relational_loss(embedding, centred, temperature)
            variables = suffix.trainable_variables
            gradients = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(gradients, variables, strict=True))
            return loss

        self._step = step

    def batch(self, rows: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
        return self.inputs[mirrored.astype(np.intp), rows].astype(np.float32)

    def train_step(self, rows: np.ndarray) -> float:
        mirrored = self.rng.random(len(rows)) < 0.5
        return float(
            self._step(self.batch(rows, mirrored), self.whitened[rows], self.centred[rows])
        )

    def fit_ridge(self, rows: np.ndarray, penalty: float) -> None:
        """Set the head to the ridge fit from the cached features of ``rows`` and their
        mirrors to the whitened descriptors (``ridge.py``)."""
        parts = [self.inputs[0, rows], self.inputs[1, rows]]
        targets = [self.whitened[rows], self.whitened[rows]]
        if self.extra_inputs is not None:
            parts.append(self.extra_inputs)
            targets.append(self.extra_whitened)
        # float32 rows written in place, part by part: no float16 copy of all of them first
        features = np.empty((sum(map(len, parts)), self.inputs[0, 0].size), np.float32)
        start = 0
        for part in parts:
            features[start : start + len(part)] = part.reshape(len(part), -1)
            start += len(part)
        head = ridge_head(features, np.concatenate(targets), penalty)
        self.student.get_layer("head").set_weights(head)

    def embed(self, rows: np.ndarray) -> np.ndarray:
        """Embeddings of rows of ``chips`` (unmirrored), as the exported model gives them."""
        unmirrored = np.zeros(len(rows), bool)
        return np.concatenate(
            [
                self.suffix.predict_on_batch(self.batch(rows[i : i + 128], unmirrored[i : i + 128]))
                for i in range(0, len(rows), 128)
            ]
        )

    def save(self, folder: Path, progress: Progress) -> None:
        """Weights, optimiser state and progress, each written whole, progress last."""
        with atomic_path(folder / "student.weights.h5") as staging:
            self.student.save_weights(staging.with_suffix(".weights.h5"))
            os.replace(staging.with_suffix(".weights.h5"), staging)
        with atomic_path(folder / "optimizer.npz") as staging, staging.open("wb") as stream:
            np.savez(stream, *[np.asarray(v) for v in self.optimizer.variables])
        with atomic_path(folder / "progress.json") as staging:
            staging.write_text(json.dumps(asdict(progress)))

    def restore(self, folder: Path) -> Progress:
        if not (folder / "progress.json").is_file():
            return Progress()
        self.student.load_weights(folder / "student.weights.h5")
        with np.load(folder / "optimizer.npz") as saved:
            for variable, key in zip(self.optimizer.variables, saved.files, strict=True):
                variable.assign(saved[key])
        return Progress(**json.loads((folder / "progress.json").read_text()))


class FreshDistiller(Distiller):
    """Gradient steps on fresh samples, the teacher in the graph (``--fresh``): each step
    augments aligned 150 px chips anew (mirror, shift, turn, scale, light), the ported
    teacher describes them, and the student learns from the same faces shrunk to its
    size. No descriptor of an augmented face is stored; the student never sees the same
    sample twice. The layers before ``--trainable-from`` stay frozen but run every step."""

    def __init__(
        self,
        config: DistillConfig,
        chips: np.ndarray,
        descriptors: np.ndarray,
        cache: Path | None,
        teacher_chips: np.ndarray,
    ):
        import tensorflow as tf

        super().__init__(config, chips, descriptors, cache)
        self.teacher_chips = teacher_chips
        teacher = PortedTeacher(mirror=config.teacher == "dlib-mirror").network
        teacher.trainable = False
        augment = keras.Sequential(
            [
                keras.layers.RandomFlip("horizontal", seed=config.seed),
                keras.layers.RandomTranslation(0.04, 0.04, fill_mode="nearest", seed=config.seed),
                keras.layers.RandomRotation(6 / 360, fill_mode="nearest", seed=config.seed),
                keras.layers.RandomZoom(0.06, fill_mode="nearest", seed=config.seed),
                keras.layers.RandomBrightness(0.05, value_range=(0, 255), seed=config.seed),
                keras.layers.RandomContrast(0.12, seed=config.seed),
            ],
            name="augment",
        )
        student, size = self.student, config.image_size
        optimizer = keras.optimizers.Adamax(config.learning_rate)
        if config.mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(student.trainable_variables)
        self.optimizer = optimizer
        mean = tf.constant(self.whitening.mean)
        matrix = tf.constant(self.whitening.matrix)
        loss_name, temperature = config.loss, config.temperature

        def unit(rows):  # noqa: ANN001, ANN202
            return rows / tf.maximum(tf.norm(rows, axis=1, keepdims=True), 1e-12)

        @tf.function
        def step(pixels):  # noqa: ANN001, ANN202
            faces = augment(pixels, training=True)
            offsets = tf.cast(teacher(faces, training=False), tf.float32) - mean
            whitened, centred = unit(offsets @ matrix), unit(offsets)
            small = tf.image.resize(faces, (size, size), method="area")
            with tf.GradientTape() as tape:
                embedding = tf.cast(student(small, training=True), tf.float32)
                loss = 0.0
                if loss_name in ("whitened", "both"):
                    loss += whitened_loss(embedding, whitened)
                if loss_name in ("relational", "both"):
                    loss += relational_loss(embedding, centred, temperature)
                scaled = optimizer.scale_loss(loss) if config.mixed_precision else loss
            variables = student.trainable_variables
            gradients = tape.gradient(scaled, variables)
            optimizer.apply_gradients(zip(gradients, variables, strict=True))
            return loss

        self._fresh_step = step

    def train_step(self, rows: np.ndarray) -> float:
        return float(self._fresh_step(self.teacher_chips[rows].astype(np.float32)))


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def distill(config: DistillConfig) -> Path:
    """Train the student within the budget; write ``config.out`` and its training record."""
    keras.utils.set_random_seed(config.seed)
    train_images, validation = training_people(
        config.data, config.split, config.max_images, config.seed, singletons=True
    )
    folder = config.checkpoints
    folder.mkdir(parents=True, exist_ok=True)
    if not config.resume:
        (folder / "progress.json").unlink(missing_ok=True)
        (folder / "history.jsonl").unlink(missing_ok=True)
    (folder / "config.json").write_text(json.dumps(config.to_json(), indent=2))
    everything = train_images + validation
    descriptors = teacher_descriptors(config, everything)
    chips = student_chips(config, everything)
    train_rows = np.arange(len(train_images))
    validation_rows = np.arange(len(train_images), len(everything))
    validation_labels = np.array([image.label for image in validation])
    say(
        f"distilling {config.teacher} into ResNet101 ({config.image_size}px, "
        f"{config.embedding_size}-d head on {config.features_from or 'its last layer'} "
        f"({config.pooling}), fit {config.fit}, loss {config.loss}) on {len(train_images)} images; "
        f"validating on {len(validation)} images of {len(set(validation_labels))} other people"
    )
    augmented = augmented_rows(config, train_images) if config.augment else None
    if config.fresh:
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        teacher_chips = cached_chips(
            config.data, train_images, ALIGNED, TEACHER_SIZE, folder, config.progress
        )
        distiller: Distiller = FreshDistiller(
            config,
            chips,
            descriptors[: len(train_images)],
            prefix_cache(config, everything),
            teacher_chips,
        )
    else:
        distiller = Distiller(
            config,
            chips,
            descriptors[: len(train_images)],
            prefix_cache(config, everything),
            augmented,
        )
    progress = distiller.restore(folder) if config.resume else Progress()
    if progress.step:
        say(f"resumed at step {progress.step} ({progress.train_seconds / 60:.1f} min)")
    batches = PairBatches(
        np.array([image.label for image in train_images]),
        config.batch_size,
        config.pairs_share,
        config.seed + progress.step,
    )

    def evaluate(loss: float, stage: str = "gradient") -> None:
        hit = leave_one_out_hit_at_1(distiller.embed(validation_rows), validation_labels)
        line = {
            "stage": stage,
            "step": progress.step,
            "images": progress.images,
            "minutes": round(progress.train_seconds / 60, 2),
            "loss": loss,
            "val_hit_at_1": hit,
        }
        with (folder / "history.jsonl").open("a") as stream:
            stream.write(json.dumps(line) + "\n")
        rate = progress.images / max(progress.train_seconds, 1e-9)
        say(
            f"{line['minutes']:7.1f} min  step {progress.step:6d}  {rate:5.1f} img/s  "
            f"loss {loss:.4f}  validation hit@1 {hit:.4f}"
        )

    if progress.step == 0:
        evaluate(float("nan"), "start")
        if config.fit == "ridge":
            rows = (2 + config.augment) * len(train_rows)
            say(f"fitting the head in closed form (ridge) to {rows} chips...")
            started = time.perf_counter()
            distiller.fit_ridge(train_rows, config.ridge_penalty)
            progress.train_seconds += time.perf_counter() - started
            evaluate(float("nan"), "ridge")
            distiller.save(folder, progress)
    losses: list[float] = []
    next_eval = progress.train_seconds + config.eval_every_minutes * 60
    while not done(config, progress):
        rows = train_rows[batches.next()]
        started = time.perf_counter()
        losses.append(distiller.train_step(rows))
        progress.train_seconds += time.perf_counter() - started
        progress.step += 1
        progress.images += len(rows)
        if progress.train_seconds >= next_eval or done(config, progress):
            evaluate(float(np.mean(losses[-50:])))
            distiller.save(folder, progress)
            next_eval = progress.train_seconds + config.eval_every_minutes * 60
    return write_student(config, distiller.student)


def done(config: DistillConfig, progress: Progress) -> bool:
    if config.steps is None and config.minutes is None:  # --fit ridge alone
        return True
    if config.steps is not None and progress.step >= config.steps:
        return True
    return config.minutes is not None and progress.train_seconds >= config.minutes * 60


def write_student(config: DistillConfig, student: keras.Model) -> Path:
    """``config.out``: a model whose layer EMBEDDER_LAYER is the served embedder."""
    pixels = keras.Input((config.image_size, config.image_size, 3), name="pixels")
    wrapper = keras.Model(pixels, student(pixels), name="distilled")
    return publish_model(wrapper, config.out, config.to_json())
