"""Register models from Python: fitted estimators and Ray Train checkpoints.

    import raydeck.models
    raydeck.models.register_model(clf, "churn")                  # sklearn/xgboost/lightgbm/torch
    raydeck.models.register_from_checkpoint(
        result.checkpoint, "xgboost", "churn", parent_model="churn"
    )

Each writes the artifact file its framework's predictor loads (``model.joblib``,
``model.json``, ``model.txt``, TorchScript ``model.pt``; see ``raydeck.runtime.predictors``)
into a temporary directory and uploads it. Frameworks and Ray are imported only when used,
so ``import raydeck.models`` stays light.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raydeck.client import RaydeckClient
from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models import Framework, ModelVersion

if TYPE_CHECKING:
    import torch

__all__ = ["detect_framework", "register_from_checkpoint", "register_model", "save_model"]

# Top-level package of a class in the model's MRO → framework; first match wins, so an
# XGBClassifier (also a scikit-learn estimator) is xgboost.
_PACKAGES = {
    "xgboost": Framework.XGBOOST,
    "lightgbm": Framework.LIGHTGBM,
    "torch": Framework.PYTORCH,
    "keras": Framework.TENSORFLOW,
    "tensorflow": Framework.TENSORFLOW,
    "sklearn": Framework.SKLEARN,
}
_TORCH_FILES = ("model.pt", "model.pth", "checkpoint.pt", "checkpoint.pth")
_STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model")


def detect_framework(model: Any) -> Framework:
    for cls in type(model).__mro__:
        framework = _PACKAGES.get(cls.__module__.split(".")[0])
        if framework is not None:
            return framework
    raise InvalidArgumentError(
        f"cannot tell the framework of a {type(model).__name__}; pass framework=...",
        field="framework",
    )


def save_model(
    model: Any,
    directory: Path,
    framework: Framework | str | None = None,
    *,
    example_input: Any = None,
) -> Framework:
    """Write ``model`` as its framework's conventional artifact into ``directory``."""
    kind = Framework(framework) if framework is not None else detect_framework(model)
    directory.mkdir(parents=True, exist_ok=True)
    if kind is Framework.SKLEARN:
        import joblib

        joblib.dump(model, directory / "model.joblib")
    elif kind is Framework.XGBOOST:
        if not callable(getattr(model, "save_model", None)):
            raise InvalidArgumentError(
                f"a {type(model).__name__} is not an XGBoost model", field="framework"
            )
        # JSON keeps the scikit-learn estimator type, so XGBClassifier still predicts labels.
        model.save_model(str(directory / "model.json"))
    elif kind is Framework.LIGHTGBM:
        _save_lightgbm(model, directory)
    elif kind is Framework.PYTORCH:
        _save_torchscript(model, directory / "model.pt", example_input)
    elif kind is Framework.TENSORFLOW:
        import tensorflow as tf

        tf.saved_model.save(model, str(directory))
    else:
        raise InvalidArgumentError(
            "custom predictors are registered from a directory: "
            "client.models.upload(name, directory, 'custom')",
            field="framework",
        )
    return kind


def _save_lightgbm(model: Any, directory: Path) -> None:
    import joblib
    import lightgbm as lgb

    if isinstance(model, lgb.Booster):
        model.save_model(str(directory / "model.txt"))
    elif isinstance(model, lgb.LGBMModel):
        joblib.dump(model, directory / "model.joblib")  # keeps classes_ (string labels)
    else:
        raise InvalidArgumentError(
            f"a {type(model).__name__} is not a LightGBM model", field="framework"
        )


def _save_torchscript(model: Any, path: Path, example_input: Any) -> None:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise InvalidArgumentError(
            f"a {type(model).__name__} is not a torch.nn.Module", field="framework"
        )
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's deprecation notice
        try:
            scripted = (
                model if isinstance(model, torch.jit.ScriptModule) else torch.jit.script(model)
            )
        except Exception as exc:  # dynamic Python TorchScript cannot compile: trace instead
            if example_input is None:
                raise InvalidArgumentError(
                    f"cannot compile {type(model).__name__} to TorchScript "
                    f"({str(exc).strip().splitlines()[0][:200]}); pass example_input= (a batch "
                    "tensor) to trace it instead",
                    field="model",
                ) from exc
            scripted = torch.jit.trace(model, example_input)  # type: ignore[no-untyped-call]
        torch.jit.save(scripted, str(path))


def _upload(
    client: RaydeckClient | None,
    display_name: str | None,
    directory: Path,
    framework: Framework,
    **options: Any,
) -> ModelVersion:
    if client is not None:
        return client.models.upload(display_name, directory, framework, **options)
    with RaydeckClient() as own:
        return own.models.upload(display_name, directory, framework, **options)


def register_model(
    model: Any,
    display_name: str | None,
    *,
    framework: Framework | str | None = None,
    parent_model: str | None = None,
    aliases: Sequence[str] = (),
    labels: dict[str, str] | None = None,
    description: str | None = None,
    is_default_version: bool = True,
    example_input: Any = None,
    client: RaydeckClient | None = None,
) -> ModelVersion:
    """Upload a fitted scikit-learn estimator, XGBoost Booster/XGBModel, LightGBM
    Booster/LGBMModel or torch ``nn.Module`` (compiled to TorchScript)."""
    with tempfile.TemporaryDirectory(prefix="raydeck-model-") as tmp:
        kind = save_model(model, Path(tmp), framework, example_input=example_input)
        return _upload(
            client,
            display_name,
            Path(tmp),
            kind,
            parent_model=parent_model,
            aliases=aliases,
            labels=labels,
            description=description,
            is_default_version=is_default_version,
        )


def register_from_checkpoint(
    checkpoint: Any,
    framework: Framework | str,
    display_name: str | None,
    *,
    model_class: Any = None,
    model_kwargs: dict[str, Any] | None = None,
    example_input: Any = None,
    parent_model: str | None = None,
    aliases: Sequence[str] = (),
    labels: dict[str, str] | None = None,
    description: str | None = None,
    is_default_version: bool = True,
    client: RaydeckClient | None = None,
) -> ModelVersion:
    """Upload the model in a ``ray.train.Checkpoint``.

    - xgboost / lightgbm: written by Ray Train's trainers (their ``RayTrainReportCallback``).
    - pytorch: a state dict saved by a ``TorchTrainer`` loop (``model.pt``; the dict may sit
      under ``model_state_dict``/``model``; DDP ``module.`` prefixes are dropped), rebuilt with
      ``model_class(**model_kwargs)`` and saved as TorchScript; or a whole pickled module.
    - other frameworks: the checkpoint directory already holds the conventional artifact.
    """
    kind = Framework(framework)
    with tempfile.TemporaryDirectory(prefix="raydeck-model-") as tmp:
        out = Path(tmp)
        if kind is Framework.XGBOOST:
            from ray.train.xgboost import RayTrainReportCallback as XGBoostCallback

            name = _checkpoint_file(checkpoint, ("model.ubj", "model.json"), kind)
            save_model(XGBoostCallback.get_model(checkpoint, filename=name), out, kind)
        elif kind is Framework.LIGHTGBM:
            from ray.train.lightgbm import RayTrainReportCallback as LightGBMCallback

            name = _checkpoint_file(checkpoint, ("model.txt",), kind)
            save_model(LightGBMCallback.get_model(checkpoint, filename=name), out, kind)
        elif kind is Framework.PYTORCH:
            module = _torch_module(checkpoint, model_class, model_kwargs or {})
            save_model(module, out, kind, example_input=example_input)
        else:
            with checkpoint.as_directory() as directory:
                shutil.copytree(directory, out, dirs_exist_ok=True)
        return _upload(
            client,
            display_name,
            out,
            kind,
            parent_model=parent_model,
            aliases=aliases,
            labels=labels,
            description=description,
            is_default_version=is_default_version,
        )


def _checkpoint_file(checkpoint: Any, names: Sequence[str], framework: Framework) -> str:
    with checkpoint.as_directory() as directory:
        for name in names:
            if (Path(directory) / name).is_file():
                return name
        found = sorted(p.name for p in Path(directory).iterdir())
    raise InvalidArgumentError(
        f"the checkpoint has none of {', '.join(names)} (found: {', '.join(found) or 'nothing'}); "
        f"was it written by Ray Train's {framework.value} trainer?",
        field="checkpoint",
    )


def _torch_module(
    checkpoint: Any,
    model_class: type[torch.nn.Module] | Callable[..., torch.nn.Module] | torch.nn.Module | None,
    model_kwargs: dict[str, Any],
) -> torch.nn.Module:
    import torch

    name = _checkpoint_file(checkpoint, _TORCH_FILES, Framework.PYTORCH)
    with checkpoint.as_directory() as directory:
        path = Path(directory) / name
        try:
            state: Any = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a whole pickled module (TorchCheckpoint.from_model): your own file
            state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, torch.nn.Module):
        return state
    if model_class is None:
        raise InvalidArgumentError(
            f"{name} holds a state dict: pass model_class= (and model_kwargs=) to rebuild the "
            "module it belongs to",
            field="model_class",
        )
    if isinstance(state, dict):
        for key in _STATE_DICT_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise InvalidArgumentError(
            f"{name} holds a {type(state).__name__}, not a state dict", field="checkpoint"
        )
    module = (
        model_class if isinstance(model_class, torch.nn.Module) else model_class(**model_kwargs)
    )
    # Ray's prepare_model wraps in DistributedDataParallel, whose keys start with "module.".
    module.load_state_dict({str(k).removeprefix("module."): v for k, v in state.items()})
    return module.eval()
