"""Module names of the layout controller (the fixed order of model.md)."""

from __future__ import annotations

MODULE_NAMES: tuple[str, ...] = (
    "NoOp",
    "Find",
    "Transform",
    "Filter",
    "And",
    "Or",
    "Scene",
    "DescribeOne",
    "DescribeTwo",
)
