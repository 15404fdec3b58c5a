"""Prometheus metrics for the server, in one registry of its own.

Request, token and latency metrics are observed as they happen. The speculative
counters are not kept here: a collector reads them at scrape time from the batch
engine's aggregate `SpecStats` (the one definition of the spec metrics), under vLLM's
names: `specdec_spec_decode_num_drafts`, `..._num_draft_tokens`,
`..._num_accepted_tokens` and `..._num_accepted_tokens_per_pos{position}` (0-based);
and, for proposers that name their draft classes (hybrid: `ngram:n`, `eagle`), the same
three counters `..._by_class{draft_class}`.
Inter-token latency is per token: a step that emits n tokens after dt seconds records
dt / n, n times (so speculation shows up as lower latency, not as bursts).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from specdec.engine.stats import SpecStats

TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


class SpecCollector:
    """Live gauges and the speculative counters, read when Prometheus scrapes."""

    def __init__(self, stats: Callable[[], SpecStats], num_waiting: Callable[[], int], num_running: Callable[[], int]) -> None:
        self.stats, self.num_waiting, self.num_running = stats, num_waiting, num_running

    def collect(self):
        waiting = GaugeMetricFamily("specdec_num_requests_waiting", "Requests queued, not yet running.")
        waiting.add_metric([], self.num_waiting())
        running = GaugeMetricFamily("specdec_num_requests_running", "Requests in the running batch.")
        running.add_metric([], self.num_running())
        yield waiting
        yield running
        s = self.stats()
        for name, value, doc in (
            ("num_drafts", s.num_drafts, "Verify steps that carried at least one draft token."),
            ("num_draft_tokens", s.num_draft_tokens, "Draft tokens proposed."),
            ("num_accepted_tokens", s.num_accepted_tokens, "Draft tokens accepted."),
        ):
            family = CounterMetricFamily(f"specdec_spec_decode_{name}", doc)
            family.add_metric([], value)
            yield family
        per_pos = CounterMetricFamily(
            "specdec_spec_decode_num_accepted_tokens_per_pos", "Accepted draft tokens by draft position.", labels=["position"]
        )
        for i, n in enumerate(list(s.accepted_per_position)):
            per_pos.add_metric([str(i)], n)
        yield per_pos
        # per draft class (proposers that name theirs: ngram:n, eagle), [drafts, tokens, accepted]
        by_class = dict(s.by_class)
        for i, (name, doc) in enumerate((
            ("num_drafts_by_class", "Verify steps with a draft, by draft class."),
            ("num_draft_tokens_by_class", "Draft tokens proposed, by draft class."),
            ("num_accepted_tokens_by_class", "Draft tokens accepted, by draft class."),
        )):
            family = CounterMetricFamily(f"specdec_spec_decode_{name}", doc, labels=["draft_class"])
            for draft_class, counts in sorted(by_class.items()):
                family.add_metric([draft_class], counts[i])
            yield family


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("specdec_requests", "Finished requests by HTTP status (499: client went away).", ["status"], registry=r)
        self.prompt_tokens = Counter("specdec_prompt_tokens", "Prompt tokens of admitted requests.", registry=r)
        self.prompt_tokens_shared = Counter(
            "specdec_prompt_tokens_shared", "Prompt tokens not prefilled again: another row with the same prompt "
            "(a request's other choice) had just prefilled them.", registry=r)
        self.generation_tokens = Counter("specdec_generation_tokens", "Generated tokens.", registry=r)
        self.ttft = Histogram("specdec_time_to_first_token_seconds", "Arrival to first token.", buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("specdec_inter_token_latency_seconds", "Seconds per generated token after the first.", buckets=ITL_BUCKETS, registry=r)

    def attach(self, collector: SpecCollector) -> None:
        self.registry.register(collector)

    def request_done(self, status: int) -> None:
        self.requests.labels(status=str(status)).inc()

    def observe_tokens(self, num_tokens: int, seconds: float) -> None:
        self.generation_tokens.inc(num_tokens)
        for _ in range(num_tokens):
            self.itl.observe(seconds / num_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
