"""Memory for target and draft weights plus their KV caches, from shapes alone.

    weights  = num_params * bytes_per_param(dtype)
    KV cache = 2 (K and V) * L * B * context * H_kv * D * bytes(kv_dtype)

A model is named by a local HF directory (config.json only), a GGUF file (metadata and
tensor shapes only; nothing is dequantized), or a parameter count with a layer shape.
No name means the embedded default model. Every weight counts at the chosen dtype
(norms and embeddings included; real quantizers keep some of them wider, a few percent
at most for Llama shapes). int4 adds one fp16 scale per group of g weights: g = 32 gives
4.5 bits per weight, g = 64 4.25, g = 128 4.125; formats that also store a per-group
minimum or zero point (llama.cpp's Q4_1, asymmetric GPTQ) add as much again.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

BYTES_PER_PARAM = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "int8": 1.0, "int4": 0.5}
FLOAT_DTYPES = ("float32", "bfloat16", "float16")
KV_DTYPES = ("float32", "bfloat16", "float16", "int8")
SCALE_BYTES = 2  # one fp16 scale per int4 group
DEFAULT_CONTEXT = 4096


@dataclass
class ModelShape:
    """What the estimate needs to know about one model."""

    name: str
    num_params: int
    num_layers: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool | None = None
    stored_bytes: int | None = None  # tensor bytes as stored in a GGUF file
    stored_types: str | None = None  # e.g. "Q4_1 x210, F32 x61, Q8_0 x1"


@dataclass
class ModelMemory:
    role: str  # "target" or "draft"
    shape: ModelShape
    dtype: str
    weight_bytes: int
    kv_dtype: str
    kv_bytes_per_token: int  # all layers, K and V, one sequence
    kv_bytes: int  # for batch x context


@dataclass
class MemoryEstimate:
    models: list[ModelMemory]
    batch: int
    context: int
    group_size: int

    @property
    def weight_bytes(self) -> int:
        return sum(m.weight_bytes for m in self.models)

    @property
    def kv_bytes(self) -> int:
        return sum(m.kv_bytes for m in self.models)

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(weight_bytes=self.weight_bytes, kv_bytes=self.kv_bytes, total_bytes=self.total_bytes)
        return d


def weight_bytes(num_params: int, dtype: str, group_size: int = 32) -> int:
    """Bytes for num_params weights at dtype; int4 pays an fp16 scale per group."""
    if dtype not in BYTES_PER_PARAM:
        raise ValueError(f"dtype must be one of {', '.join(BYTES_PER_PARAM)}, got {dtype!r}")
    if dtype == "int4":
        if group_size < 1:
            raise ValueError(f"int4 group size must be >= 1, got {group_size}")
        return math.ceil(num_params / 2) + SCALE_BYTES * math.ceil(num_params / group_size)
    return int(num_params * BYTES_PER_PARAM[dtype])


def kv_bytes_per_token(shape: ModelShape, kv_dtype: str) -> int:
    if kv_dtype not in KV_DTYPES:
        raise ValueError(f"KV dtype must be one of {', '.join(KV_DTYPES)}, got {kv_dtype!r}")
    return int(2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * BYTES_PER_PARAM[kv_dtype])


def estimate_memory(
    target: ModelShape,
    draft: ModelShape | None = None,
    dtype: str = "float32",
    draft_dtype: str | None = None,
    kv_dtype: str | None = None,
    batch: int = 1,
    context: int = DEFAULT_CONTEXT,
    group_size: int = 32,
) -> MemoryEstimate:
    """Weights and KV cache of the target (and draft). kv_dtype None: the weight dtype if it
    is a float type, else float16. draft_dtype None: dtype."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if context < 1:
        raise ValueError(f"context must be >= 1 token, got {context}")
    models = []
    for role, shape, dt in (("target", target, dtype), ("draft", draft, draft_dtype or dtype)):
        if shape is None:
            continue
        kv_dt = kv_dtype or (dt if dt in FLOAT_DTYPES else "float16")
        per_token = kv_bytes_per_token(shape, kv_dt)
        models.append(ModelMemory(
            role=role, shape=shape, dtype=dt, weight_bytes=weight_bytes(shape.num_params, dt, group_size),
            kv_dtype=kv_dt, kv_bytes_per_token=per_token, kv_bytes=per_token * batch * context,
        ))
    return MemoryEstimate(models=models, batch=batch, context=context, group_size=group_size)


# ---------------------------------------------------------------------------------------
# shapes from files and flags


def parse_param_count(text: str | int) -> int:
    """'135M', '1.7B', '7e9', '360_000_000' -> int."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9][0-9_,]*(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([kmbgt]?)\s*", str(text).lower())
    if not m:
        raise ValueError(f"parameter count must look like 135M, 1.7B or 7e9, got {text!r}")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}[m.group(2)]
    return int(round(float(m.group(1).replace("_", "").replace(",", "")) * scale))


def shape_from_params(
    num_params: int | str, num_layers: int, num_kv_heads: int, head_dim: int, name: str | None = None
) -> ModelShape:
    n = parse_param_count(num_params)
    for flag, value in (("--params", n), ("--layers", num_layers), ("--kv-heads", num_kv_heads),
                        ("--head-dim", head_dim)):
        if value is None or value < 1:
            raise ValueError(f"{flag} must be a positive number, got {value!r}")
    return ModelShape(name=name or f"{_count(n)} params", num_params=n, num_layers=num_layers,
                      num_kv_heads=num_kv_heads, head_dim=head_dim)


def shape_from_hf_dir(path: Path) -> ModelShape:
    """config.json only: the Llama-family field names (as the HF loader reads them)."""
    from specdec.models.hf_dir import model_config_from_hf, read_hf_config

    config = model_config_from_hf(read_hf_config(path), path)
    return ModelShape(name=path.name, num_params=config.num_params, num_layers=config.num_layers,
                      num_kv_heads=config.num_kv_heads, head_dim=config.head_dim,
                      tie_word_embeddings=config.tie_word_embeddings)


def _gguf_field(reader, key: str):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def shape_from_gguf(path: Path) -> ModelShape:
    """GGUF metadata under its architecture prefix (llama.block_count, ...); the parameter
    count is the sum of the tensors' element counts, so tied embeddings (no output.weight
    tensor) count once without a special case. Any architecture with those keys works."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # gguf raises assorted errors on truncated or foreign files
        raise ValueError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e
    arch = _gguf_field(reader, "general.architecture")
    if not arch:
        raise ValueError(f"{path}: GGUF metadata lacks general.architecture")

    def get(key: str, default=None):
        value = _gguf_field(reader, f"{arch}.{key}")
        if value is None and default is None:
            raise ValueError(f"{path}: GGUF metadata lacks {arch}.{key}")
        return default if value is None else value

    num_heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    tensor_names = {t.name for t in reader.tensors}
    counts: dict[str, int] = {}
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return ModelShape(
        name=path.name,
        num_params=sum(int(t.n_elements) for t in reader.tensors),
        num_layers=int(get("block_count")),
        num_kv_heads=int(get("attention.head_count_kv", num_heads)),
        head_dim=int(get("attention.key_length", hidden // num_heads)),
        tie_word_embeddings="output.weight" not in tensor_names,
        stored_bytes=sum(int(t.n_bytes) for t in reader.tensors),
        stored_types=", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])),
    )


def shape_from_path(path: str | Path | None) -> ModelShape:
    """A GGUF file, an HF directory, or (None) the embedded default model."""
    if path is None:
        from specdec.models.default import default_model_path

        return shape_from_gguf(default_model_path())
    path = Path(path).expanduser()
    if path.is_dir():
        return shape_from_hf_dir(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file or directory")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file (and not an HF model directory)")
    return shape_from_gguf(path)


# ---------------------------------------------------------------------------------------
# CLI


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def format_estimate(est: MemoryEstimate) -> str:
    header = ["model", "params", "weights", "KV/token", "KV cache", "total"]
    rows = []
    for m in est.models:
        rows.append([f"{m.role}: {m.shape.name}", _count(m.shape.num_params),
                     f"{_bytes(m.weight_bytes)} ({m.dtype})", f"{_bytes(m.kv_bytes_per_token)} ({m.kv_dtype})",
                     _bytes(m.kv_bytes), _bytes(m.weight_bytes + m.kv_bytes)])
    if len(est.models) > 1:
        rows.append(["total", _count(sum(m.shape.num_params for m in est.models)), _bytes(est.weight_bytes),
                     _bytes(sum(m.kv_bytes_per_token for m in est.models)), _bytes(est.kv_bytes),
                     _bytes(est.total_bytes)])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [f"memory estimate: batch {est.batch} x context {est.context} tokens", ""]
    lines.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
              for r in rows]
    lines += ["", "notes:"]
    for m in est.models:
        s = m.shape
        lines.append(f"  - {m.role}: {s.num_layers} layers, {s.num_kv_heads} KV heads x head dim {s.head_dim}"
                     + ("" if s.tie_word_embeddings is None
                        else f", {'tied' if s.tie_word_embeddings else 'untied'} embeddings"))
        if s.stored_bytes is not None:
            lines.append(f"    as stored in the GGUF file: {_bytes(s.stored_bytes)} ({s.stored_types})")
    lines.append("  - KV cache = 2 (K and V) x layers x batch x context x KV heads x head dim x bytes")
    if any(m.dtype == "int4" for m in est.models):
        g = est.group_size
        lines.append(f"  - int4: 0.5 B/weight + a 2-byte fp16 scale per group of {g} = "
                     f"{4 + 16 / g:.3g} bits/weight (g=32: 4.5, g=64: 4.25, g=128: 4.125); "
                     "a per-group min/zero point adds as much again")
    if any(m.dtype == "int8" for m in est.models):
        lines.append("  - int8: 1 B/weight; per-channel scales are negligible (Q8_0-style g=32 adds 6%)")
    lines.append("  - excludes activations, logits ([B, K+1, V] per verify pass) and runtime overhead")
    return "\n".join(lines)


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "memory",
        help="memory for target/draft weights and KV cache",
        description="Estimate weight and KV-cache memory from a model's shape (HF config.json, "
        "GGUF metadata, or --params with a layer shape). No weights are loaded.",
    )
    p.add_argument("--model", help="HF model directory or GGUF file (default: the embedded model)")
    p.add_argument("--draft-model", help="HF directory or GGUF file of the draft; 'self' = the target again (default: no draft)")
    p.add_argument("--params", help="target parameter count instead of --model, e.g. 135M, 1.7B (default: none)")
    p.add_argument("--layers", type=int, help="with --params: number of layers (default: none)")
    p.add_argument("--hidden", type=int, help="with --params and --heads: hidden size, head dim = hidden/heads (default: none)")
    p.add_argument("--heads", type=int, help="with --params: attention heads (default: --kv-heads)")
    p.add_argument("--kv-heads", type=int, help="with --params: key/value heads (default: --heads)")
    p.add_argument("--head-dim", type=int, help="with --params: head dimension (default: hidden/heads)")
    p.add_argument("--dtype", choices=list(BYTES_PER_PARAM), default="float32",
                   help="weight dtype (default float32, as the engine runs on CPU)")
    p.add_argument("--draft-dtype", choices=list(BYTES_PER_PARAM), help="draft weight dtype (default --dtype)")
    p.add_argument("--group-size", type=int, default=32, help="int4 quantization group size (default 32)")
    p.add_argument("--kv-dtype", choices=list(KV_DTYPES),
                   help="KV cache dtype (default: the weight dtype, float16 for int weights)")
    p.add_argument("--batch", type=int, default=1, help="sequences (default 1)")
    p.add_argument("--context", type=int, default=DEFAULT_CONTEXT,
                   help=f"tokens per sequence, prompt + output (default {DEFAULT_CONTEXT})")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
    return p


def _target_shape(args) -> ModelShape:
    if args.params is None:
        if any(v is not None for v in (args.layers, args.hidden, args.heads, args.kv_heads, args.head_dim)):
            raise ValueError("--layers/--hidden/--heads/--kv-heads/--head-dim go with --params")
        return shape_from_path(args.model)
    if args.model is not None:
        raise ValueError("give either --model or --params, not both")
    kv_heads = args.kv_heads or args.heads
    head_dim = args.head_dim
    if head_dim is None and args.hidden and args.heads:
        head_dim = args.hidden // args.heads
    if kv_heads is None or head_dim is None or args.layers is None:
        raise ValueError("--params needs --layers, --kv-heads (or --heads) and --head-dim "
                         "(or --hidden with --heads)")
    return shape_from_params(args.params, args.layers, kv_heads, head_dim)


def run(args) -> int:
    try:
        target = _target_shape(args)
        draft = None
        if args.draft_model == "self":
            draft = target
        elif args.draft_model is not None:
            draft = shape_from_path(args.draft_model)
        est = estimate_memory(target, draft, dtype=args.dtype, draft_dtype=args.draft_dtype,
                              kv_dtype=args.kv_dtype, batch=args.batch, context=args.context,
                              group_size=args.group_size)
    except (ValueError, FileNotFoundError) as e:
        print(f"specdec memory: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(est.to_dict(), indent=2) if args.json else format_estimate(est))
    return 0
