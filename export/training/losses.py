"""Distillation losses, and the teacher targets they compare against.

dlib's descriptors share one large common direction (two random faces have
cosine 0.84), so both losses take it out before comparing: the whitened loss
by centring and whitening the targets, the relational one by comparing
similarities between centred descriptors. Declared apart from the training
loop so that the command line can name the losses (and the BatchNorm choice)
without importing Keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

Loss = Literal["whitened", "relational", "both"]
LOSSES: tuple[str, ...] = get_args(Loss)
# frozen: every BatchNormalization keeps its initial statistics (an identity at random
# weights, where the residual paths carry the image through; statistics measured on faces
# made deep random features worse in a probe, see docs/RESULTS.md) and is not trained;
# train: batch statistics while training, moving averages after.
BatchNorm = Literal["frozen", "train"]
BATCHNORMS: tuple[str, ...] = get_args(BatchNorm)
# What the head sees of ResNet101's last feature map: its average (2048 numbers), or all of
# it flattened (S/32 x S/32 x 2048), which keeps where on the face each feature was.
Pooling = Literal["avg", "flatten"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
# How the head starts: ridge, a closed-form least-squares fit of the dense head to the whitened
# descriptors over every cached image and its mirror (one solve, about a minute on LFW;
# gradient steps follow only when a budget is given); gradient, random, then steps of the loss.
Fit = Literal["ridge", "gradient"]
FITS: tuple[str, ...] = get_args(Fit)
# Eigenvalues of the teacher's covariance below this share of their mean are raised
# to it before whitening, so the noisiest directions are not blown up.
WHITENING_FLOOR = 0.05


@dataclass(frozen=True)
class Whitening:
    """Centre on the training mean, then rotate and scale to unit variance per direction."""

    mean: np.ndarray
    matrix: np.ndarray

    @classmethod
    def fit(cls, descriptors: np.ndarray) -> Whitening:
        mean = descriptors.mean(axis=0)
        values, vectors = np.linalg.eigh(np.cov(descriptors - mean, rowvar=False))
        values = np.maximum(values, 0) + WHITENING_FLOOR * values.mean()
        return cls(mean.astype(np.float32), (vectors / np.sqrt(values)).astype(np.float32))

    def centred(self, descriptors: np.ndarray) -> np.ndarray:
        return unit_rows(descriptors - self.mean)

    def whitened(self, descriptors: np.ndarray) -> np.ndarray:
        return unit_rows((descriptors - self.mean) @ self.matrix)


def unit_rows(rows: np.ndarray) -> np.ndarray:
    return (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).astype(
        np.float32
    )


def whitened_loss(student, whitened):  # noqa: ANN001, ANN201 (tensors)
    """1 - cosine between unit student embeddings and unit whitened teacher targets."""
    import keras

    return keras.ops.mean(1.0 - keras.ops.sum(student * whitened, axis=1))


def relational_loss(student, centred, temperature: float):  # noqa: ANN001, ANN201
    """KL(teacher || student) of each row's softmax over the batch's cosine similarities
    (itself left out), the teacher's from its centred descriptors."""
    import keras

    n = keras.ops.shape(student)[0]
    itself = keras.ops.eye(n) * 1e9
    teacher_logits = keras.ops.matmul(centred, keras.ops.transpose(centred)) / temperature - itself
    student_logits = keras.ops.matmul(student, keras.ops.transpose(student)) / temperature - itself
    teacher_p = keras.ops.softmax(teacher_logits, axis=1)
    return keras.ops.mean(
        keras.ops.sum(
            teacher_p
            * (
                keras.ops.log_softmax(teacher_logits, axis=1)
                - keras.ops.log_softmax(student_logits, axis=1)
            ),
            axis=1,
        )
    )
