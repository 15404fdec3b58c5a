"""Logprobs in OpenAI's two layouts, from the engine's per-token entries.

The engine reports, per committed token, {"token_id", "logprob", "top": [(token_id, logprob)]}
(the target's log-probabilities after the request's logits processors, as plain decoding
computes them). Chat wants `content[] {token, logprob, bytes, top_logprobs[]}`; legacy
completions want parallel lists `tokens, token_logprobs, top_logprobs ({token: logprob}),
text_offset`. Logprobs of -inf are written as -9999.0 (LOGPROB_FLOOR).
"""

from __future__ import annotations

from pydantic import BaseModel

# JSON has no -inf: a logprob of -inf is written as -9999.0,
# as vLLM's OpenAI server writes it (max(logprob, -9999.0) in its chat and completion layouts).
LOGPROB_FLOOR = -9999.0


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]


class CompletionLogprobs(BaseModel):
    """The legacy completions layout; text_offset counts characters of the choice's text."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character a byte-level BPE token spells each byte with."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), ord("\u00ff") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class TokenText:
    """A token id's text and exact bytes (a byte-level token may hold part of a character,
    whose text is then U+FFFD while its bytes are exact)."""

    def __init__(self, tokenizer) -> None:
        from tokenizers.decoders import ByteLevel

        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.byte_decoder = _byte_decoder() if backend is not None and isinstance(backend.decoder, ByteLevel) else None
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token_id: int) -> tuple[str, list[int]]:
        hit = self._cache.get(token_id)
        if hit is None:
            text = self.tokenizer.decode([token_id])
            piece = self.tokenizer.convert_ids_to_tokens(token_id) if self.byte_decoder else None
            if piece and all(c in self.byte_decoder for c in piece):
                raw = [self.byte_decoder[c] for c in piece]
            else:
                raw = list(text.encode("utf-8"))
            hit = self._cache[token_id] = (text, raw)
        return hit


def _logprob(value: float) -> float:
    return max(float(value), LOGPROB_FLOOR)


def chat_logprobs(entries: list[dict], token_text: TokenText) -> ChatLogprobs:
    """The engine's per-token entries {token_id, logprob, top: [(id, logprob)]} as chat's layout."""
    def top(token_id: int, logprob: float) -> TopLogprob:
        text, raw = token_text(token_id)
        return TopLogprob(token=text, logprob=_logprob(logprob), bytes=raw)

    return ChatLogprobs(content=[
        TokenLogprob(**top(e["token_id"], e["logprob"]).model_dump(), top_logprobs=[top(t, lp) for t, lp in e["top"]])
        for e in entries
    ])


def completion_logprobs(entries: list[dict], token_text: TokenText, offset: int) -> CompletionLogprobs:
    """The same entries as the completions layout; offset is where the first token's text starts."""
    out = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    for e in entries:
        text = token_text(e["token_id"])[0]
        out.tokens.append(text)
        out.token_logprobs.append(_logprob(e["logprob"]))
        out.top_logprobs.append({token_text(t)[0]: _logprob(lp) for t, lp in e["top"]})
        out.text_offset.append(offset)
        offset += len(text)
    return out
