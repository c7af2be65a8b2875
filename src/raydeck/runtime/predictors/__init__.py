"""Framework predictors: ``load_predictor(framework, artifact_dir)`` → ``Predictor``.

Artifact conventions (Vertex AI prebuilt-container file names):

| framework | files in the artifact directory |
|---|---|
| sklearn | model.joblib or model.pkl |
| xgboost | model.json, model.ubj or model.bst (Booster or sklearn API), or model.joblib/.pkl |
| lightgbm | model.txt (Booster), or model.joblib/.pkl (LGBMModel) |
| pytorch | model.pt (TorchScript) or model.pth (whole pickled nn.Module) |
| tensorflow | saved_model.pb (+ variables/): a SavedModel; only where TensorFlow is installed |
| custom | raydeck_predictor.json {"class": "predictor:MyPredictor"} + predictor.py |

Each framework's module is imported only when that framework is used, so a replica serving
a scikit-learn model never imports torch.

``load_predictor`` runs the artifact's code (unpickling, a custom predictor's module): it is
called only where the model is used, on its cluster (Serve replicas, batch prediction
workers), never by the control plane, which checks uploads statically
(``raydeck.server.services.model_artifacts``, whose file names must match ``artifact_files``).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from raydeck.core.errors import InvalidArgumentError, RaydeckError
from raydeck.runtime.predictors.base import BASELINE_KEY, Explanation, Predictor, first_line

__all__ = [
    "BASELINE_KEY",
    "FRAMEWORKS",
    "Explanation",
    "Predictor",
    "available_frameworks",
    "load_predictor",
    "predictor_class",
]

# framework → (module, class, the package that must be importable)
FRAMEWORKS: dict[str, tuple[str, str, str | None]] = {
    "sklearn": ("sklearn_predictor", "SklearnPredictor", "sklearn"),
    "xgboost": ("xgboost_predictor", "XGBoostPredictor", "xgboost"),
    "lightgbm": ("lightgbm_predictor", "LightGBMPredictor", "lightgbm"),
    "pytorch": ("pytorch_predictor", "PytorchPredictor", "torch"),
    "tensorflow": ("tensorflow_predictor", "TensorflowPredictor", "tensorflow"),
    "custom": ("custom_predictor", "CustomPredictor", None),
}


def available_frameworks() -> list[str]:
    return [name for name, (*_, package) in FRAMEWORKS.items() if _installed(package)]


def _installed(package: str | None) -> bool:
    return package is None or importlib.util.find_spec(package) is not None


def predictor_class(framework: str) -> type[Predictor]:
    """The Predictor for ``framework``; 400 naming ``framework`` if unknown or not installed."""
    entry = FRAMEWORKS.get(str(framework))
    if entry is None:
        raise InvalidArgumentError(
            f"unknown framework {framework!r} (known: {', '.join(FRAMEWORKS)})", field="framework"
        )
    module_name, class_name, package = entry
    if not _installed(package):
        raise InvalidArgumentError(
            f"framework {framework!r} needs the {package!r} package, which is not installed here",
            field="framework",
        )
    module = importlib.import_module(f"{__name__}.{module_name}")
    cls: type[Predictor] = getattr(module, class_name)
    return cls


def load_predictor(framework: str, artifact_dir: Path | str) -> Predictor:
    """A loaded predictor; any failure to load is a 400 naming ``artifact_uri``."""
    directory = Path(artifact_dir)
    if not directory.is_dir():
        raise InvalidArgumentError(
            f"artifact directory {directory} does not exist", field="artifact_uri"
        )
    predictor = predictor_class(framework)()
    try:
        predictor.load(directory)
    except RaydeckError:
        raise
    except Exception as exc:  # corrupt or foreign files: say what the framework said
        message = first_line(exc).replace(f"{directory}/", "").replace(str(directory), ".")
        raise InvalidArgumentError(
            f"cannot load the {framework} model: {message}", field="artifact_uri"
        ) from exc
    return predictor
