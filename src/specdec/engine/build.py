"""An `Engine` from a speculative config: the proposers for every row and, for auto K, the
calibrated cost surface. Every surface (LLM, the server, bench) builds its engine here."""

from __future__ import annotations

from specdec.config import SpeculativeConfig
from specdec.engine.engine import Engine
from specdec.engine.planner import CostSurface, load_or_calibrate
from specdec.proposers.factory import build_proposers


def build_engine(target, spec: SpeculativeConfig, max_seq_len: int, max_batch_size: int = 1,
                 cost: CostSurface | None = None, draft=None) -> Engine:
    """cost: a calibrated surface to copy for auto K (bench shares one across engines); None
    calibrates (or reads the cached one). draft: an already loaded draft model."""
    dtype = str(target.model.dtype).removeprefix("torch.")
    proposers = build_proposers(spec, target, dtype, str(target.model.device), max_seq_len, max_batch_size, draft)
    engine_cost = None
    if spec.enabled and spec.auto and spec.adaptive == "cost":
        source = cost if cost is not None else load_or_calibrate(target, spec, max_batch_size)
        engine_cost = CostSurface.from_dict(source.to_dict())  # each engine learns its own load and draft costs
    return Engine(target, proposers, spec, max_seq_len, engine_cost)
