"""Shared fixtures: tiny random-weight models on CPU, and the real default model.

Tiny models are written as real Hugging Face directories (config.json, safetensors and
the default model's tokenizer) so every loader path is exercised. The vocabulary is the
default model's (49152 tokens) so prompts tokenize like real text.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from specdec.engine.planner import CostSurface

# under pytest-xdist (`-n N`) the workers share the cores: each takes its part, and so do the
# CLIs and servers the tests start (OMP_NUM_THREADS is inherited)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, os.cpu_count() or 1) // _WORKERS)
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)
torch.set_num_threads(_THREADS)

TINY_LLAMA = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
)


def write_tiny_model(
    path: Path, tokenizer, seed: int, arch: str = "llama", perturb_from: Path | None = None, **overrides
) -> Path:
    """A random tiny Llama/Qwen2 directory; perturb_from copies another and adds noise."""
    import transformers

    torch.manual_seed(seed)
    if perturb_from is not None:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(perturb_from))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
    else:
        kwargs = dict(TINY_LLAMA, vocab_size=len(tokenizer), **overrides)
        kwargs.setdefault("bos_token_id", tokenizer.bos_token_id)
        kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
        if arch == "qwen2":
            config = transformers.Qwen2Config(**kwargs)
            model = transformers.Qwen2ForCausalLM(config)
        else:
            config = transformers.LlamaConfig(**kwargs)
            model = transformers.LlamaForCausalLM(config)
        # Random init is near-uniform; sharper logits make greedy ties impossible in practice.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" not in name:
                    p.normal_(0.0, 0.08)
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def default_tokenizer():
    from specdec.models.default import default_model_path
    from specdec.models.gguf_file import file_sha256, load_gguf_tokenizer

    path = default_model_path()
    return load_gguf_tokenizer(path, file_sha256(path))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_tokenizer) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny_target"), default_tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_draft_dir(tmp_path_factory, default_tokenizer, tiny_model_dir) -> Path:
    """The tiny target with perturbed weights: a draft that agrees often but not always."""
    return write_tiny_model(
        tmp_path_factory.mktemp("tiny_draft"), default_tokenizer, seed=1, perturb_from=tiny_model_dir
    )


@pytest.fixture(scope="session")
def default_model():
    """The real default model (SmolLM2-135M-Instruct), float32, loaded once per session."""
    from specdec.models.loader import load_model

    return load_model(None, "float32", "cpu", 1024)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core box OpenMP's barriers make
    two threads far slower than one. A module takes it with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class FrozenCost(CostSurface):
    """A cost surface that does not follow measured step times: a test's auto K is then
    planned by the curve it gives, whatever this machine's load (the engine blends real step
    times into a CostSurface, which on a tiny model can rightly turn speculation off)."""

    def observe_forward(self, num_rows: int, num_tokens: int, seconds: float, weight: float = 0.2) -> None:
        pass
