"""Build the proposer a SpeculativeConfig names (the only place that knows the kinds)."""

from __future__ import annotations

from specdec.config import DTYPES, SpeculativeConfig
from specdec.models.loader import LoadedModel, load_model
from specdec.proposers.base import Proposer


def resolve_draft(spec_path: str, target: LoadedModel, dtype: str, device: str, max_seq_len: int) -> LoadedModel:
    """A draft model path, or `self:DTYPE` for a copy of the target in another dtype."""
    if spec_path == "self" or spec_path.startswith("self:"):
        variant = spec_path.partition(":")[2] or dtype
        if variant not in DTYPES:
            raise ValueError(f"draft {spec_path!r}: self:VARIANT takes one of {', '.join(DTYPES)}")
        return load_model(target.path, variant, device, max_seq_len)
    return load_model(spec_path, dtype, device, max_seq_len)


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
    raise ValueError(f"speculative method {spec.method!r} is not available in this build")
