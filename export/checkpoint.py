"""What a trained checkpoint is, to whoever reads one back: the layer that is the served
embedder, the identity head `lookalike train` saves with it, and where its training
record lies.

Both training (which writes checkpoints) and export (which converts them) import this,
so export never imports ``lookalike.export.training``. The layers are registered as
``lookalike>ClassName``, the name saved .keras files carry: keep it when moving them.
"""

from __future__ import annotations

import keras

from lookalike.export.records import training_record

__all__ = ["EMBEDDER_LAYER", "CosineHead", "training_record"]

# The layer of a checkpoint that is the embedder export converts (the rest trains it).
EMBEDDER_LAYER = "embedder"


@keras.saving.register_keras_serializable(package="lookalike")
class CosineHead(keras.layers.Layer):
    """Scaled cosine similarity to one learned direction per person: the head that trains
    the embedder. Saved in `lookalike train`'s checkpoints, so reading one needs it."""

    def __init__(self, classes: int, scale: float = 16.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.classes, self.scale = classes, scale

    def build(self, input_shape) -> None:
        self.centres = self.add_weight(
            shape=(input_shape[-1], self.classes), initializer="glorot_normal", name="centres"
        )

    def call(self, embedding):
        centres = self.centres / keras.ops.maximum(
            keras.ops.norm(self.centres, axis=0, keepdims=True), 1e-12
        )
        return self.scale * keras.ops.matmul(embedding, centres)

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "classes": self.classes, "scale": self.scale}
