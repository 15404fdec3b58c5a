"""Build the proposer a SpeculativeConfig names (the only place that knows the kinds)."""

from __future__ import annotations

from pathlib import Path

import torch

from specdec.config import DTYPES, SpeculativeConfig
from specdec.models.loader import LoadedModel, load_model
from specdec.proposers.base import Proposer

DEFAULT_EAGLE_HEAD = Path(__file__).resolve().parent.parent / "data" / "eagle" / "smollm2-135m"
SELF_QUANT = ("int8", "int4")  # self:int8 / self:int4: a weight-quantized copy of the target


def resolve_draft(spec_path: str, target: LoadedModel, dtype: str, device: str, max_seq_len: int) -> LoadedModel:
    """A draft model path, `self:DTYPE` for a copy of the target in another dtype, or
    `self:int8` / `self:int4` for a weight-quantized copy of the target (models/quant.py)."""
    if spec_path == "self" or spec_path.startswith("self:"):
        variant = spec_path.partition(":")[2] or dtype
        if variant in SELF_QUANT:
            return quantized_self_draft(target, variant, dtype, device, max_seq_len)
        if variant not in DTYPES:
            raise ValueError(f"draft {spec_path!r}: self:VARIANT takes one of {', '.join(DTYPES + SELF_QUANT)}")
        return load_model(target.path, variant, device, max_seq_len)
    return load_model(spec_path, dtype, device, max_seq_len)


def quantized_self_draft(target: LoadedModel, quant: str, dtype: str, device: str, max_seq_len: int) -> LoadedModel:
    """The target's weights quantized, sharing its tokenizer and (same dtype) its embedding."""
    draft = load_model(target.path, dtype, device, max_seq_len, quant=quant)
    draft.tokenizer = target.tokenizer
    if target.is_native and target.model.dtype == draft.model.dtype and target.model.device == draft.model.device:
        draft.model.embed = target.model.embed
    return draft


def build_proposers(spec: SpeculativeConfig, target: LoadedModel, dtype: str, device: str, max_seq_len: int,
                    num_rows: int = 1, draft: LoadedModel | None = None) -> list[Proposer | None]:
    """One proposer per engine row. What can be shared is loaded once: a draft model (each
    row keeps its own cache) and an EAGLE head (each row keeps its own head cache). draft:
    an already loaded draft model for method "draft" (else spec.draft_model is loaded)."""
    if num_rows < 1:
        raise ValueError(f"need at least one row, got {num_rows}")
    if spec.method == "none":
        return [None] * num_rows
    if spec.method == "ngram":
        from specdec.proposers.ngram import NgramProposer

        return [NgramProposer(spec.ngram_min, spec.ngram_max) for _ in range(num_rows)]
    if spec.method == "draft":
        from specdec.proposers.draft_model import DraftModelProposer, check_tokenizers

        if draft is None:
            draft = resolve_draft(spec.draft_model, target, dtype, device, max_seq_len)
        check_tokenizers(target.tokenizer, draft.tokenizer, target.config.vocab_size, draft.config.vocab_size)
        return [DraftModelProposer(draft, max_seq_len) for _ in range(num_rows)]
    if spec.method in ("eagle", "hybrid"):
        from specdec.proposers.hybrid import HybridProposer
        from specdec.proposers.ngram import NgramProposer

        head = build_eagle_head(spec, target, dtype)
        eagles = [build_eagle(spec, target, dtype, max_seq_len, head) for _ in range(num_rows)]
        if spec.method == "eagle":
            return eagles
        return [HybridProposer(NgramProposer(spec.ngram_min, spec.ngram_max), e, graft=spec.graft) for e in eagles]
    raise ValueError(f"speculative method {spec.method!r} is not available in this build")


def build_eagle(spec: SpeculativeConfig, target: LoadedModel, dtype: str, max_seq_len: int, head=None) -> Proposer:
    """An EagleProposer over `head` (one head may serve several proposers, each with its
    own cache: the batch engine's rows), else over `build_eagle_head`'s."""
    from specdec.proposers.eagle import EagleProposer, TreeConfig

    head = head if head is not None else build_eagle_head(spec, target, dtype)
    tree = TreeConfig(spec.tree_top_k, spec.tree_nodes) if spec.tree_nodes else None
    return EagleProposer(head, target.model, max_seq_len, tree)


def build_eagle_head(spec: SpeculativeConfig, target: LoadedModel, dtype: str):
    """--draft-model DIR (native or public EAGLE layout); none: the head shipped for the default model."""
    from specdec.models.default import is_default_model
    from specdec.models.linear import blocked_supported, pack_linears_for_cpu
    from specdec.models.loader import TORCH_DTYPES
    from specdec.models.head_io import load_head

    if not target.is_native:
        raise ValueError(f"--speculative {spec.method} needs a native Llama-family target, {target.name} runs through transformers")
    path = spec.draft_model
    if path is None:
        if not is_default_model(target.path):
            raise ValueError(f"{spec.method} drafts need an EAGLE head for {target.name} (an EAGLE head ships only for the "
                             "default model): --draft-model DIR, or serve's --speculative-draft-model-path DIR")
        path = DEFAULT_EAGLE_HEAD
    # On a CPU with bfloat16 kernels the head runs in bfloat16 whatever the target's dtype:
    # drafting reads its weights once per draft token, and its precision cannot change what
    # verification accepts. Without them bfloat16 is emulated and slower: the target's dtype.
    fast_bf16 = target.model.device.type == "cpu" and blocked_supported()
    head_dtype = torch.bfloat16 if fast_bf16 else TORCH_DTYPES[dtype]
    return pack_linears_for_cpu(load_head(path, target, head_dtype))
