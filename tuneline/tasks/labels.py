"""The classification task's label set: class-id order, and the one check every stage makes.

Data stages quarantine rows whose label is not in the set; model stages refuse an artifact made
for another label set (a model trained on [ham, spam] cannot be calibrated, compressed, gated or
reported against [ham, spam, phishing]). Both messages name the params key, the file and the fix,
so the check is written once here instead of once per stage. No torch import: the data stages'
DVC deps stay free of training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from tuneline.errors import UserError
from tuneline.params import ClassificationParams

KEY = "classification.labels"


class LabelError(UserError, ValueError):
    """Labels in a file or an artifact do not match classification.labels."""


@dataclass(frozen=True)
class LabelSet:
    """The label set in class-id order (index i is the head's output i)."""

    names: tuple[str, ...]

    @classmethod
    def of(cls, task: ClassificationParams) -> "LabelSet":
        return cls(tuple(task.labels))

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, label: object) -> bool:
        return label in self.names

    @property
    def list(self) -> list[str]:
        return list(self.names)

    def unknown(self, values: Iterable) -> list[str]:
        """Sorted distinct values that are not labels of the set."""
        return sorted({str(v) for v in values} - set(self.names))

    def not_allowed(self, label: object) -> str:
        """The quarantine reason for one row's label."""
        return f"label {label!r} not in {KEY} {self.list}"

    def ids(self, values: Sequence, where: object) -> np.ndarray:
        """Class ids of label strings; a label outside the set stops with the file and the fix."""
        unknown = self.unknown(values)
        if unknown:
            raise LabelError(f"{where}: labels {unknown[:5]} are not in {KEY} {self.list}; rerun the data "
                             f"stages (dvc repro) or add them to {KEY}")
        index = {lab: i for i, lab in enumerate(self.names)}
        return np.array([index[v] for v in values], dtype=np.int64)

    def require(self, found: Sequence[str], artifact: object, fix: str) -> None:
        """Stop unless `artifact` (a model folder, a metrics file) was made for exactly this set, in order."""
        if list(found) != self.list:
            raise LabelError(f"{artifact} was made for labels {list(found)} but {KEY} is {self.list}; {fix}")
