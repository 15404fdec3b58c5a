"""The engine's own C kernels (models/csrc), compiled at first use and called through ctypes.

    lib = native_library()          # None where no C compiler works (a warning says why)
    native_attention(q, k_cache, v_cache, start, mask) -> [1, T, H*D]
    native_attention_rows(q, k_cache, v_cache, offsets, starts, masks, mask_offsets) -> [N, H*D]

Why C: a decode step's attention through SDPA or batched matmuls is nearly all per-call
overhead at a few hundred tokens of context (the arithmetic is tiny), and making those calls
batch-invariant costs more again (models/attention.py). A C kernel that computes every row
by the same fixed steps is both faster and invariant by construction (csrc/attention.c;
`SPECDEC_NATIVE=0` runs the PyTorch paths, for comparing them with `specdec bench`).

Build: `$CC` (default `cc`) with -O3 -march=native -ffp-contract=off -fopenmp, retried
without -fopenmp, then without -march=native; -fopenmp's libgomp.so.1 resolves to the one
torch already loaded, so the kernel's threads are torch's own pool. The shared object is
cached in the user cache directory under a hash of the sources, the flags, the compiler
and the CPU's flags, so edits, upgrades and other CPUs rebuild. No Python headers and no
torch headers are needed, so a build is quick. SPECDEC_NATIVE=0 turns the kernels off
(the engine then runs its pure-PyTorch paths, which tests compare against).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from functools import lru_cache
from pathlib import Path

import torch

from specdec.models.gguf_file import cache_dir

SOURCES = tuple(sorted((Path(__file__).with_name("csrc")).glob("*.c")))  # one shared object
HEADERS = tuple(sorted((Path(__file__).with_name("csrc")).glob("*.h")))
ABI_VERSION = 10
FLAG_SETS = (
    ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fopenmp"],
    ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno"],
    ["-O3", "-ffp-contract=off", "-fno-math-errno"],
)

_c_void_p, _i64, _int, _float = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
_ATTENTION_ARGS = [_c_void_p, _i64, _i64, _c_void_p, _c_void_p, _i64, _c_void_p,
                   _int, _int, _int, _int, _int, _c_void_p, _int, _float, _c_void_p, _int]
_ATTENTION_ROWS_ARGS = [_c_void_p, _i64, _i64, _c_void_p, _c_void_p, _i64, _i64, _c_void_p,
                        _int, _c_void_p, _c_void_p, _c_void_p, _c_void_p, _int, _int, _int, _float, _c_void_p, _int]
_NORM_ARGS = [_c_void_p, _c_void_p, _c_void_p, _i64, _int, _float]


def native_enabled() -> bool:
    return os.environ.get("SPECDEC_NATIVE", "1") != "0"


def _compiler() -> str | None:
    cc = os.environ.get("CC", "cc")
    return shutil.which(cc)


def _cpuinfo(prefixes: tuple[str, ...]) -> str | None:
    """The value of the first /proc/cpuinfo line starting with one of prefixes (Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(prefixes):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC ..."), for reports and per-CPU caches."""
    return _cpuinfo(("model name",)) or platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """"GenuineIntel", "AuthenticAMD", ... ("" where /proc/cpuinfo does not say)."""
    return _cpuinfo(("vendor_id",)) or ""


def _cpu_signature() -> str:
    """The machine and its CPU flags: a -march=native build must not be loaded by another CPU
    sharing the cache directory (a home on a network drive), where it could fault."""
    flags = _cpuinfo(("flags", "Features")) or ""
    return f"{platform.machine()} {platform.processor()} {hashlib.sha256(flags.encode()).hexdigest()[:16]}"


def _build(cc: str, flags: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        cmd = [cc, *flags, "-fPIC", "-shared", "-o", str(out), *map(str, SOURCES), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.strip()}")
        os.replace(out, target)  # atomic: a concurrent process sees the old file or the new one


def _bind_linear(lib: ctypes.CDLL) -> None:
    lib.specdec_pack_f32.argtypes = [_c_void_p, _c_void_p, _i64, _i64, _int]
    lib.specdec_pack_f32.restype = _int
    lib.specdec_linear_f32.argtypes = [_c_void_p, _c_void_p, _c_void_p, _c_void_p, _i64, _i64, _i64, _int]
    lib.specdec_linear_f32.restype = _int
    lib.specdec_pack_bf16.argtypes = [_c_void_p, _c_void_p, _i64, _i64, _int]
    lib.specdec_pack_bf16.restype = _int
    lib.specdec_linear_bf16.argtypes = [_c_void_p, _c_void_p, _c_void_p, _c_void_p, _i64, _i64, _i64, _int]
    lib.specdec_linear_bf16.restype = _int
    lib.specdec_linear_bf16_amx.argtypes = []
    lib.specdec_linear_bf16_amx.restype = _int


def _bind_elementwise(lib: ctypes.CDLL) -> None:
    signatures = {
        "argmax": [_c_void_p, _i64, _i64, _c_void_p, _int],
        "top_labels": [_c_void_p, _i64, _i64, _int, _c_void_p, _c_void_p, _c_void_p, _int],
        "swiglu": [_c_void_p, _c_void_p, _i64, _i64, _int],
        "label_ce_forward": [_c_void_p, _i64, _i64, _int, _c_void_p, _c_void_p, _c_void_p, _c_void_p, _c_void_p, _int],
        "label_ce_backward": [_c_void_p, _i64, _i64, _int, _c_void_p, _c_void_p, _c_void_p, _c_void_p, _c_void_p, _int],
    }
    for kernel, args in signatures.items():
        for suffix in ("f32", "bf16"):
            fn = getattr(lib, f"specdec_{kernel}_{suffix}")
            fn.argtypes = args
            fn.restype = _int


_BUILD_LOCK = threading.Lock()


def start_native_build() -> None:
    """Build (or load) the kernels on a background thread, so that a first run's compile
    overlaps the model's loading; `native_library()` then waits for it."""
    if native_enabled():
        threading.Thread(target=native_library, name="specdec-native-build", daemon=True).start()


@lru_cache(maxsize=1)
def native_library() -> ctypes.CDLL | None:
    """The compiled kernels, or None (disabled, no compiler, or every build failed)."""
    with _BUILD_LOCK:  # one build, whichever thread asks first (start_native_build)
        return _native_library()


def _native_library() -> ctypes.CDLL | None:
    if not native_enabled():
        return None
    cc = _compiler()
    if cc is None:
        warnings.warn(f"no C compiler ({os.environ.get('CC', 'cc')}) found: the engine runs its slower pure-PyTorch attention", stacklevel=2)
        return None
    source = b"".join(path.read_bytes() for path in SOURCES + HEADERS)
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(source + " ".join([cc, *flags, _cpu_signature()]).encode()).hexdigest()[:24]
        target = cache_dir() / "kernels" / f"specdec_cpu-{key}.so"
        try:
            if not target.exists():
                print(f"specdec: compiling the C kernels into {target.parent} (once per CPU and source version)",
                      file=sys.stderr, flush=True)
                _build(cc, flags, target)
            lib = ctypes.CDLL(str(target))
            if lib.specdec_abi_version() != ABI_VERSION:
                raise RuntimeError(f"{target}: ABI version {lib.specdec_abi_version()}, expected {ABI_VERSION}")
        except (OSError, RuntimeError) as e:
            errors.append(str(e))
            continue
        for kernel, args in (("attention", _ATTENTION_ARGS), ("attention_rows", _ATTENTION_ROWS_ARGS), ("rms_norm", _NORM_ARGS)):
            for suffix in ("bf16", "f32"):
                fn = getattr(lib, f"specdec_{kernel}_{suffix}")
                fn.argtypes = args
                fn.restype = _int
        for kernel in ("attention", "attention_rows"):
            fn = getattr(lib, f"specdec_{kernel}_work_floats")
            fn.argtypes = [_int] * 6
            fn.restype = _i64
        _bind_linear(lib)
        _bind_elementwise(lib)
        lib.specdec_stack_forward.argtypes = [ctypes.POINTER(_Stack), _c_void_p, _int, _int, _c_void_p, _c_void_p,
                                              _c_void_p, _int, _c_void_p, _c_void_p, _i64, _i64, _c_void_p, _int]
        lib.specdec_stack_forward.restype = _int
        lib.specdec_stack_forward_rows.argtypes = [ctypes.POINTER(_Stack), _c_void_p, _int, _int, _c_void_p, _c_void_p,
                                                   _c_void_p, _c_void_p, _c_void_p, _c_void_p, _c_void_p, _c_void_p,
                                                   _i64, _i64, _i64, _c_void_p, _int]
        lib.specdec_stack_forward_rows.restype = _int
        return lib
    warnings.warn("building the C kernels failed; the engine runs its slower pure-PyTorch attention:\n" + "\n".join(errors), stacklevel=2)
    return None


MAX_HEAD_DIM = 256  # csrc/attention.c


def native_attention_supported(dtype: torch.dtype, device: torch.device | str, head_dim: int = 64) -> bool:
    return (
        torch.device(device).type == "cpu"
        and dtype in (torch.bfloat16, torch.float32)
        and head_dim <= MAX_HEAD_DIM
        and native_library() is not None
    )


def _mask_args(mask: torch.Tensor | None, t: int, start: int) -> tuple:
    """(pointer, W) of a [T, W] uint8 mask over the last W of the start + T slots, or (None, 0)."""
    if mask is None:
        return None, 0
    if mask.dtype != torch.uint8 or not mask.is_contiguous() or mask.dim() != 2 or mask.shape[0] != t:
        raise ValueError(f"the native mask must be a contiguous [T={t}, W] uint8 tensor, got {mask.dtype} {tuple(mask.shape)}")
    if not t <= mask.shape[1] <= start + t:
        raise ValueError(f"the native mask covers {mask.shape[1]} slots: it needs T={t} <= W <= start + T = {start + t}")
    return mask.data_ptr(), mask.shape[1]


def native_attention(
    q: torch.Tensor,  # [1, T, H, D] (a view is fine: last dim contiguous)
    k_cache: torch.Tensor,  # [1, H_kv, S_max, D], slots [0, start + T) written
    v_cache: torch.Tensor,
    start: int,
    mask: torch.Tensor | None = None,  # [T, W] uint8 contiguous over the last W slots (T <= W <= start + T); None: causal
    threads: int | None = None,  # default torch's; the result is the same for any count
) -> torch.Tensor:  # [1, T, H*D]
    lib = native_library()
    _, t, h, d = q.shape
    h_kv = k_cache.shape[1]
    if q.stride(3) != 1 or k_cache.stride(3) != 1 or k_cache.stride(2) != d or v_cache.stride() != k_cache.stride():
        raise ValueError("native attention needs a last-dim-contiguous query and [B, H_kv, S, D]-contiguous caches")
    fn = lib.specdec_attention_bf16 if q.dtype == torch.bfloat16 else lib.specdec_attention_f32
    out = torch.empty(1, t, h * d, dtype=q.dtype)
    threads = threads or torch.get_num_threads()
    work = torch.empty(lib.specdec_attention_work_floats(t, h, h_kv, d, start, threads), dtype=torch.float32)
    rc = fn(
        q.data_ptr(), q.stride(1), q.stride(2), k_cache.data_ptr(), v_cache.data_ptr(), k_cache.stride(1), out.data_ptr(),
        t, h, h_kv, d, start, *_mask_args(mask, t, start), 1.0 / d**0.5, work.data_ptr(), threads,
    )
    if rc != 0:
        raise RuntimeError(f"native attention rejected its arguments (code {rc}): T={t} H={h} H_kv={h_kv} D={d} start={start}")
    return out


def _ragged_layout(offsets: torch.Tensor, starts: torch.Tensor, n: int, cache_rows: int, cache_slots: int):
    """Checked contiguous (offsets, starts) of a ragged batch of n packed tokens, its row
    count, its largest row (new tokens) and the furthest slot it reaches, against a cache
    of cache_rows x cache_slots."""
    offsets, starts = offsets.contiguous(), starts.contiguous()
    b = starts.shape[0]
    if offsets.dtype != torch.int64 or starts.dtype != torch.int64 or offsets.shape[0] != b + 1 or int(offsets[-1]) != n:
        raise ValueError(f"offsets [B + 1] must end at N = {n} and starts be [B], both int64")
    if b > cache_rows:
        raise ValueError(f"{b} rows > the cache's {cache_rows}")
    num_new = offsets[1:] - offsets[:-1]
    max_keys = int((starts + num_new).max()) if b else 0
    if max_keys > cache_slots:
        raise ValueError(f"rows reach slot {max_keys}; the cache holds {cache_slots}")
    return offsets, starts, b, int(num_new.max()) if b else 0, max_keys


def _ragged_mask_args(masks: torch.Tensor | None, mask_offsets: torch.Tensor | None, offsets: torch.Tensor):
    """Checked (masks, mask_offsets) of a ragged batch's per-row tree masks, or (None, None)
    where every row is causal: row r's [n_r, n_r] uint8 mask starts at masks[mask_offsets[r]]
    (n_r = offsets[r + 1] - offsets[r]); mask_offsets[r] < 0 keeps row r causal."""
    if mask_offsets is None:
        return None, None
    b = offsets.shape[0] - 1
    mask_offsets = mask_offsets.contiguous()
    if mask_offsets.dtype != torch.int64 or mask_offsets.shape != (b,) or mask_offsets.device.type != "cpu":
        raise ValueError(f"mask_offsets must be [B = {b}] int64 on the CPU, got {mask_offsets.dtype} {tuple(mask_offsets.shape)}")
    if masks is None or masks.dtype != torch.uint8 or masks.dim() != 1 or not masks.is_contiguous() or masks.device.type != "cpu":
        raise ValueError("masks must be a contiguous 1-D uint8 CPU tensor (the rows' [n, n] masks, packed)")
    n = offsets[1:] - offsets[:-1]
    if bool(((mask_offsets >= 0) & (mask_offsets + n * n > masks.numel())).any()):
        raise ValueError(f"a row's [n, n] mask runs past the {masks.numel()} mask bytes")
    return masks, mask_offsets


def _ptr(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def native_attention_rows(
    q: torch.Tensor,  # [N, H, D] packed queries of a ragged batch (a view is fine: last dim contiguous)
    k_cache: torch.Tensor,  # [B', H_kv, S_max, D] with B' >= B, every row's new slots written
    v_cache: torch.Tensor,
    offsets: torch.Tensor,  # [B + 1] int64 CPU: row r's queries are q[offsets[r]:offsets[r + 1]]
    starts: torch.Tensor,  # [B] int64 CPU: tokens already in row r's cache (its first query's slot)
    masks: torch.Tensor | None = None,  # 1-D uint8 CPU: the rows' [n_r, n_r] tree masks, packed
    mask_offsets: torch.Tensor | None = None,  # [B] int64 CPU: row r's mask at masks[mask_offsets[r]]; < 0 / None: causal
    threads: int | None = None,  # default torch's; the result is the same for any count
) -> torch.Tensor:  # [N, H*D]
    """Attention of every row's new tokens over its own cache (csrc/attention.c): the whole
    cached prefix, and among the row's own new tokens causal or what its tree mask allows
    (mask[t, u] != 0: query t sees new token u). Each row bit for bit what `native_attention`
    gives it alone with that [n_r, n_r] mask (or none)."""
    lib = native_library()
    n, h, d = q.shape
    h_kv = k_cache.shape[1]
    if q.stride(2) != 1 or k_cache.stride(3) != 1 or k_cache.stride(2) != d or v_cache.stride() != k_cache.stride():
        raise ValueError("native attention needs a last-dim-contiguous query and [B, H_kv, S, D]-contiguous caches")
    offsets, starts, b, max_new, max_keys = _ragged_layout(offsets, starts, n, k_cache.shape[0], k_cache.shape[2])
    masks, mask_offsets = _ragged_mask_args(masks, mask_offsets, offsets)
    fn = lib.specdec_attention_rows_bf16 if q.dtype == torch.bfloat16 else lib.specdec_attention_rows_f32
    out = torch.empty(n, h * d, dtype=q.dtype)
    if n == 0:
        return out
    threads = threads or torch.get_num_threads()
    work = torch.empty(lib.specdec_attention_rows_work_floats(max_new, h, h_kv, d, max_keys, threads), dtype=torch.float32)
    rc = fn(
        q.data_ptr(), q.stride(0), q.stride(1), k_cache.data_ptr(), v_cache.data_ptr(), k_cache.stride(0), k_cache.stride(1),
        out.data_ptr(), b, offsets.data_ptr(), starts.data_ptr(), _ptr(masks), _ptr(mask_offsets), h, h_kv, d, 1.0 / d**0.5,
        work.data_ptr(), threads,
    )
    if rc != 0:
        why = ": a masked row with no cached prefix has a query that sees no key" if rc == 2 else ""
        raise RuntimeError(f"native ragged attention rejected its arguments (code {rc}){why}: B={b} H={h} H_kv={h_kv} D={d}")
    return out


def native_rms_norm_supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return x.dtype == weight.dtype and not (torch.is_grad_enabled() and weight.requires_grad) and _elementwise_supported(x)


def native_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) * weight over the last dim, float32 inside (csrc/norm.c)."""
    lib = native_library()
    x, weight = x.contiguous(), weight.contiguous()  # named: they must outlive the call
    out = torch.empty_like(x)
    fn = lib.specdec_rms_norm_bf16 if x.dtype == torch.bfloat16 else lib.specdec_rms_norm_f32
    dim = x.shape[-1]
    fn(x.data_ptr(), weight.data_ptr(), out.data_ptr(), x.numel() // dim, dim, eps)
    return out


def native_linear_supported(dtype: torch.dtype, device: torch.device | str = "cpu") -> bool:
    """Whether linears of this dtype run through csrc/matmul.c: CPU, and a build with its
    vector tiles (float32: AVX-512; bfloat16: AVX512_BF16)."""
    if dtype not in _LINEAR_VECTORIZED or torch.device(device).type != "cpu":
        return False
    lib = native_library()
    return lib is not None and bool(getattr(lib, _LINEAR_VECTORIZED[dtype])())


_LINEAR_VECTORIZED = {torch.float32: "specdec_linear_vectorized", torch.bfloat16: "specdec_linear_bf16_vectorized"}


def native_pack(weight: torch.Tensor, lib: ctypes.CDLL | None = None) -> torch.Tensor:
    """[N, K] -> the kernel's panels, zero past N (csrc/matmul.c): float32 [ceil(N / P), K, P],
    bfloat16 [ceil(N / P), ceil(K / 2), P, 2] (pairs of k side by side)."""
    lib = lib or native_library()
    weight = weight.detach().contiguous()
    n, k = weight.shape
    panel = lib.specdec_linear_panel()
    panels = (n + panel - 1) // panel
    if weight.dtype == torch.float32:
        packed, fn = torch.empty(panels, k, panel, dtype=weight.dtype), lib.specdec_pack_f32
    elif weight.dtype == torch.bfloat16:
        packed, fn = torch.empty(panels, (k + 1) // 2, panel, 2, dtype=weight.dtype), lib.specdec_pack_bf16
    else:
        raise TypeError(f"native linears take float32 or bfloat16 weights, got {weight.dtype}")
    if fn(weight.data_ptr(), packed.data_ptr(), n, k, torch.get_num_threads()) != 0:
        raise RuntimeError(f"packing a {n}x{k} weight failed")
    return packed


def native_unpack(packed: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """The inverse of native_pack (exact): panels -> [N, K]."""
    if packed.dim() == 4:  # bfloat16: [P, K / 2, panel, 2] -> [P, panel, K / 2, 2]
        packed = packed.permute(0, 2, 1, 3).reshape(-1, packed.shape[1] * 2)
        return packed[:out_features, :in_features].contiguous()
    return packed.permute(0, 2, 1).reshape(-1, in_features)[:out_features].contiguous()


def native_linear(
    x: torch.Tensor,  # [..., K], the packed weight's dtype
    packed: torch.Tensor,  # native_pack of the [N, K] weight
    out_features: int,
    in_features: int,
    bias: torch.Tensor | None = None,
    threads: int | None = None,  # default torch's; the result is the same for any count
    lib: ctypes.CDLL | None = None,
) -> torch.Tensor:  # [..., N]
    lib = lib or native_library()
    rows = x.reshape(-1, in_features).contiguous()  # named: it must outlive the call
    if rows.dtype != packed.dtype:
        raise TypeError(f"input is {rows.dtype}, the packed weight {packed.dtype}")
    fn = lib.specdec_linear_bf16 if packed.dtype == torch.bfloat16 else lib.specdec_linear_f32
    if bias is not None:
        bias = bias.detach().float().contiguous()  # bfloat16 widens exactly
    out = torch.empty(*x.shape[:-1], out_features, dtype=packed.dtype)
    rc = fn(
        rows.data_ptr(), packed.data_ptr(), bias.data_ptr() if bias is not None else None, out.data_ptr(),
        rows.shape[0], out_features, in_features, threads or torch.get_num_threads(),
    )
    if rc != 0:
        raise RuntimeError(f"native linear rejected its arguments (code {rc}): M={rows.shape[0]} N={out_features} K={in_features}")
    return out


def _row_kernel_supported(x: torch.Tensor) -> bool:
    """CPU rows of float32 or bfloat16 and the kernels built."""
    return x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float32) and x.numel() > 0 and native_library() is not None


def _elementwise_supported(x: torch.Tensor) -> bool:  # read-outs: no autograd through them
    return not (torch.is_grad_enabled() and x.requires_grad) and _row_kernel_supported(x)


native_argmax_supported = _elementwise_supported


def native_argmax(x: torch.Tensor, threads: int | None = None, lib: ctypes.CDLL | None = None) -> torch.Tensor:  # [..., V] -> [...] int64
    """torch.argmax over the last dim, same answer (first maximum; first NaN), from two vector
    passes per row (csrc/elementwise.c)."""
    lib = lib or native_library()
    rows = x.detach().contiguous()  # named: it must outlive the call
    n = rows.shape[-1]
    out = torch.empty(rows.shape[:-1], dtype=torch.int64)
    fn = lib.specdec_argmax_bf16 if rows.dtype == torch.bfloat16 else lib.specdec_argmax_f32
    if fn(rows.data_ptr(), rows.numel() // n, n, out.data_ptr(), threads or torch.get_num_threads()) != 0:
        raise RuntimeError(f"native argmax rejected a {tuple(x.shape)} tensor")
    return out


def native_top_labels(
    x: torch.Tensor, k: int, threads: int | None = None, lib: ctypes.CDLL | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # [..., V] -> [..., k] int32, [..., k] float32, [...] int64
    """The k largest values' indices (descending, ties by index), their softmax probabilities
    over the whole row, and the argmax (torch's answer), in one pass over each row
    (csrc/elementwise.c)."""
    lib = lib or native_library()
    rows = x.detach().contiguous()  # named: it must outlive the call
    n = rows.shape[-1]
    ids = torch.empty(*rows.shape[:-1], k, dtype=torch.int32)
    probs = torch.empty(*rows.shape[:-1], k, dtype=torch.float32)
    greedy = torch.empty(rows.shape[:-1], dtype=torch.int64)
    fn = lib.specdec_top_labels_bf16 if rows.dtype == torch.bfloat16 else lib.specdec_top_labels_f32
    if fn(rows.data_ptr(), rows.numel() // n, n, k, ids.data_ptr(), probs.data_ptr(), greedy.data_ptr(),
          threads or torch.get_num_threads()) != 0:
        raise RuntimeError(f"native top labels rejected a {tuple(x.shape)} tensor with k = {k}")
    return ids, probs, greedy


native_swiglu_supported = _elementwise_supported


def native_swiglu(gate_up: torch.Tensor, threads: int | None = None, lib: ctypes.CDLL | None = None) -> torch.Tensor:  # [..., 2I] -> [..., I]
    """silu(gate) * up for the fused [gate | up] projection, float32 inside, one rounding
    (csrc/elementwise.c); every element by the same steps, so rows never change each other."""
    lib = lib or native_library()
    rows = gate_up.detach().contiguous()
    two_inter = rows.shape[-1]
    if two_inter % 2:
        raise ValueError(f"swiglu needs an even last dim (gate | up), got {two_inter}")
    out = torch.empty(*rows.shape[:-1], two_inter // 2, dtype=rows.dtype)
    fn = lib.specdec_swiglu_bf16 if rows.dtype == torch.bfloat16 else lib.specdec_swiglu_f32
    if fn(rows.data_ptr(), out.data_ptr(), rows.numel() // two_inter, two_inter // 2, threads or torch.get_num_threads()) != 0:
        raise RuntimeError(f"native swiglu rejected a {tuple(gate_up.shape)} tensor")
    return out


native_label_ce_supported = _row_kernel_supported  # a training loss: logits that require grad are the point


def _label_ce_args(logits: torch.Tensor, ids: torch.Tensor, probs: torch.Tensor):
    rows, ids, probs = logits.detach().contiguous(), ids.contiguous(), probs.detach().float().contiguous()
    if rows.dim() != 2 or ids.dtype != torch.int64 or ids.shape != probs.shape or ids.dim() != 2 or ids.shape[0] != rows.shape[0]:
        raise ValueError(f"label cross-entropy takes logits [M, V] with int64 label ids and their probs [M, k]; got "
                         f"{tuple(logits.shape)}, {tuple(ids.shape)} {ids.dtype}, {tuple(probs.shape)}")
    return rows, ids, probs


def native_label_ce_forward(
    logits: torch.Tensor, ids: torch.Tensor, probs: torch.Tensor, threads: int | None = None, lib: ctypes.CDLL | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # [M, V], [M, k] int64, [M, k] -> lse [M], loss [M], argmax [M]
    """Per row: sum_j probs_j (logsumexp(row) - row[ids_j]), the logsumexp and the argmax
    (torch's answer), in two passes over each row (csrc/elementwise.c)."""
    lib = lib or native_library()
    rows, ids, probs = _label_ce_args(logits, ids, probs)
    m, n = rows.shape
    lse, loss = torch.empty(m), torch.empty(m)
    greedy = torch.empty(m, dtype=torch.int64)
    fn = lib.specdec_label_ce_forward_bf16 if rows.dtype == torch.bfloat16 else lib.specdec_label_ce_forward_f32
    if fn(rows.data_ptr(), m, n, ids.shape[1], ids.data_ptr(), probs.data_ptr(), lse.data_ptr(), loss.data_ptr(),
          greedy.data_ptr(), threads or torch.get_num_threads()) != 0:
        raise RuntimeError(f"native label cross-entropy rejected {tuple(logits.shape)} logits (label ids in 0..{n - 1}?)")
    return lse, loss, greedy


def native_label_ce_backward(
    logits: torch.Tensor, ids: torch.Tensor, probs: torch.Tensor, lse: torch.Tensor, grad: torch.Tensor,
    threads: int | None = None, lib: ctypes.CDLL | None = None,
) -> torch.Tensor:  # d loss / d logits [M, V] in the logits' dtype, for d total / d loss = grad [M]
    lib = lib or native_library()
    rows, ids, probs = _label_ce_args(logits, ids, probs)
    m, n = rows.shape
    lse, grad = lse.float().contiguous(), grad.detach().float().contiguous()
    if lse.shape != (m,) or grad.shape != (m,):
        raise ValueError(f"lse {tuple(lse.shape)} and grad {tuple(grad.shape)} must be [{m}]")
    dx = torch.empty_like(rows)
    fn = lib.specdec_label_ce_backward_bf16 if rows.dtype == torch.bfloat16 else lib.specdec_label_ce_backward_f32
    if fn(rows.data_ptr(), m, n, ids.shape[1], ids.data_ptr(), probs.data_ptr(), lse.data_ptr(), grad.data_ptr(),
          dx.data_ptr(), threads or torch.get_num_threads()) != 0:
        raise RuntimeError(f"native label cross-entropy backward rejected {tuple(logits.shape)} logits (label ids in 0..{n - 1}?)")
    return dx


# -- the decoder stack in one call (csrc/layers.c) -------------------------------------------


class _LayerWeights(ctypes.Structure):
    _fields_ = [(name, _c_void_p) for name in ("attn_norm", "wqkv", "wqkv_bias", "wo", "mlp_norm", "w13", "w2")]


class _Stack(ctypes.Structure):
    _fields_ = [(name, _int) for name in ("num_layers", "hidden", "heads", "kv_heads", "head_dim", "inter", "is_bf16")] + [
        ("eps", _float), ("scale", _float), ("layers", ctypes.POINTER(_LayerWeights))]


class NativeStack:
    """A Llama decoder stack run by one C call per forward (csrc/layers.c), bit for bit the
    PyTorch layers' result. It holds pointers into the model's tensors, and keeps them alive:
    build it again after the model's modules or parameters are replaced (LlamaModel does).

    `layers`: per layer (attn_norm, wqkv packed, wqkv float32 bias or None, wo, mlp_norm, w13, w2),
    every tensor contiguous on the CPU in the model dtype (the bias float32); attn_norm None is
    the identity (the EAGLE-1 head's layer).
    """

    def __init__(self, layers: list[tuple], hidden: int, heads: int, kv_heads: int, head_dim: int, inter: int,
                 eps: float, dtype: torch.dtype) -> None:
        self.lib = native_library()
        self._keep = [tensor for layer in layers for tensor in layer if tensor is not None]
        self._weights = (_LayerWeights * len(layers))(*[
            _LayerWeights(*[tensor.data_ptr() if tensor is not None else None for tensor in layer]) for layer in layers])
        self._stack = _Stack(len(layers), hidden, heads, kv_heads, head_dim, inter, int(dtype == torch.bfloat16),
                             eps, 1.0 / head_dim**0.5, self._weights)
        self.num_layers, self.hidden, self.head_dim, self.dtype = len(layers), hidden, head_dim, dtype

    def forward(
        self,
        x: torch.Tensor,  # [T, hidden] contiguous, the embeddings: updated in place to the last layer's output
        cos: torch.Tensor,  # [T, head_dim] contiguous, the RoPE rows at the tokens' positions
        sin: torch.Tensor,
        k_cache: torch.Tensor,  # [L, 1, H_kv, S, D] (a cache row view is fine)
        v_cache: torch.Tensor,
        start: int,
        mask: torch.Tensor | None = None,  # [T, W] uint8 contiguous over the last W slots; None = causal
        captures: dict[int, torch.Tensor] | None = None,  # layer i (1-based) -> [T, hidden] to fill
        threads: int | None = None,
    ) -> None:
        t = x.shape[0]
        if k_cache.stride(3) != self.head_dim or k_cache.stride(4) != 1 or v_cache.stride() != k_cache.stride():
            raise ValueError("the native stack needs [L, B, H_kv, S, D] caches with contiguous slots")
        if x.dtype != self.dtype or not x.is_contiguous() or x.shape[1] != self.hidden:
            raise ValueError(f"the native stack takes contiguous [T, {self.hidden}] {self.dtype} rows")
        slots = ctypes.c_void_p * self.num_layers
        capture = slots(*[captures[i + 1].data_ptr() if i + 1 in captures else None for i in range(self.num_layers)]) if captures else None
        rc = self.lib.specdec_stack_forward(
            ctypes.byref(self._stack), x.data_ptr(), t, start, cos.data_ptr(), sin.data_ptr(),
            *_mask_args(mask, t, start), k_cache.data_ptr(), v_cache.data_ptr(),
            k_cache.stride(0), k_cache.stride(2), capture, threads or torch.get_num_threads(),
        )
        if rc != 0:
            raise RuntimeError(f"the native decoder stack failed (code {rc}): T={t} start={start}")

    def forward_rows(
        self,
        x: torch.Tensor,  # [N, hidden] contiguous, the packed tokens' embeddings: updated in place
        cos: torch.Tensor,  # [N, head_dim] contiguous, the RoPE rows at the tokens' positions
        sin: torch.Tensor,
        k_cache: torch.Tensor,  # [L, B', H_kv, S, D], B' >= B
        v_cache: torch.Tensor,
        offsets: torch.Tensor,  # [B + 1] int64 CPU: row r's tokens are x[offsets[r]:offsets[r + 1]]
        starts: torch.Tensor,  # [B] int64 CPU: tokens already in row r's cache
        masks: torch.Tensor | None = None,  # 1-D uint8 CPU: the rows' [n_r, n_r] tree masks, packed
        mask_offsets: torch.Tensor | None = None,  # [B] int64 CPU: row r's mask at masks[mask_offsets[r]]; < 0 / None: causal
        captures: dict[int, torch.Tensor] | None = None,  # layer i (1-based) -> [N, hidden] to fill
        threads: int | None = None,
    ) -> None:
        """A ragged batch through the stack (csrc/layers.c), each row causal or under its tree
        mask (`native_attention_rows`): each row bit for bit `forward` on that sequence alone
        with that mask over its new tokens."""
        t = x.shape[0]
        if k_cache.stride(3) != self.head_dim or k_cache.stride(4) != 1 or v_cache.stride() != k_cache.stride():
            raise ValueError("the native stack needs [L, B, H_kv, S, D] caches with contiguous slots")
        if x.dtype != self.dtype or not x.is_contiguous() or x.shape[1] != self.hidden:
            raise ValueError(f"the native stack takes contiguous [N, {self.hidden}] {self.dtype} rows")
        offsets, starts, b, _, _ = _ragged_layout(offsets, starts, t, k_cache.shape[1], k_cache.shape[3])
        masks, mask_offsets = _ragged_mask_args(masks, mask_offsets, offsets)
        slots = ctypes.c_void_p * self.num_layers
        capture = slots(*[captures[i + 1].data_ptr() if i + 1 in captures else None for i in range(self.num_layers)]) if captures else None
        rc = self.lib.specdec_stack_forward_rows(
            ctypes.byref(self._stack), x.data_ptr(), t, b, offsets.data_ptr(), starts.data_ptr(), _ptr(masks),
            _ptr(mask_offsets), cos.data_ptr(), sin.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), k_cache.stride(0),
            k_cache.stride(1), k_cache.stride(2), capture, threads or torch.get_num_threads(),
        )
        if rc != 0:
            raise RuntimeError(f"the native decoder stack failed on a ragged batch (code {rc}; 1 includes a masked row "
                               f"with no cached prefix whose query sees no key): N={t} B={b}")
