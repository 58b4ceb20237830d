"""Result objects: plain dataclasses of numpy arrays with JSON in and out (no torch)."""

from lninspect.results.stats import (
    AcrossToken,
    GradsResult,
    GradStats,
    InputInfo,
    InputStats,
    ModelInfo,
    NormDescription,
    NormsResult,
    NormStats,
    OrderStats,
    OutputStats,
    ParamGrad,
    Spike,
    StatsResult,
    WeightSummary,
)

__all__ = [
    "AcrossToken",
    "GradStats",
    "GradsResult",
    "InputInfo",
    "InputStats",
    "ModelInfo",
    "NormDescription",
    "NormStats",
    "NormsResult",
    "OrderStats",
    "OutputStats",
    "ParamGrad",
    "Spike",
    "StatsResult",
    "WeightSummary",
]
