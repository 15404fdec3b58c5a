"""The draft-model proposer: a smaller (or cheaper) model with the target's tokenizer.

The draft keeps its own KV cache. It remembers which token ids its cache holds, and on
each `propose` first rolls the cache back to the longest prefix it shares with the
committed sequence, then feeds the committed tokens it has not seen and drafts K tokens
autoregressively, sampling each from q = logits_to_probs(draft logits) with the request's
own transform (greedy: argmax, q not needed); when coupled, by Gumbel-max on the request's
position-keyed noise, so that it meets the target's own draw whenever q is close to p.

Worked example: committed [a b c], cache holds [a b]. propose(K=3) feeds [c] -> d1,
then d1 -> d2, d2 -> d3; the cache holds [a b c d1 d2]. The target accepts d1 and
resamples x: committed [a b c d1 x]. Next propose rolls the cache back to [a b c d1]
and feeds [x].
"""

from __future__ import annotations

import torch

from specdec.drafts import DraftProposal, SequenceState
from specdec.proposers.base import Proposer
from specdec.sampling import draw, greedy, logits_to_probs

# Strings whose token ids must agree between target and draft tokenizers.
TOKENIZER_PROBES = (
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b",
    "1234567890 3.14159",
    "naïve café, 東京, emoji 🙂",
    "  leading spaces\tand\ttabs\n\n",
)


def check_tokenizers(target_tokenizer, draft_tokenizer, target_vocab: int, draft_vocab: int) -> None:
    """Raise ValueError unless the draft can draft for the target token for token."""
    if target_vocab != draft_vocab:
        raise ValueError(f"draft vocab size {draft_vocab} != target vocab size {target_vocab}")
    for text in TOKENIZER_PROBES:
        t_ids = target_tokenizer.encode(text, add_special_tokens=False)
        d_ids = draft_tokenizer.encode(text, add_special_tokens=False)
        if t_ids != d_ids:
            raise ValueError(
                f"draft and target tokenizers disagree on {text!r}: target {t_ids[:8]}..., "
                f"draft {d_ids[:8]}...; drafting across tokenizers is not supported"
            )
    for attr in ("eos_token_id", "bos_token_id", "pad_token_id"):
        t_id, d_id = getattr(target_tokenizer, attr, None), getattr(draft_tokenizer, attr, None)
        if t_id is not None and d_id is not None and t_id != d_id:
            raise ValueError(f"draft {attr} {d_id} != target {attr} {t_id}")
    t_special = set(getattr(target_tokenizer, "all_special_tokens", []))
    for token in sorted(t_special):
        t_id = target_tokenizer.convert_tokens_to_ids(token)
        d_id = draft_tokenizer.convert_tokens_to_ids(token)
        if t_id != d_id:
            raise ValueError(f"special token {token!r}: target id {t_id} != draft id {d_id}")


class DraftModelProposer(Proposer):
    def __init__(self, draft, max_seq_len: int = 4096) -> None:
        """draft: a LoadedModel (native or adapter)."""
        self.draft = draft
        self.model = draft.model
        self.cache = self.model.new_cache(1, min(max_seq_len, getattr(self.model, "max_seq_len", max_seq_len)))
        self.cached_ids: list[int] = []
        self._num_checked = 0  # cached_ids[:_num_checked] are known to be committed tokens

    @torch.inference_mode()
    def start(self, state: SequenceState) -> None:
        self.cache.reset()
        self.cached_ids = []
        self._num_checked = 0
        # Prefill the draft with the prompt now, inside the engine's prefill: left to the first
        # propose, it lands in the first step's draft time and the planner reads
        # it as a per-token drafting cost, dear enough to keep K at 1 for the whole request.
        prompt = state.token_ids[:-1]  # the newest token is fed by propose
        if prompt and len(prompt) < self.cache.num_free:
            dev = self.model.device
            ids = torch.tensor([prompt], device=dev)
            self.model(ids, torch.arange(len(prompt), device=dev)[None], self.cache, logits_indices=slice(-1, None))
            self.cached_ids = list(prompt)
            self._num_checked = len(prompt)

    @torch.inference_mode()
    def propose(self, state: SequenceState, num_tokens: int, draft_class: int | None = None) -> DraftProposal:
        committed = state.token_ids
        self._rollback_to_common_prefix(committed)
        room = self.cache.num_free - (len(committed) - self.cache.length)
        num_tokens = min(num_tokens, room)
        dev = self.model.device
        params = state.params
        pending = committed[self.cache.length :]
        draft_ids: list[int] = []
        draft_probs: list[torch.Tensor] = []
        for i in range(num_tokens):
            start = self.cache.length
            ids = torch.tensor([pending], device=dev)
            positions = torch.arange(start, start + len(pending), device=dev)[None]
            logits = self.model(ids, positions, self.cache, logits_indices=slice(-1, None)).logits[:, -1]
            self.cached_ids.extend(pending)
            if params.greedy:
                token = int(greedy(logits[0]))
            else:
                q = logits_to_probs(logits, params.temperature, params.top_k, params.top_p, params.min_p)  # [1, V]
                token = int(draw(q, state.generator, state.noise, [len(committed) + i])[0])
                draft_probs.append(q[0])
            draft_ids.append(token)
            pending = [token]
        token_ids = torch.tensor([draft_ids], dtype=torch.long).reshape(1, len(draft_ids))
        probs = torch.stack(draft_probs)[None] if draft_probs else None  # [1, K, V]
        return DraftProposal(token_ids, probs)

    def observe(self, state: SequenceState, result) -> None:
        self._rollback_to_common_prefix(state.token_ids)

    def _rollback_to_common_prefix(self, committed: list[int]) -> None:
        n = min(len(self.cached_ids), len(committed) - 1)  # the newest token is always fed
        common = min(self._num_checked, n)
        while common < n and self.cached_ids[common] == committed[common]:
            common += 1
        if common < len(self.cached_ids):
            self.cache.truncate(common)
            del self.cached_ids[common:]
        self._num_checked = common
