"""PyTorch: TorchScript ``model.pt`` (preferred: needs no Python class to load) or a whole
pickled ``nn.Module`` in ``model.pth`` (its class must be importable where it is served)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raydeck.core.errors import InvalidArgumentError
from raydeck.runtime.predictors.base import Predictor, first_line

__all__ = ["PytorchPredictor", "infer_input_shape"]

# Torch shape errors (wrong width, wrong rank) are the caller's input, not a model bug.
_SHAPE_ERRORS = ("shape", "size mismatch", "dimension", "must match the size")


def infer_input_shape(model: torch.nn.Module) -> tuple[int, ...] | None:
    """(in_features,) when the model is a Sequential that starts with a Linear layer.

    Only that case: for other modules the first registered layer need not be the first
    one ``forward`` uses, and a wrong guess would reject valid input.
    """
    if _kind(model) != "Sequential":
        return None
    first = next(iter(model.children()), None)
    if first is None or _kind(first) != "Linear":
        return None
    weight = getattr(first, "weight", None)
    return (int(weight.shape[1]),) if isinstance(weight, torch.Tensor) else None


def _kind(module: torch.nn.Module) -> str:
    # A scripted module keeps its Python class name in ``original_name``.
    return str(getattr(module, "original_name", type(module).__name__))


def _to_list(output: Any) -> list[Any]:
    if isinstance(output, torch.Tensor):
        return list(output.detach().cpu().numpy().tolist())
    if isinstance(output, tuple | list):  # several heads: one list of outputs per instance
        parts = [_to_list(part) for part in output]
        return [list(values) for values in zip(*parts, strict=True)]
    if isinstance(output, dict):
        columns = {key: _to_list(value) for key, value in output.items()}
        return [
            dict(zip(columns, values, strict=True))
            for values in zip(*columns.values(), strict=True)
        ]
    return list(np.asarray(output).tolist())


class PytorchPredictor(Predictor):
    framework = "pytorch"
    artifact_files = ("model.pt", "model.pth")

    def __init__(self) -> None:
        super().__init__()
        self.model: torch.nn.Module | None = None

    def load(self, artifact_dir: Path) -> None:
        path = self.artifact_file(artifact_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's deprecation notice
            if path.suffix == ".pt":
                model: Any = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
            else:
                model = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(model, torch.nn.Module):
            hint = (
                " (a state dict: register it with model_class)" if isinstance(model, dict) else ""
            )
            raise InvalidArgumentError(
                f"{path.name} holds a {type(model).__name__}, not a torch.nn.Module{hint}",
                field="artifact_uri",
            )
        model.eval()
        self.model = model
        self.input_shape = infer_input_shape(model)

    def predict(
        self, instances: Sequence[Any], parameters: dict[str, Any] | None = None
    ) -> list[Any]:
        assert self.model is not None, "load() first"
        self.check_parameters(parameters)
        batch = torch.from_numpy(self.to_array(instances, np.float32))
        try:
            with torch.inference_mode():
                output = self.model(batch)
        except RuntimeError as exc:
            if any(marker in str(exc) for marker in _SHAPE_ERRORS):
                raise InvalidArgumentError(
                    f"the model rejected the input: {first_line(exc)}", field="instances"
                ) from exc
            raise
        return _to_list(output)
