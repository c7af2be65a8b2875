"""Small fitted models as registry artifacts, for tests that upload and deploy them, and
hostile ones for the tests that check the control plane never loads what a user uploads."""

from __future__ import annotations

import os
import pickle
import textwrap
from pathlib import Path
from typing import Any

import joblib
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

__all__ = [
    "exploit_pickle",
    "hostile_custom_predictor_dir",
    "hostile_pickle_dir",
    "sklearn_model_dir",
]


def sklearn_model_dir(root: Path, seed: int) -> Path:
    """``root/m<seed>/model.joblib``: a LogisticRegression over 4 features, seeded."""
    X, y = make_classification(60, 4, random_state=seed)
    directory = root / f"m{seed}"
    directory.mkdir()
    joblib.dump(LogisticRegression().fit(X, y), directory / "model.joblib")
    return directory


class _ShellOnLoad:
    """Pickles to ``os.system(command)``: unpickling it runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


def exploit_pickle(marker: Path) -> bytes:
    """A well-formed pickle (protocol 4) whose loading creates ``marker`` through a shell.
    Making it runs nothing: ``pickle.dumps`` only records the call."""
    return pickle.dumps(_ShellOnLoad(f"touch {marker}"), protocol=4)


def hostile_pickle_dir(root: Path, name: str, marker: Path, file: str = "model.pkl") -> Path:
    directory = root / name
    directory.mkdir()
    (directory / file).write_bytes(exploit_pickle(marker))
    return directory


def hostile_custom_predictor_dir(root: Path, name: str, marker: Path) -> Path:
    """A custom predictor whose module, once imported, creates ``marker`` (shell and file)."""
    directory = root / name
    directory.mkdir()
    (directory / "raydeck_predictor.json").write_text('{"class": "predictor:Owned"}')
    (directory / "predictor.py").write_text(
        textwrap.dedent(
            f"""
            import os
            os.system("touch {marker}")
            open({str(marker)!r}, "a").close()


            class Owned:
                def predict(self, instances):
                    return [0 for _ in instances]
            """
        )
    )
    return directory
