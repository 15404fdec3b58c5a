"""Read a Llama-family GGUF file: config, dequantized weights (in HF names), tokenizer.

llama.cpp's converter permutes the rows of attn_q/attn_k from Hugging Face's rotate-half
RoPE layout into interleaved pairs; `unpermute_rope` undoes that so one native model
serves GGUF files and HF directories alike. Weights are dequantized to float32, then cast
to the requested dtype by the caller.

The file is read by `GGUFHeader` (models/gguf_header.py), not by the `gguf` package's
GGUFReader: that one wraps every token and merge string of the tokenizer in numpy views,
which takes seconds for a 49k-token vocabulary. F32, F16, Q4_0, Q4_1 and Q8_0 tensors are
dequantized in torch with the `gguf` package's arithmetic, bit for bit
(tests/test_model.py compares the two); other types go through `gguf.quants`.

Building a tokenizer from GGUF metadata through transformers is slow (seconds, for the
default model too), so the converted tokenizer is cached under the user cache directory,
keyed by the file's resolved path, size and modification time (`file_key`). The cached
directory is read back by our own `SavedTokenizer` (models/tokenizer.py), so a warm run does
not import transformers at all; only the first run's conversion does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import torch

from specdec.config import ModelConfig
from specdec.models.gguf_header import GGUFHeader
from specdec.models.tokenizer import SavedTokenizer, UnsupportedTokenizer

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")

GGUF_TO_HF = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def cache_dir() -> Path:
    root = os.environ.get("SPECDEC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "specdec"
    )
    return Path(root)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def unpermute_rope(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Interleaved (llama.cpp) rows -> rotate-half (HF) rows, per head; w [H*D, ...]."""
    rows = w.shape[0]
    return (
        w.reshape(num_heads, rows // num_heads // 2, 2, *w.shape[1:])
        .transpose(1, 2)
        .reshape(w.shape)
    )


def _field(reader, key: str, default=None):
    if isinstance(reader, GGUFHeader):
        return reader.metadata.get(key, default)
    f = reader.fields.get(key)  # a gguf.GGUFReader
    if f is None:
        return default
    return f.contents()


def read_config(reader, path: Path) -> ModelConfig:
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{path}: GGUF architecture {arch!r} is not Llama-family "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )

    def get(name: str, default=None):
        value = _field(reader, f"{arch}.{name}", default)
        if value is None:
            raise ValueError(f"{path}: GGUF metadata lacks {arch}.{name}")
        return value

    tensor_names = {t.name for t in reader.tensors}
    hidden = int(get("embedding_length"))
    num_heads = int(get("attention.head_count"))
    num_kv_heads = int(get("attention.head_count_kv", num_heads))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab = _field(reader, f"{arch}.vocab_size") or (len(tokens) if tokens else None)
    if vocab is None:
        raise ValueError(f"{path}: GGUF metadata has neither {arch}.vocab_size nor a token list")
    rope_scaling = None
    scale_type = _field(reader, f"{arch}.rope.scaling.type")
    if scale_type == "linear":
        rope_scaling = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    return ModelConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length")),
        num_layers=int(get("block_count")),
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=int(_field(reader, f"{arch}.attention.key_length") or hidden // num_heads),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=rope_scaling,
        tie_word_embeddings="output.weight" not in tensor_names,
        attention_bias="blk.0.attn_q.bias" in tensor_names,
        max_position_embeddings=int(get("context_length", 2048)),
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_ids=(int(eos),) if eos is not None else (),
        architecture=arch,
    )


def read_state_dict(header: GGUFHeader, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Dequantized float32 weights under Hugging Face's parameter names."""
    state: dict[str, torch.Tensor] = {}
    for t in header.tensors:
        weight = header.dequantize(t)
        parts = t.name.split(".")
        if parts[0] == "blk":
            layer, kind, suffix = parts[1], parts[2], parts[3]
            if kind not in GGUF_TO_HF:
                raise ValueError(f"unexpected GGUF tensor {t.name}")
            if kind == "attn_q":
                weight = unpermute_rope(weight, config.num_heads)
            elif kind == "attn_k":
                weight = unpermute_rope(weight, config.num_kv_heads)
            name = f"model.layers.{layer}.{GGUF_TO_HF[kind]}.{suffix}"
        elif t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        elif t.name == "output.weight":
            name = "lm_head.weight"
        elif t.name == "rope_freqs.weight":
            continue  # llama3 frequency factors; recomputed from the config
        else:
            raise ValueError(f"unexpected GGUF tensor {t.name}")
        state[name] = weight
    return state


def file_key(path: Path) -> str:
    """A cache key for a file: its resolved path, size and modification time (a hash of them),
    so an edited or replaced file gets a new key without hashing its contents."""
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()


def load_gguf_tokenizer(path: Path, key: str | None = None, header: GGUFHeader | None = None):
    """Fast tokenizer from GGUF metadata, converted once and cached under `key`
    (default `file_key(path)`)."""
    key = key or file_key(path)
    cached = cache_dir() / "tokenizers" / key[:32]
    if (cached / "tokenizer.json").exists():
        return _load_cached_tokenizer(cached)
    status("converting the GGUF tokenizer (once per model file)")
    tokenizer = _convert_gguf_tokenizer(path, header or GGUFHeader(path))
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    tokenizer.save_pretrained(str(tmp))
    (tmp / "specdec_source.json").write_text(json.dumps({"gguf": str(path), "key": key}))
    try:
        tmp.replace(cached)
    except OSError:  # another process cached it first
        shutil.rmtree(tmp, ignore_errors=True)
    return _load_cached_tokenizer(cached)  # the warm runs' class from the first run on


def _convert_gguf_tokenizer(path: Path, header: GGUFHeader):
    """transformers' tokenizer for a GGUF file. AutoTokenizer first reads the model's config
    through gguf.GGUFReader (slow: every tokenizer string becomes numpy views) only to pick
    the class, which for a byte-level BPE vocabulary ("gpt2") of the supported architectures
    is transformers' tokenizers-backed class; that class converts the vocabulary itself with
    transformers' lighter reader. The files both save are the same, byte for byte
    (tests/test_default_model.py checks the default model's). Other vocabularies take AutoTokenizer."""
    if header.metadata.get("tokenizer.ggml.model") == "gpt2" and header.metadata.get("general.architecture") in SUPPORTED_ARCHITECTURES:
        try:
            from transformers.tokenization_utils_tokenizers import TokenizersBackend
        except ImportError:  # another transformers layout
            pass
        else:
            return TokenizersBackend.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)


def _load_cached_tokenizer(cached: Path):
    """Our `SavedTokenizer` for a directory save_pretrained wrote, which it serves exactly as
    transformers would (tests/test_tokenizer.py); else transformers' class, without AutoTokenizer
    where the directory names the tokenizers-backed class (AutoTokenizer imports the model
    machinery, torch.distributed and more, at every load)."""
    try:
        return SavedTokenizer.from_dir(cached)
    except UnsupportedTokenizer as e:
        name = e.tokenizer_class
    if name == "TokenizersBackend":
        try:
            from transformers.tokenization_utils_tokenizers import TokenizersBackend
        except ImportError:  # another transformers layout
            pass
        else:
            return TokenizersBackend.from_pretrained(str(cached), local_files_only=True)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(cached), local_files_only=True)


def status(message: str) -> None:
    """One line on stderr for a step that takes more than a second (the first run's)."""
    print(f"specdec: {message}", file=sys.stderr, flush=True)


def load_gguf(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], object]:
    try:
        header = GGUFHeader(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e
    config = read_config(header, path)
    state = read_state_dict(header, config)
    tokenizer = load_gguf_tokenizer(path, header=header)
    return config, state, tokenizer
