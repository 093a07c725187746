"""Typed records of how a model was trained: what recipes and defences report, and how the report shows it.

Each record type is declared next to what produces it (steps in the engine, early stopping in
:mod:`workbench.recipes.early_stopping`, DP accounting in :mod:`workbench.recipes.dp_lora`, the
protection cost in :mod:`workbench.subjects.protect`) and registered here by its ``kind``. A trained
model's ``DONE.json`` and a row of ``results.json`` carry them under ``train.details[kind]``; the
report renders every record through :meth:`TrainingRecord.describe` without knowing any recipe by
name, and collects the run-level caveats of :meth:`TrainingRecord.note`.

A description is a list of :data:`Part`: plain text, or a :class:`Value` (a number or word with its
path inside the record, so the report can show where each number comes from).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class Value:
    value: Any  # a number or a short text
    path: str  # JSON pointer inside the record, e.g. "/best_step"
    fmt: str = "f3"  # "f3", "int", "g3", "signed" (numbers) or "text"


Part = str | Value


class TrainingRecord(BaseModel):
    """One kind of training detail. Subclasses set ``KIND``, ``COLUMN`` and ``ABSENT`` and describe themselves."""

    model_config = ConfigDict(extra="allow")
    KIND: ClassVar[str]  # key under train.details
    COLUMN: ClassVar[str]  # the report's column heading
    ABSENT: ClassVar[str] = "—"  # what the column says for a row without this record
    ORDER: ClassVar[int] = 50  # column order in the report

    def describe(self) -> list[Part]:
        """The report cell: text and values."""
        raise NotImplementedError

    def statement(self) -> list[Part]:
        """An optional paragraph under the training table (what this defence does and does not cover)."""
        return []

    @classmethod
    def note(cls) -> str | None:
        """A run-level caveat the report states whenever a row carries this record."""
        return None


RECORDS: dict[str, type[TrainingRecord]] = {}


def register_record(cls: type[TrainingRecord]) -> type[TrainingRecord]:
    if cls.KIND in RECORDS and RECORDS[cls.KIND] is not cls:
        raise ValueError(f"training record {cls.KIND!r} registered twice")
    RECORDS[cls.KIND] = cls
    return cls


# The modules whose import registers record types.
_DECLARING = ("workbench.recipes.engine", "workbench.recipes.early_stopping", "workbench.recipes.dp_lora",
              "workbench.subjects.protect")


def record_types() -> list[type[TrainingRecord]]:
    import importlib

    for name in _DECLARING:
        importlib.import_module(name)
    return sorted(RECORDS.values(), key=lambda c: c.ORDER)


def parse(details: dict) -> dict[str, TrainingRecord]:
    """``train.details`` → typed records (kinds this workbench does not know are left out)."""
    types = {c.KIND: c for c in record_types()}
    return {k: types[k].model_validate(v) for k, v in (details or {}).items() if k in types and isinstance(v, dict)}


def dump(*records: TrainingRecord | None) -> dict[str, dict]:
    """Records → ``train.details``."""
    return {r.KIND: r.model_dump(mode="json") for r in records if r is not None}
