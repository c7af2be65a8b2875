"""Custom predictors: the artifact ships its own code.

``raydeck_predictor.json`` names the class, ``{"class": "predictor:MyPredictor"}``; the
module is a file in the artifact (``predictor.py``). The class has ``load(artifact_dir)``
(optional) and ``predict(instances[, parameters])``, and may have ``explain(instances)``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from raydeck.core.errors import InvalidArgumentError
from raydeck.runtime.predictors.base import Explanation, Predictor

__all__ = ["CONFIG_FILE", "CustomPredictor"]

CONFIG_FILE = "raydeck_predictor.json"
_CLASS_REF = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")


def _problem(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{CONFIG_FILE}: {message}", field="artifact_uri")


def _import_file(artifact_dir: Path, module: str) -> ModuleType:
    path = artifact_dir.joinpath(*module.split(".")).with_suffix(".py")
    if not path.is_file():
        raise _problem(f"module {module!r} needs {path.relative_to(artifact_dir)} in the artifact")
    # Unique name per artifact: two models that both ship predictor.py must not collide.
    digest = hashlib.sha256(str(artifact_dir.resolve()).encode()).hexdigest()[:12]
    name = f"_raydeck_custom_{digest}_{module.replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise _problem(f"cannot import {path.name}")
    if str(artifact_dir) not in sys.path:  # lets predictor.py import its sibling modules
        sys.path.append(str(artifact_dir))
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


class CustomPredictor(Predictor):
    framework = "custom"
    artifact_files = (CONFIG_FILE,)

    def __init__(self) -> None:
        super().__init__()
        self.user: Any = None
        self._takes_parameters = False

    def load(self, artifact_dir: Path) -> None:
        try:
            config = json.loads(self.artifact_file(artifact_dir).read_text())
        except ValueError as exc:
            raise _problem(f"not valid JSON ({exc})") from exc
        ref = config.get("class") if isinstance(config, dict) else None
        match = _CLASS_REF.match(ref) if isinstance(ref, str) else None
        if match is None:
            raise _problem('needs {"class": "module:ClassName"}, e.g. "predictor:MyPredictor"')
        module = _import_file(artifact_dir, match.group(1))
        cls = getattr(module, match.group(2), None)
        if not isinstance(cls, type):
            raise _problem(f"{match.group(1)}.py defines no class {match.group(2)!r}")
        user = cls()
        if not callable(getattr(user, "predict", None)):
            raise _problem(f"{match.group(2)} has no predict(instances) method")
        if callable(getattr(user, "load", None)):
            user.load(artifact_dir)
        self._takes_parameters = len(inspect.signature(user.predict).parameters) >= 2
        self.user = user

    def predict(
        self, instances: Sequence[Any], parameters: dict[str, Any] | None = None
    ) -> list[Any]:
        if not isinstance(instances, list | tuple) or not instances:
            raise InvalidArgumentError("instances must be a non-empty list", field="instances")
        if self._takes_parameters:
            output = self.user.predict(list(instances), parameters or {})
        elif parameters:
            raise InvalidArgumentError(
                "this custom predictor takes no parameters", field="parameters"
            )
        else:
            output = self.user.predict(list(instances))
        return list(np.asarray(output).tolist()) if isinstance(output, np.ndarray) else list(output)

    def explain(
        self, instances: Sequence[Any], parameters: dict[str, Any] | None = None
    ) -> list[Explanation]:
        if not callable(getattr(self.user, "explain", None)):
            return super().explain(instances, parameters)
        if not isinstance(instances, list | tuple) or not instances:
            raise InvalidArgumentError("instances must be a non-empty list", field="instances")
        return list(self.user.explain(list(instances)))
