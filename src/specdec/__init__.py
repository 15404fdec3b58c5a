"""specdec: lossless speculative decoding for Llama-family models."""

from specdec.api import LLM, CompletionOutput, RequestOutput
from specdec.config import EngineConfig, ModelConfig, SamplingParams, SpeculativeConfig
from specdec.engine.stats import SpecStats

__all__ = [
    "LLM",
    "CompletionOutput",
    "EngineConfig",
    "ModelConfig",
    "RequestOutput",
    "SamplingParams",
    "SpecStats",
    "SpeculativeConfig",
]
__version__ = "0.1.0"
