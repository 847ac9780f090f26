"""The argument validators, written once: every public entry point checks its arguments
with these, so the same mistake gets the same message wherever it is made."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def is_number(value: Any) -> bool:
    """An int or float, but not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite_number(value: Any, name: str) -> float:
    """`value` as a float; TypeError unless a number, ValueError unless finite."""
    if not is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def finite_numbers(values: Any, name: str, *, positive: bool) -> list[float]:
    """A non-empty sequence of finite numbers, each > 0 (positive) or >= 0."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    out = list(values)
    if not out:
        raise ValueError(f"{name} is empty")
    for v in out:
        if not is_number(v) or not math.isfinite(v):
            raise ValueError(f"{name} must hold finite numbers, got {v!r}")
        if (v <= 0) if positive else (v < 0):
            raise ValueError(f"{name} values must be {'> 0' if positive else '>= 0'}, got {v!r}")
    return [float(v) for v in out]


def fraction(value: Any, name: str) -> float | None:
    """None, or a number in [0, 1]."""
    if value is None:
        return None
    if not is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return float(value)


def count(value: Any, name: str, *, minimum: int = 0, optional: bool = True) -> int | None:
    """An int >= minimum (a bool is not one), or None when optional."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an int >= {minimum}" + (" or None" if optional else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def flag(value: Any, name: str, *, optional: bool = False) -> bool | None:
    """A bool (or None when optional): 1, "yes" and the like are refused, not guessed at."""
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool{' or None' if optional else ''}, got {value!r}")
    return value


def module(value: Any, name: str = "model") -> nn.Module:
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def is_batches(value: Any) -> bool:
    """Something to iterate batches from: an iterable that is not a tensor or a string."""
    return isinstance(value, Iterable) and not isinstance(value, (torch.Tensor, str, bytes))


def batches(value: Any, name: str, what: str = "a DataLoader or another iterable of batches") -> Iterable:
    """`value` when it can give batches, else a TypeError naming `name`."""
    if not is_batches(value):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    return value
