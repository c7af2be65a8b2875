"""Model registry: models, their numbered versions, and aliases that point at versions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from raydeck.core.models.common import LenientModel, Name, StrictModel
from raydeck.core.models.limits import LabelMap

__all__ = [
    "ALIAS_PATTERN",
    "DEFAULT_ALIAS",
    "AliasChanges",
    "Framework",
    "Model",
    "ModelUpdate",
    "ModelUpload",
    "ModelVersion",
    "ModelVersionUpdate",
    "PredictSchema",
    "parse_version_ref",
]

DEFAULT_ALIAS = "default"
# Aliases start with a letter, so they never look like a version id ("1", "2", ...).
ALIAS_PATTERN = r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
Alias = Annotated[str, Field(pattern=ALIAS_PATTERN, description="lowercase, starts with a letter")]
Labels = LabelMap
Description = Annotated[str, Field(max_length=4096)]


class Framework(StrEnum):
    SKLEARN = "sklearn"
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"
    PYTORCH = "pytorch"
    TENSORFLOW = "tensorflow"
    CUSTOM = "custom"


def parse_version_ref(ref: str) -> tuple[str, str | None]:
    """``"m@2"`` → ("m", "2"); ``"m@prod"`` → ("m", "prod"); ``"m"`` → ("m", None)."""
    model, sep, version = ref.partition("@")
    return model, (version if sep else None)


def _unique(values: list[str], what: str) -> list[str]:
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"{what} must be unique: {', '.join(duplicates)} given twice")
    return values


class PredictSchema(StrictModel):
    """What a version expects and returns (JSON Schema fragments), for callers and consoles."""

    instance: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    feature_names: list[str] | None = None


class ModelUpload(StrictModel):
    """A new model, or with ``parent_model`` a new version of an existing one.

    The artifact is ``artifact_uri`` (a directory or ``.tar.gz`` on the server's disk or any
    fsspec URI) or, on ``POST /models:upload``, an uploaded ``.tar.gz``.
    """

    display_name: Name | None = None
    framework: Framework
    artifact_uri: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    parent_model: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    description: Description | None = None
    labels: Labels = Field(default_factory=dict)
    version_aliases: list[Alias] = Field(default_factory=list, max_length=32)
    is_default_version: bool = True
    predict_schema: PredictSchema | None = None

    # display_name-or-parent_model is checked by the service, which can name the field.

    @field_validator("version_aliases")
    @classmethod
    def _unique_aliases(cls, value: list[str]) -> list[str]:
        return _unique(value, "version_aliases")


class ModelUpdate(StrictModel):
    description: Description | None = None
    labels: Labels | None = None

    @model_validator(mode="after")
    def _something(self) -> ModelUpdate:
        if self.description is None and self.labels is None:
            raise ValueError("nothing to update: give description and/or labels")
        return self


class ModelVersionUpdate(StrictModel):
    """``aliases`` is the version's full alias list: new ones move here from other versions;
    ones left out are removed (except ``default``, which can only move)."""

    aliases: Annotated[list[Alias], Field(max_length=32)] | None = None
    labels: Labels | None = None
    description: Description | None = None

    @field_validator("aliases")
    @classmethod
    def _unique_aliases(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _unique(value, "aliases")

    @model_validator(mode="after")
    def _something(self) -> ModelVersionUpdate:
        if self.aliases is None and self.labels is None and self.description is None:
            raise ValueError("nothing to update: give aliases, labels and/or description")
        return self


class AliasChanges(StrictModel):
    """Vertex-style merge: ``"prod"`` moves prod to this version, ``"-staging"`` removes it."""

    aliases: Annotated[
        list[Annotated[str, Field(pattern=r"^-?" + ALIAS_PATTERN.removeprefix("^"))]],
        Field(min_length=1, max_length=32),
    ]

    @field_validator("aliases")
    @classmethod
    def _unique_aliases(cls, value: list[str]) -> list[str]:
        _unique([a.removeprefix("-") for a in value], "aliases")
        return value


class ModelVersion(LenientModel):
    id: str  # globally unique (what endpoints deploy); version_id is per model
    model_id: str
    model: str  # the model's display_name
    version_id: str
    framework: Framework
    artifact_uri: str  # the registry's own copy
    source_uri: str | None = None
    aliases: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    description: str | None = None
    predict_schema: PredictSchema | None = None
    sha256: str
    size_bytes: int
    created_at: datetime
    updated_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version_id}"


class Model(LenientModel):
    id: str
    display_name: str
    project: str = "default"
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    default_version_id: str
    latest_version_id: str
    version_count: int
    frameworks: list[Framework] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
