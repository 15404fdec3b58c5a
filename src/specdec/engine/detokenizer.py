"""Incremental detokenization that never splits a multi-byte character, and stop strings.

Byte-level BPE tokens can end in the middle of a UTF-8 character; decoding such a prefix
yields U+FFFD. We decode a short window `tokens[prefix:]` and emit only the text past
`tokens[prefix:read]`, holding back while the window ends in U+FFFD.

Worked example: "é" = bytes C3 A9 split over tokens t1=[C3], t2=[A9]. After t1 the
window decodes to "\\ufffd": nothing is emitted and `read` stays. After t2 it decodes to
"é": the delta is "é", and `prefix` moves up to where `read` was.
"""

from __future__ import annotations


class Detokenizer:
    def __init__(self, tokenizer, stop: list[str] | None = None) -> None:
        self.tokenizer = tokenizer
        self.stop = stop or []
        self.token_ids: list[int] = []
        self.text = ""
        self.prefix = 0
        self.read = 0
        self.stopped = False
        # Text held back because it might be the start of a stop string.
        self._pending = ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token_ids: list[int]) -> str:
        """Append tokens and return the new, final text (possibly empty)."""
        if self.stopped:
            return ""
        self.token_ids.extend(token_ids)
        prefix_text = self._decode(self.token_ids[self.prefix : self.read])
        window = self._decode(self.token_ids[self.prefix :])
        if window.endswith("\ufffd") or len(window) <= len(prefix_text):
            return ""
        fresh = window[len(prefix_text) :]
        self.prefix, self.read = self.read, len(self.token_ids)
        return self._apply_stop(fresh)

    def flush(self) -> str:
        """At the end of generation: release text held back for stop-string matching."""
        if self.stopped:
            return ""
        out, self._pending = self._pending, ""
        self.text += out
        return out

    def _apply_stop(self, fresh: str) -> str:
        if not self.stop:
            self.text += fresh
            return fresh
        candidate = self._pending + fresh
        hits = [at for at in (candidate.find(s) for s in self.stop) if at >= 0]
        if hits:
            out = candidate[: min(hits)]
            self.text += out
            self._pending = ""
            self.stopped = True
            return out
        # Hold back the longest tail that is a prefix of some stop string.
        hold = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(candidate)), 0, -1):
                if candidate.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        out = candidate[: len(candidate) - hold]
        self._pending = candidate[len(candidate) - hold :]
        self.text += out
        return out
