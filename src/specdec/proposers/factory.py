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


def build_proposer(
    spec: SpeculativeConfig, target: LoadedModel, dtype: str, device: str, max_seq_len: int
) -> Proposer | None:
    if spec.method == "none":
        return None
    if spec.method == "ngram":
        from specdec.proposers.ngram import NgramProposer

        return NgramProposer(spec.ngram_min, spec.ngram_max)
    if spec.method == "draft":
        from specdec.proposers.draft_model import DraftModelProposer, check_tokenizers

        draft = resolve_draft(spec.draft_model, target, dtype, device, max_seq_len)
        check_tokenizers(target.tokenizer, draft.tokenizer, target.config.vocab_size, draft.config.vocab_size)
        return DraftModelProposer(draft, max_seq_len)
    if spec.method == "eagle":
        return build_eagle(spec, target, dtype, max_seq_len)
    if spec.method == "hybrid":
        from specdec.proposers.hybrid import HybridProposer
        from specdec.proposers.ngram import NgramProposer

        ngram = NgramProposer(spec.ngram_min, spec.ngram_max)
        return HybridProposer(ngram, build_eagle(spec, target, dtype, max_seq_len), graft=spec.graft)
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
    from specdec.models.linear import pack_linears_for_cpu
    from specdec.models.loader import TORCH_DTYPES
    from specdec.train.export import load_head

    if not target.is_native:
        raise ValueError(f"--speculative {spec.method} needs a native Llama-family target, {target.name} runs through transformers")
    path = spec.draft_model
    if path is None:
        if not is_default_model(target.path):
            raise ValueError(f"{spec.method} drafts need an EAGLE head for {target.name} (an EAGLE head ships only for the "
                             "default model): --draft-model DIR, or serve's --speculative-draft-model-path DIR")
        path = DEFAULT_EAGLE_HEAD
    # On CPU the head runs in bfloat16 whatever the target's dtype: drafting reads its ~9M
    # weights once per draft token, and its precision cannot change what verification accepts.
    head_dtype = torch.bfloat16 if target.model.device.type == "cpu" else TORCH_DTYPES[dtype]
    return pack_linears_for_cpu(load_head(path, target, head_dtype))
