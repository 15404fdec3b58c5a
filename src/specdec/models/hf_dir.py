"""Read a local Hugging Face model directory: config.json, *.safetensors, tokenizer files.

Llama-family architectures become a `ModelConfig` and a state dict for the native model;
anything else is left to the transformers adapter. Nothing is fetched from a hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from specdec.config import ModelConfig

NATIVE_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
}


def read_hf_config(path: Path) -> dict:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{path}: model directory has no config.json")
    try:
        return json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path}: malformed JSON ({e})") from e


def native_architecture(hf_config: dict) -> str | None:
    for arch in hf_config.get("architectures") or []:
        if arch in NATIVE_ARCHITECTURES:
            return NATIVE_ARCHITECTURES[arch]
    return None


def model_config_from_hf(hf_config: dict, path: Path) -> ModelConfig:
    try:
        hidden = hf_config["hidden_size"]
        num_heads = hf_config["num_attention_heads"]
        eos = hf_config.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
        arch = native_architecture(hf_config) or "llama"
        # transformers >= 5 writes rope_parameters (theta included); older configs
        # write rope_theta and rope_scaling.
        rope = dict(hf_config.get("rope_parameters") or {})
        rope_theta = hf_config.get("rope_theta") or rope.pop("rope_theta", 10000.0)
        rope.pop("rope_theta", None)
        rope_scaling = hf_config.get("rope_scaling") or (
            rope if rope.get("rope_type", "default") != "default" else None
        )
        return ModelConfig(
            vocab_size=hf_config["vocab_size"],
            hidden_size=hidden,
            intermediate_size=hf_config["intermediate_size"],
            num_layers=hf_config["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=hf_config.get("num_key_value_heads") or num_heads,
            head_dim=hf_config.get("head_dim") or hidden // num_heads,
            rms_norm_eps=hf_config.get("rms_norm_eps", 1e-6),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            tie_word_embeddings=hf_config.get("tie_word_embeddings", False),
            attention_bias=hf_config.get("attention_bias", arch == "qwen2"),
            max_position_embeddings=hf_config.get("max_position_embeddings", 2048),
            bos_token_id=hf_config.get("bos_token_id"),
            eos_token_ids=eos_ids,
            architecture=arch,
        )
    except KeyError as e:
        raise ValueError(f"{path}/config.json lacks the field {e.args[0]!r}") from e


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: model directory has no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as e:  # safetensors raises its own error types per version
            raise ValueError(f"{f}: unreadable safetensors file ({e})") from e
    return state


def load_hf_tokenizer(path: Path):
    from transformers import AutoTokenizer

    if not any((path / name).exists() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise FileNotFoundError(
            f"{path}: model directory has no tokenizer files (tokenizer.json, tokenizer.model or vocab.json)"
        )
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
