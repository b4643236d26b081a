"""The base of every scenario schema node, kept light (pydantic only).

It lives apart from :mod:`nmoe_sim.config` so that schema modules which
``nmoe_sim.config`` imports (the ``alignment:`` section) derive from the same base
without an import cycle; ``nmoe_sim.config`` re-exports it.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _takes_number_not_bool(annotation: Any) -> bool:
    """Whether a field accepts int or float but not bool (so a YAML true/false is a typo).

    Looks through Optional/Union (``int | None``, ``Optional[float]``, ``int | Literal[...]``).
    """
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        return bool not in members and any(m in (int, float) for m in members)
    return False


class Strict(BaseModel):
    """Base of every schema node: unknown keys are errors, every float is finite (no
    ``.inf`` or ``.nan``, at any depth of a field), and parsed configs are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads `rounds: true` as 1; in a scenario that is a typo.
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _takes_number_not_bool(field.annotation):
            raise ValueError("expected a number, not true/false")
        return value
