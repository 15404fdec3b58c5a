"""Load a target or draft: the embedded default model, a GGUF file, or an HF directory.

    load_model(path=None, dtype="float32", device="cpu") -> LoadedModel

Llama-family weights go to the native model; other HF architectures go through the
transformers adapter. A missing or malformed path raises an error that names the path
and says what is missing. Nothing is fetched from the network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from specdec.config import ModelConfig
from specdec.models.convert import native_state_dict
from specdec.models.default import default_model_path
from specdec.models.linear import pack_linears_for_cpu
from specdec.models.llama import LlamaModel
from specdec.models.native import native_attention_supported, native_linear_supported, start_native_build
from specdec.models.target import TargetModel

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BATCH_INVARIANT_CHOICES = ("auto", "on", "off")


def resolve_batch_invariant(choice: str | bool, dtype: str, quant: str = "none", device: str = "cpu", trees: bool = False) -> bool:
    """on/off as given; auto = on for CPU bfloat16/float16 and every quantized mode, where
    speculative greedy output drifts from plain output without it (benchmarks/
    batch_invariance.py, README). Its cost is the two-row padding of the linears whose
    one-row kernel differs (models/linear.py): small for plain bfloat16 decoding, next to
    nothing quantized, and speculative decoding gains more than it pays
    (benchmarks/batch_invariance.py measures it per mode). Dense float32: on where its linears
    run through the C kernel (invariant by construction, so free); off where they run
    through oneDNN or MKL (no drift seen there, and every such linear would need the
    padding, a larger cost). Off on CUDA (untested there). Tree
    drafts are batch-invariant where the C attention kernel runs (CPU bfloat16 and float32,
    models/native.py); elsewhere "auto" turns it off for them and "on" is an error."""
    if isinstance(choice, bool):
        return choice
    if choice not in BATCH_INVARIANT_CHOICES:
        raise ValueError(f"batch_invariant must be one of {', '.join(BATCH_INVARIANT_CHOICES)}, got {choice!r}")
    trees_ok = not trees or native_attention_supported(TORCH_DTYPES.get(dtype, torch.float16), device)
    if choice != "auto":
        if choice == "on" and not trees_ok:
            raise ValueError(
                "tree drafts are batch-invariant only with the C attention kernel (CPU, bfloat16 or float32, "
                "a working C compiler); use chain drafts (--tree-nodes 0) or --batch-invariant off"
            )
        return choice == "on"
    free = dtype != "float32" or quant != "none" or native_linear_supported(torch.float32, device)
    return trees_ok and torch.device(device).type == "cpu" and free


@dataclass
class LoadedModel:
    model: TargetModel  # LlamaModel or TransformersAdapter (models/target.py)
    tokenizer: object
    config: ModelConfig
    path: Path
    load_seconds: float
    quant: str = "none"  # weight-only quantization: none, int8, int4 (models/quant.py)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_native(self) -> bool:
        return isinstance(self.model, LlamaModel)

    @property
    def batch_invariant(self) -> bool:
        return bool(getattr(self.model, "batch_invariant", False))


def resolve_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


class _SkipInit(TorchFunctionMode):
    """Skip `torch.nn.init` while building a model whose weights are loaded next: on the meta
    device the initializers do nothing useful, and the first one to run there imports
    torch._dynamo (through torch._refs), a large import, at every load."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init" and func.__name__.endswith("_"):
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def build_native(
    config: ModelConfig,
    hf_state: dict[str, torch.Tensor],
    dtype: torch.dtype,
    device: torch.device,
    max_seq_len: int | None,
) -> LlamaModel:
    state = native_state_dict(hf_state, config)
    with torch.device("meta"), _SkipInit():
        model = LlamaModel(config, max_seq_len)
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed.weight
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise ValueError(f"weights lack {leftover[:4]}")
    model.eval().requires_grad_(False)
    return pack_linears_for_cpu(model)


def load_model(
    path: str | Path | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    max_seq_len: int | None = None,
    quant: str = "none",
    batch_invariant: bool | str = "auto",
) -> LoadedModel:
    """batch_invariant: verify passes score every position bit for bit as decode steps do
    (models/attention.py, models/linear.py); True/False, or "auto"/"on"/"off"
    (`resolve_batch_invariant`). Native models only; "auto" is off for the others."""
    from specdec.models import gguf_file, hf_dir
    from specdec.models.quant import QUANT_MODES

    start = time.perf_counter()
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)}, got {dtype!r}")
    if quant not in QUANT_MODES:
        raise ValueError(f"quant must be one of {', '.join(QUANT_MODES)}, got {quant!r}")
    torch_dtype = TORCH_DTYPES[dtype]
    dev = resolve_device(device)
    path = Path(path).expanduser() if path else default_model_path()
    if not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist")
    if dev.type == "cpu":
        start_native_build()  # a first run's compile overlaps the reading below

    if path.is_dir():
        hf_config = hf_dir.read_hf_config(path)
        tokenizer = hf_dir.load_hf_tokenizer(path)
        if hf_dir.native_architecture(hf_config) is None:
            from transformers import AutoModelForCausalLM

            from specdec.models.adapter import TransformersAdapter

            if not list(path.glob("*.safetensors")) and not list(path.glob("*.bin")):
                raise FileNotFoundError(f"{path}: model directory has no weights (*.safetensors)")
            hf_model = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=torch_dtype, local_files_only=True
            ).to(dev)
            model = TransformersAdapter(hf_model, max_seq_len)
            config = model.config
        else:
            config = hf_dir.model_config_from_hf(hf_config, path)
            model = build_native(config, hf_dir.read_safetensors(path), torch_dtype, dev, max_seq_len)
    elif path.is_file():
        if not gguf_file.is_gguf(path):
            raise ValueError(
                f"{path}: not a GGUF file (no GGUF magic); pass a .gguf file or a model directory"
            )
        config, hf_state, tokenizer = gguf_file.load_gguf(path)
        model = build_native(config, hf_state, torch_dtype, dev, max_seq_len)
    else:
        raise ValueError(f"model path {path} is neither a file nor a directory")
    if quant != "none":
        apply_quant(model, quant, path)
    invariant = resolve_batch_invariant(batch_invariant, dtype, quant, device)
    if invariant and batch_invariant == "auto" and not isinstance(model, LlamaModel):
        invariant = False
    if invariant:
        if not isinstance(model, LlamaModel):
            raise ValueError(f"{path}: batch_invariant needs a Llama-family model on the native path")
        model.set_batch_invariant(True)
    return LoadedModel(model, tokenizer, config, path, time.perf_counter() - start, quant)


def apply_quant(model: torch.nn.Module, quant: str, path: Path) -> None:
    """Quantize a native model in place; GGUF Q4_0/Q4_1/Q8_0 blocks are repacked, not requantized."""
    from specdec.models.quant import gguf_groups, quantize_model

    if not isinstance(model, LlamaModel):
        raise ValueError(
            f"{path}: quant={quant!r} needs a Llama-family model on the native path; "
            f"this architecture runs through transformers"
        )
    source = gguf_groups(path, model.config) if path.is_file() else None
    quantize_model(model, quant, source=source)
