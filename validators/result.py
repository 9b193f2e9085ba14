"""Result types shared by every check: one `CheckResult` per check, one `ValidationReport` per structure.

The JSON shape produced by `ValidationReport.as_dict()` is read by other tools
(evaluation, screening, the `crystalgen validate --json` output); keep it stable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The checks in reporting order; `as_dict` and the summary use these names.
CHECK_NAMES: tuple[str, ...] = ("distance", "lattice", "charge", "symmetry", "composition")

# JSON key of each check's measured value, chosen to say what the number is.
VALUE_KEYS: dict[str, str] = {
    "distance": "value",
    "lattice": "value",
    "charge": "value",
    "symmetry": "spacegroup",
    "composition": "value",
}


@dataclass(frozen=True)
class Intent:
    """What a generated structure was meant to be; every field is optional.

    spacegroup: intended international space-group number (1-230).
    formula: intended formula, e.g. "LiFePO4" or "Li4Fe4P4O16".
    exact: compare the formula exactly (same atom counts) rather than reduced.
    """

    spacegroup: int | None = None
    formula: str | None = None
    exact: bool = False


@dataclass
class CheckResult:
    """The verdict of one check.

    passed: True/False, or None when the check does not apply (e.g. no intended formula).
    value: the measured quantity (minimum distance in Å, volume in Å^3, space group, ...).
    details: further measured values and reasons, JSON-serialisable.
    """

    passed: bool | None
    value: Any = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def applicable(self) -> bool:
        return self.passed is not None

    def as_dict(self, value_key: str = "value") -> dict[str, Any]:
        out: dict[str, Any] = {"pass": self.passed, value_key: self.value}
        out.update(self.details)
        return out


@dataclass
class ValidationReport:
    """All checks for one structure; `passed` is True when every applicable check passed."""

    checks: dict[str, CheckResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks.values() if c.applicable)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pass": self.passed,
            "checks": {name: c.as_dict(VALUE_KEYS.get(name, "value")) for name, c in self.checks.items()},
        }

