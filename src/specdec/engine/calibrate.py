"""Cost calibration for adaptive K, and the controller a speculative config asks for.

The verify cost curve t_verify(K) (one target forward over K+1 tokens; K = 0 is a plain
decode step) is measured on the actual model, device, dtype and thread count at start-up
and cached as JSON under the user cache directory, so later starts skip it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

import torch

from specdec.config import SpeculativeConfig
from specdec.engine.controller import (
    BucketedController,
    ConfidencePruner,
    CostAwareController,
    CostModel,
    FixedController,
    HeuristicController,
    fit_verify_curve,
)
from specdec.models.gguf_file import cache_dir
from specdec.sampling import greedy

CALIBRATION_CONTEXT = 256  # prefix length the verify passes attend to
# Part of the cache key: bump it when the forward's kernels change what a pass costs, so
# no stale curve is read (2: bfloat16 blocked linears and folded invariant attention;
# 3: quantized models back on per-query attention; 4: the C attention kernel and
# padding only the linears whose one-row kernel differs; 5: the C kernel's blocked scores and
# OpenMP split; 6: float32 linears through MKL on Intel CPUs; 7: float32 linears through the
# C kernel, csrc/matmul.c; 8: AMX bfloat16 linears, C argmax and SwiGLU; 9: the decoder
# stack in one C call, csrc/layers.c; 10: float32 many-row linears prefetch the next panel).
KERNELS_VERSION = 10


def cost_key(loaded, max_k: int) -> str:
    path = loaded.path
    stat = path.stat() if path.is_file() else (path / "config.json").stat()
    parts = [
        f"kernels={KERNELS_VERSION}",
        str(path.resolve()),
        str(stat.st_size),
        str(int(stat.st_mtime)),
        str(loaded.model.dtype),
        str(loaded.model.device),
        str(torch.get_num_threads()),
        torch.__version__,
        str(max_k),
        str(calibration_context(loaded.model, max_k)),
        str(getattr(loaded, "quant", "none")),
        f"invariant={getattr(loaded, 'batch_invariant', False)}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def calibration_context(model, max_k: int) -> int:
    """CALIBRATION_CONTEXT, shortened when the model's context window cannot hold it plus a draft."""
    context = min(CALIBRATION_CONTEXT, model.max_seq_len - max_k - 1)
    if context < 1:
        raise ValueError(
            f"max_seq_len {model.max_seq_len} is too short to calibrate drafts of {max_k} tokens; "
            "raise --max-model-len or lower the maximum draft length"
        )
    return context


@torch.inference_mode()
def measure_verify_seconds(model, max_k: int, repeats: int = 5) -> list[float]:
    """Fastest seconds of a forward over K+1 tokens after a CALIBRATION_CONTEXT prefix.

    The minimum, not the median: on a shared machine the slow samples measure the
    neighbours, and a curve distorted by them mis-steers the controller for every later run.
    """
    context = calibration_context(model, max_k)
    cache = model.new_cache(1, context + max_k + 1)
    dev = model.device
    prefix = torch.arange(context, device=dev)[None] % 1000 + 100
    model(prefix, torch.arange(context, device=dev)[None], cache, logits_indices=slice(-1, None))
    times: dict[int, list[float]] = {k: [] for k in range(max_k + 1)}
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        for k in range(max_k + 1):
            ids = torch.full((1, k + 1), 200, device=dev)
            pos = torch.arange(context, context + k + 1, device=dev)[None]
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = model(ids, pos, cache)
            greedy(out.logits).tolist()  # what a verify step reads back
            times[k].append(time.perf_counter() - t)
            cache.truncate(context)
    fastest = [min(times[k][1:]) for k in range(max_k + 1)]
    return fit_verify_curve(list(range(max_k + 1)), fastest)


def calibration_size(spec: SpeculativeConfig) -> int:
    """Draft lengths the verify curve must cover: K's up to the maximum, and a tree's nodes."""
    return max(spec.max_speculative_tokens, spec.tree_nodes)


# A cached curve whose first point is this many times the same point measured now was
# calibrated while other work loaded the machine (a first start beside other jobs): it is
# measured again rather than left to steer every later start.
STALE_RATIO = 1.5


def cached_curve(path, refresh: bool, first_point, measure_first_point, measure) -> dict:
    """A cost curve's JSON: the one cached at path, else measure()'s, written there.

    A cached curve is measured again where it is stale (STALE_RATIO): first_point(data) is
    its one-token time, measure_first_point() that time now (the fastest of a few forwards,
    ~0.1 s). A machine busier now than at calibration keeps the cache: the idle curve is the
    one to plan with."""
    if path.exists() and not refresh:
        data = json.loads(path.read_text())
        now = measure_first_point()
        if first_point(data) <= STALE_RATIO * now:
            return data
        print(f"specdec: the cached cost curve {path.name} says {first_point(data) * 1e3:.1f} ms per plain step, "
              f"{now * 1e3:.1f} ms measured now: calibrating again", file=sys.stderr)
    data = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return data


def load_or_calibrate(loaded, max_k: int, refresh: bool = False) -> CostModel:
    path = cache_dir() / "costs" / f"{cost_key(loaded, max_k)}.json"
    return CostModel.from_dict(cached_curve(
        path, refresh, lambda data: data["verify_seconds"][0],
        lambda: measure_verify_seconds(loaded.model, 0, repeats=2)[0],
        lambda: CostModel(measure_verify_seconds(loaded.model, max_k)).to_dict()))


def make_controller(spec: SpeculativeConfig, cost: CostModel | None, cost_for):
    """The per-request controller: fixed K, transformers' heuristic, or cost-aware.

    cost_for(bucket) -> CostModel is each draft class's own cost model (the engine's: the
    calibrated curve cost, that class's measured draft cost, spec's tree_nodes)."""
    if not spec.auto:
        return FixedController(int(spec.num_speculative_tokens))
    if spec.adaptive == "heuristic":
        return HeuristicController(initial_k=4, max_k=spec.max_speculative_tokens)
    if cost is None:
        raise ValueError("adaptive K needs a calibrated cost model (Engine(cost_model=...))")
    max_k = min(spec.max_speculative_tokens, cost.max_k)
    return BucketedController(lambda bucket: CostAwareController(cost_for(bucket), max_k=max_k))


def prunes(spec: SpeculativeConfig) -> bool:
    """Whether drafts are pruned by their confidence: with the cost-aware auto K (the pruner
    plans with the same cost model), unless spec.prune is off. A fixed K verifies every drafted
    token. With pruning, the controller plans a tree's depth as a chain's (its verify term is
    a K-token pass, not all tree_nodes) and the pruner sizes the tree it gets."""
    return spec.prune and spec.auto and spec.adaptive == "cost"


def make_pruner(spec: SpeculativeConfig, cost: CostModel | None) -> ConfidencePruner | None:
    """The per-request confidence pruner, or None (`prunes`)."""
    if not prunes(spec) or cost is None:
        return None
    return ConfidencePruner(spec.max_speculative_tokens)  # a tree is at most K levels deep too
