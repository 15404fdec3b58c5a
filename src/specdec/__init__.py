"""specdec: lossless speculative decoding for Llama-family models.

The public names load on first use (PEP 562), so `import specdec.cli` and every `--help`
run without importing torch."""

from importlib import import_module

_EXPORTS = {
    "LLM": "specdec.api",
    "CompletionOutput": "specdec.api",
    "RequestOutput": "specdec.api",
    "EngineConfig": "specdec.config",
    "ModelConfig": "specdec.config",
    "SamplingParams": "specdec.config",
    "SpeculativeConfig": "specdec.config",
    "SpecStats": "specdec.engine.stats",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'specdec' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
