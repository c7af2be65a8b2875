"""TensorFlow: a SavedModel directory (``saved_model.pb``), served through its
``serving_default`` signature. Only offered where TensorFlow is installed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from raydeck.runtime.predictors.base import Predictor

__all__ = ["TensorflowPredictor"]


class TensorflowPredictor(Predictor):
    framework = "tensorflow"
    artifact_files = ("saved_model.pb",)

    def __init__(self) -> None:
        super().__init__()
        self.signature: Any = None
        self.input_name = ""

    def load(self, artifact_dir: Path) -> None:
        self.artifact_file(artifact_dir)
        loaded = tf.saved_model.load(str(artifact_dir))
        self.signature = loaded.signatures["serving_default"]
        inputs = self.signature.structured_input_signature[1]
        self.input_name, spec = next(iter(inputs.items()))
        dims = spec.shape.as_list()[1:]
        if dims and all(isinstance(d, int) for d in dims):
            self.input_shape = tuple(dims)

    def predict(
        self, instances: Sequence[Any], parameters: dict[str, Any] | None = None
    ) -> list[Any]:
        self.check_parameters(parameters)
        batch = tf.constant(self.to_array(instances, np.float32))
        outputs = self.signature(**{self.input_name: batch})
        if len(outputs) == 1:
            return list(next(iter(outputs.values())).numpy().tolist())
        columns = {name: value.numpy().tolist() for name, value in outputs.items()}
        return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
