"""The generation loop, its statistics, detokenization and the speculation controller."""

from specdec.engine.engine import Engine, GenerationResult, StepOutput
from specdec.engine.stats import SpecStats

__all__ = ["Engine", "GenerationResult", "SpecStats", "StepOutput"]
