"""Self-distillation data for draft heads: the target writes its own training set.

    build_dataset(target, conversations, out_dir, ...) -> DatasetInfo

1) generate  greedy responses to every prompt through the chat template, by the engine's
   + record  continuous batching (`generate_records`, `Engine(record=...)`), keeping at every position
             the target's hidden features at `feature_layers`, its argmax token
             (`target_ids[i]` = the prediction for token i+1) and its top-k next tokens
             with their probabilities (soft labels)
2) save      shards of concatenated sequences as safetensors, written as sequences finish
             (a rerun resumes):
               token_ids [N] int32, target_ids [N] int32, loss_mask [N] uint8
               (1 on response tokens), seq_offsets [S+1] int64, features [N, F] float16,
               label_ids [N, k] int32, label_probs [N, k] float16
             with F = D * len(feature_layers), layers concatenated in the order given
             (the engine's `state.target_hidden` order).

Labels at prompt positions (`prompt_labels`): the trainer takes a loss only where the next
token is the target's own (response tokens; `--prompt-weight 0`, the default), so by default
the LM head and the top-k run only from each prompt's last position on (prompts are a large
share of the tokens, so generation saves that work). The prompt positions
before that then hold label_ids 0, label_probs 0 and, as target_ids, the prompt's own next
token; `DatasetInfo.prompt_labels` says which kind a dataset is (a partial dataset of the
other kind does not resume: its fingerprint differs).

Prompts: a JSONL file of {"prompt": str}, {"messages": [{"role", "content"}...]} or ShareGPT
{"conversations": [{"from": "human"|"gpt"|"system", "value"}...]} (cut after the last
human turn; the target writes the reply).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from specdec.models.native import native_argmax_supported, native_top_labels

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
# the hand-written prompts, then the generated corpus (train/corpus.py): `--num-prompts N` takes a prefix
DEFAULT_PROMPTS = (DATA_DIR / "train_prompts.jsonl", DATA_DIR / "train_corpus.jsonl")


@dataclass
class DatasetInfo:
    feature_layers: list[int]
    hidden_size: int
    num_sequences: int
    num_tokens: int
    num_response_tokens: int
    shards: list[str]
    generate_seconds: float = 0.0
    record_seconds: float = 0.0
    prompt_labels: bool = True  # labels at every prompt position (module docstring), not only the last


def load_conversations(path: str | Path | tuple | list, limit: int | None = None) -> list[list[dict]]:
    """Messages ending with a user turn, one list per prompt; several files are read in order."""
    if isinstance(path, (tuple, list)):
        conversations: list[list[dict]] = []
        for p in path:
            conversations += load_conversations(p, None if limit is None else limit - len(conversations))
            if limit is not None and len(conversations) >= limit:
                break
        return conversations
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    conversations = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "prompt" in row:
            messages = [{"role": "user", "content": row["prompt"]}]
        elif "messages" in row:
            messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        elif "conversations" in row:
            messages = []
            for turn in row["conversations"]:
                role = SHAREGPT_ROLES.get(turn.get("from", ""))
                if role is None:
                    raise ValueError(f"{path}:{line_no}: unknown ShareGPT role {turn.get('from')!r}")
                messages.append({"role": role, "content": turn["value"]})
        else:
            raise ValueError(f"{path}:{line_no}: expected a 'prompt', 'messages' or 'conversations' field")
        while messages and messages[-1]["role"] != "user":
            messages.pop()  # the target writes the reply to the last user turn
        if not messages:
            raise ValueError(f"{path}:{line_no}: the conversation has no user turn")
        conversations.append(messages)
        if limit is not None and len(conversations) >= limit:
            break
    if not conversations:
        raise ValueError(f"prompt file {path} holds no prompts")
    return conversations


def encode_conversations(tokenizer, conversations: list[list[dict]]) -> list[list[int]]:
    from specdec.api import encode_prompt

    return [encode_prompt(tokenizer, messages=m) for m in conversations]


@dataclass
class _Row:
    """A sequence being generated by `generate_records`: what its steps recorded so far."""

    index: int  # into the prompt list
    token_ids: list[int]  # prompt + response so far
    num_prompt: int
    end: int | None = None  # response tokens kept: through the first EOS, or max_new_tokens
    features: list[torch.Tensor] = field(default_factory=list)  # [T_i, F] per step, positions in order
    label_ids: list[torch.Tensor] = field(default_factory=list)  # [T_i, k]
    label_probs: list[torch.Tensor] = field(default_factory=list)
    greedy: list[torch.Tensor] = field(default_factory=list)  # [T_i] the target's argmax
    num_features: int = 0


def _labels(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The target's k most likely next tokens, their probabilities and its greedy choice:
    [T, k] int32, [T, k] float16, [T] int32 (torch.argmax's answer, the engine's greedy token)."""
    if native_argmax_supported(logits):  # one C pass per row (csrc/elementwise.c)
        ids, probs, greedy = native_top_labels(logits, k)
        return ids, probs.to(torch.float16), greedy.to(torch.int32)
    logits = logits.float()
    top, ids = logits.topk(k, dim=-1)
    probs = torch.exp(top - torch.logsumexp(logits, -1, keepdim=True))  # softmax at the top k only
    return ids.to(torch.int32), probs.to(torch.float16), logits.argmax(-1).to(torch.int32)


@torch.inference_mode()
def generate_records(
    target,  # LoadedModel (native)
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    feature_layers: tuple[int, ...],
    num_labels: int = 8,
    on_record=None,  # called with (index, record) as each sequence finishes
    deadline: float | None = None,  # time.perf_counter() after which no prompt joins (running rows finish)
    prompt_labels: bool = False,  # False: the LM head only from each prompt's last position (module docstring)
) -> None:
    """Greedy responses with the target's features and top-k next-token labels, recorded
    while generating (no second pass).

    The engine's continuous batching (engine/engine.py), `batch_size` rows, with
    `Engine(record=...)`: every step hands over the features and logits of the tokens it
    fed. A response ends at its first EOS (kept) or after max_new_tokens; the row runs one
    step past that (EOS does not stop it) so that every token of prompt + response has a
    feature and a label. Records are dicts as `record_features` returns (target_ids: the
    greedy token), plus label_ids / label_probs. Past `deadline` the prompts still queued
    are dropped (the time budget of `specdec train-draft`).
    """
    from specdec.config import SamplingParams
    from specdec.engine.engine import Engine

    if not prompts:
        return
    eos = set(target.config.eos_token_ids) | {target.tokenizer.eos_token_id} - {None}
    max_len = max(len(p) for p in prompts) + max_new_tokens + 2
    engine = Engine(target, [None] * batch_size, max_seq_len=max_len, hidden_layers=tuple(feature_layers),
                    record="prompt" if prompt_labels else "outputs")
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens + 1, ignore_eos=True)
    queue = list(range(len(prompts)))[::-1]
    rows: dict[str, _Row] = {}
    bar = tqdm(total=len(queue), desc="generate", unit="seq")

    def observe(rid: str, out) -> None:
        row = rows[rid]
        feats = out.features.float()
        start = row.num_features
        row.features.append(feats)
        row.num_features += feats.shape[0]
        ids, probs, greedy = _labels(out.logits, num_labels)
        unlabelled = feats.shape[0] - ids.shape[0]  # the prompt positions before its last, by default
        if unlabelled:
            nexts = torch.tensor(row.token_ids[start + 1 : start + 1 + unlabelled], dtype=torch.int32)
            row.label_ids.append(ids.new_zeros(unlabelled, num_labels))
            row.label_probs.append(probs.new_zeros(unlabelled, num_labels))
            row.greedy.append(nexts)
        row.label_ids.append(ids)
        row.label_probs.append(probs)
        row.greedy.append(greedy)
        row.token_ids.extend(out.token_ids)
        if row.end is None:
            response = row.token_ids[row.num_prompt :]
            stops = [i for i, t in enumerate(response) if t in eos]
            if stops or len(response) >= max_new_tokens:
                row.end = min(stops[0] + 1 if stops else max_new_tokens, max_new_tokens)
        if row.end is not None and row.num_features >= row.num_prompt + row.end:
            engine.cancel(rid)
            del rows[rid]
            finish(row)

    def finish(row: _Row) -> None:
        t = row.num_prompt + row.end
        loss_mask = torch.zeros(t, dtype=torch.uint8)
        loss_mask[row.num_prompt :] = 1
        record = {
            "token_ids": torch.tensor(row.token_ids[:t], dtype=torch.int32),
            "target_ids": torch.cat(row.greedy)[:t],
            "loss_mask": loss_mask,
            "features": torch.cat(row.features)[:t].to(torch.float16),
            "label_ids": torch.cat(row.label_ids)[:t],
            "label_probs": torch.cat(row.label_probs)[:t],
        }
        bar.update(1)
        if on_record is not None:
            on_record(row.index, record)

    try:
        while queue or rows:
            if queue and deadline is not None and time.perf_counter() >= deadline:
                bar.total -= len(queue)
                bar.refresh()
                queue.clear()
            while queue and engine.num_free:
                i = queue.pop()
                rid = f"record-{i}"
                rows[rid] = _Row(i, list(prompts[i]), len(prompts[i]))
                _, first = engine.add(rid, prompts[i], params)
                observe(rid, first)
            for req, out in engine.step():
                observe(req.request_id, out)
    finally:
        bar.close()


@torch.inference_mode()
def record_features(
    target, prompt_ids: list[int], response_ids: list[int], feature_layers: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """One teacher-forced forward: features [T, F] float16 and target_ids [T]."""
    model = target.model
    ids = torch.tensor([prompt_ids + response_ids], device=model.device)
    t = ids.shape[1]
    cache = model.new_cache(1, t)
    out = model(ids, torch.arange(t, device=model.device)[None], cache, hidden_layers=feature_layers)
    features = torch.cat([out.hidden_states[i][0] for i in feature_layers], dim=-1).float()
    if features.abs().max() >= torch.finfo(torch.float16).max:
        raise ValueError(f"features at layers {feature_layers} overflow float16 storage")
    loss_mask = torch.zeros(t, dtype=torch.uint8)
    loss_mask[len(prompt_ids) :] = 1
    return {
        "token_ids": ids[0].to(torch.int32).cpu(),
        "target_ids": out.logits[0].argmax(-1).to(torch.int32).cpu(),
        "loss_mask": loss_mask,
        "features": features.to(torch.float16).cpu(),
    }


RECORD_KEYS = ("token_ids", "target_ids", "loss_mask", "features")
LABEL_KEYS = ("label_ids", "label_probs")  # optional: top-k soft labels


def _write_shard(path: Path, records: list[dict[str, torch.Tensor]], feature_layers, metadata: dict | None = None) -> None:
    lengths = torch.tensor([0] + [r["token_ids"].numel() for r in records])
    keys = RECORD_KEYS + (LABEL_KEYS if all("label_ids" in r for r in records) else ())
    tensors = {k: torch.cat([r[k] for r in records]) for k in keys}
    tensors["seq_offsets"] = lengths.cumsum(0)
    meta = {"feature_layers": json.dumps(list(feature_layers))}
    meta.update({k: json.dumps(v) for k, v in (metadata or {}).items()})
    save_file(tensors, str(path), metadata=meta)


def _fingerprint(prompts: list[list[int]], max_new_tokens: int, feature_layers, prompt_labels: bool = True) -> str:
    import hashlib

    settings = [prompts, max_new_tokens, list(feature_layers)] + ([] if prompt_labels else ["no prompt labels"])
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]


def build_dataset(
    target,
    conversations: list[list[dict]],
    out_dir: str | Path,
    feature_layers: tuple[int, ...] = (-1,),
    max_new_tokens: int = 160,
    batch_size: int = 32,
    shard_size: int = 256,
    num_labels: int = 8,
    deadline: float | None = None,
    prompt_labels: bool = False,
) -> DatasetInfo:
    """Generate and record (`generate_records`), writing a shard every `shard_size` finished
    sequences; a rerun with the same prompts and settings keeps the shards already written.
    With a deadline (time.perf_counter()) the prompts not started by then are left out.
    generate_seconds adds up across resumed runs: each shard carries the time that produced
    it (a stopped run's unwritten records are generated again, and counted once, then)."""
    from safetensors import safe_open

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = encode_conversations(target.tokenizer, conversations)
    fingerprint = _fingerprint(prompts, max_new_tokens, feature_layers, prompt_labels)
    shards, done = [], set()
    earlier_seconds = 0.0  # generation time of the shards a stopped run left
    for path in sorted(out_dir.glob("shard-*.safetensors")):
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if json.loads(meta.get("fingerprint", "null")) != fingerprint:
            raise ValueError(f"{path} was written for other prompts or settings; use a new --out or delete it")
        shards.append(path.name)
        done.update(json.loads(meta["indices"]))
        earlier_seconds += json.loads(meta.get("seconds", "0"))
    pending: list[tuple[int, dict]] = []
    last_flush = time.perf_counter()

    def flush() -> None:
        nonlocal last_flush
        name = f"shard-{len(shards):04d}.safetensors"
        now = time.perf_counter()  # each shard carries the generation time since the one before
        _write_shard(out_dir / name, [r for _, r in pending], feature_layers,
                     {"fingerprint": fingerprint, "indices": [i for i, _ in pending], "seconds": round(now - last_flush, 3)})
        last_flush = now
        shards.append(name)
        pending.clear()

    def on_record(index: int, record: dict) -> None:
        pending.append((index, record))
        if len(pending) == shard_size:
            flush()

    todo = [i for i in range(len(prompts)) if i not in done]
    t0 = last_flush
    generate_records(target, [prompts[i] for i in todo], max_new_tokens, batch_size, feature_layers, num_labels,
                     lambda j, record: on_record(todo[j], record), deadline=deadline, prompt_labels=prompt_labels)
    if pending:
        flush()
    seconds = time.perf_counter() - t0
    num_tokens = num_response = num_sequences = 0
    for name in shards:
        with safe_open(str(out_dir / name), "pt") as f:
            mask = f.get_tensor("loss_mask")
            num_sequences += len(json.loads(f.metadata()["indices"]))
        num_tokens += mask.numel()
        num_response += int(mask.sum())
    info = DatasetInfo(list(feature_layers), target.config.hidden_size, num_sequences, num_tokens, num_response,
                       shards, round(earlier_seconds + seconds, 1), 0.0, prompt_labels)
    (out_dir / "dataset.json").write_text(json.dumps(asdict(info), indent=2))
    return info


def reply_passages(sequences: list[dict[str, torch.Tensor]], tokenizer, min_chars: int = 200, max_chars: int = 700) -> list[str]:
    """The replies of `load_dataset`'s sequences as plain prose passages, in order: each
    reply cut after its last full sentence within `max_chars`; replies with code or markup,
    or shorter than `min_chars` once cut, are left out. `train-draft --reply-prompts` quotes them."""
    texts = []
    for s in sequences:
        reply = s["token_ids"][s["loss_mask"].bool()].tolist()
        text = tokenizer.decode(reply, skip_special_tokens=True).strip()
        if any(c in text for c in "`{}<>|#*\\_") or "\n\n\n" in text:
            continue
        cut = max(text.rfind(end, 0, max_chars) for end in (". ", ".\n", "! ", "? "))
        text = text if len(text) <= max_chars and text[-1:] in ".!?" else text[: cut + 1]
        if len(text) >= min_chars:
            texts.append(text)
    return texts


def python_docs_texts() -> list[str]:
    """CPython's own reference topics (pydoc_data, ~465 KB of English prose and code): an
    off-policy text corpus that is on every machine, for teacher-forced extra data."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def build_text_dataset(
    target, texts: list[str], out_dir: str | Path, feature_layers: tuple[int, ...] = (-1,), chunk_tokens: int = 256, max_tokens: int | None = None
) -> DatasetInfo:
    """Teacher-forced features of raw texts in chunks (every position in the loss), no generation.

    The target's soft labels still come from its own features, so this is distillation on
    text the target did not write (as EAGLE-1 trained on ShareGPT's fixed replies).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunks: list[list[int]] = []
    for text in texts:
        ids = target.tokenizer.encode(text, add_special_tokens=False)
        chunks.extend(ids[i : i + chunk_tokens] for i in range(0, len(ids) - 16, chunk_tokens))
    if max_tokens is not None:
        kept, total = [], 0
        for c in chunks:
            if total >= max_tokens:
                break
            kept.append(c)
            total += len(c)
        chunks = kept
    t0 = time.perf_counter()
    records = [record_features(target, [], c, feature_layers) for c in tqdm(chunks, desc="record text", unit="chunk")]
    name = "shard-0000.safetensors"
    _write_shard(out_dir / name, records, feature_layers)
    num_tokens = sum(len(c) for c in chunks)
    info = DatasetInfo(list(feature_layers), target.config.hidden_size, len(chunks), num_tokens, num_tokens, [name], 0.0, round(time.perf_counter() - t0, 1))
    (out_dir / "dataset.json").write_text(json.dumps(asdict(info), indent=2))
    return info


def load_dataset(
    data_dir: str | Path, feature_layers: tuple[int, ...] | None = None
) -> tuple[DatasetInfo, list[dict[str, torch.Tensor]]]:
    """The dataset's info and one dict per sequence (token_ids, target_ids, loss_mask, features).

    feature_layers: keep only these of the recorded layers (in this order), so one dataset
    recorded at (2, 15, 27, -1) trains an EAGLE-1 head (-1) and an EAGLE-3 head (2, 15, 27).
    """
    data_dir = Path(data_dir)
    meta = data_dir / "dataset.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{data_dir} is not a draft-head dataset (no dataset.json)")
    info = DatasetInfo(**json.loads(meta.read_text()))
    columns = None
    if feature_layers is not None and tuple(feature_layers) != tuple(info.feature_layers):
        missing = [f for f in feature_layers if f not in info.feature_layers]
        if missing:
            raise ValueError(f"{data_dir} holds features of layers {info.feature_layers}, not {missing}")
        d = info.hidden_size
        columns = torch.cat([torch.arange(d) + d * info.feature_layers.index(f) for f in feature_layers])
        info.feature_layers = list(feature_layers)
    sequences = []
    for name in info.shards:
        shard = load_file(str(data_dir / name))
        if columns is not None:
            shard["features"] = shard["features"][:, columns]
        offsets = shard["seq_offsets"].tolist()
        keys = RECORD_KEYS + (LABEL_KEYS if "label_ids" in shard else ())
        for a, b in zip(offsets[:-1], offsets[1:]):
            sequences.append({k: shard[k][a:b] for k in keys})
    return info, sequences
