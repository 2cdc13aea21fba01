"""Metric gates: ``accuracy: ">= 0.9"`` in a step's ``gate:``.

A gate is parsed when the recipe is checked (a malformed expression is a recipe error) and
tested against the stage result's ``metrics`` after the stage ran. A failed gate is an outcome,
``rejected``, not an error.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_EXPR = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, metric: str, expression: object) -> Gate:
        """Parse ``">= 0.9"``; a bare number means ``>=`` that number."""
        if isinstance(expression, bool):
            raise ValueError(f'expected a comparison like ">= 0.9", got {expression!r}')
        if isinstance(expression, int | float):
            return cls(metric, ">=", float(expression))
        match = _EXPR.match(str(expression))
        if not match:
            raise ValueError(f'expected a comparison like ">= 0.9", got {expression!r}')
        return cls(metric, match.group(1), float(match.group(2)))

    def passes(self, value: float) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return _OPS[self.op](float(value), self.threshold)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


def check_gates(gates: list[Gate], metrics: Mapping[str, float]) -> list[str]:
    """Return one reason per failed gate (empty when all pass)."""
    reasons = []
    for gate in gates:
        if gate.metric not in metrics:
            reasons.append(f"{gate.metric} was not produced (gate {gate})")
        elif not gate.passes(metrics[gate.metric]):
            reasons.append(f"{gate.metric} = {metrics[gate.metric]:.4g}, gate {gate}")
    return reasons
