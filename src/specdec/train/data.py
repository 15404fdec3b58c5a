"""Self-distillation data for draft heads: the target writes its own training set.

    build_dataset(target, conversations, out_dir, ...) -> DatasetInfo

1) generate  greedy responses to every prompt through the chat template, batched with
             left padding through transformers' `generate` on a copy of the target
             (`specdec.models.convert.to_transformers`), linears packed for oneDNN on CPU;
             finished batches are appended to `responses.jsonl`, so a rerun resumes
2) record    one teacher-forced native forward per sequence (prompt + response) that keeps
             the target's hidden features at `feature_layers` and its argmax token at every
             position (`target_ids[i]` = the target's prediction for token i+1)
3) save      shards of concatenated sequences as safetensors:
               token_ids [N] int32, target_ids [N] int32, loss_mask [N] uint8
               (1 on response tokens), seq_offsets [S+1] int64, features [N, F] float16
             with F = D * len(feature_layers), layers concatenated in the order given
             (the engine's `state.target_hidden` order).

Prompts: a JSONL file of {"prompt": str}, {"messages": [{"role", "content"}...]} or ShareGPT
{"conversations": [{"from": "human"|"gpt"|"system", "value"}...]} (cut after the last
human turn; the target writes the reply).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
DEFAULT_PROMPTS = Path(__file__).resolve().parent.parent / "data" / "train_prompts.jsonl"


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


def load_conversations(path: str | Path, limit: int | None = None) -> list[list[dict]]:
    """Messages ending with a user turn, one list per prompt."""
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


@torch.inference_mode()
def generate_responses(
    target,  # LoadedModel (native)
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    log_path: Path | None = None,
) -> list[list[int]]:
    """Greedy responses (ending at EOS, EOS kept), in the order of `prompts`."""
    from specdec.models.convert import to_transformers
    from specdec.models.linear import pack_linears_for_cpu

    done: dict[int, list[int]] = {}
    if log_path is not None and log_path.is_file():
        for line in log_path.read_text().splitlines():
            row = json.loads(line)
            if row["prompt_ids"] == prompts[row["index"]] and row["max_new_tokens"] == max_new_tokens:
                done[row["index"]] = row["response_ids"]
    todo = sorted((i for i in range(len(prompts)) if i not in done), key=lambda i: len(prompts[i]))
    if todo:
        hf = pack_linears_for_cpu(to_transformers(target.model, target.config))
        eos = target.tokenizer.eos_token_id
        pad = target.tokenizer.pad_token_id if target.tokenizer.pad_token_id is not None else eos
        bar = tqdm(total=len(todo), desc="generate", unit="prompt")
        for b in range(0, len(todo), batch_size):
            idx = todo[b : b + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]) :] = 1
            out = hf.generate(
                input_ids=ids.to(target.model.device),
                attention_mask=mask.to(target.model.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=pad,
            )[:, width:].tolist()
            rows = []
            for row, i in enumerate(idx):
                response = out[row]
                if eos in response:
                    response = response[: response.index(eos) + 1]
                done[i] = response
                rows.append({"index": i, "prompt_ids": prompts[i], "max_new_tokens": max_new_tokens, "response_ids": response})
            if log_path is not None:
                with log_path.open("a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in rows)
            bar.update(len(idx))
        bar.close()
    return [done[i] for i in range(len(prompts))]


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


def _write_shard(path: Path, records: list[dict[str, torch.Tensor]], feature_layers) -> None:
    lengths = torch.tensor([0] + [r["token_ids"].numel() for r in records])
    tensors = {k: torch.cat([r[k] for r in records]) for k in ("token_ids", "target_ids", "loss_mask", "features")}
    tensors["seq_offsets"] = lengths.cumsum(0)
    save_file(tensors, str(path), metadata={"feature_layers": json.dumps(list(feature_layers))})


def build_dataset(
    target,
    conversations: list[list[dict]],
    out_dir: str | Path,
    feature_layers: tuple[int, ...] = (-1,),
    max_new_tokens: int = 160,
    batch_size: int = 32,
    shard_size: int = 128,
) -> DatasetInfo:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = encode_conversations(target.tokenizer, conversations)
    t0 = time.perf_counter()
    responses = generate_responses(target, prompts, max_new_tokens, batch_size, out_dir / "responses.jsonl")
    t1 = time.perf_counter()
    shards, records = [], []
    num_tokens = num_response = 0
    for i in tqdm(range(len(prompts)), desc="record", unit="seq"):
        rec = record_features(target, prompts[i], responses[i], feature_layers)
        records.append(rec)
        num_tokens += rec["token_ids"].numel()
        num_response += len(responses[i])
        if len(records) == shard_size or i == len(prompts) - 1:
            name = f"shard-{len(shards):04d}.safetensors"
            _write_shard(out_dir / name, records, feature_layers)
            shards.append(name)
            records = []
    info = DatasetInfo(
        list(feature_layers),
        target.config.hidden_size,
        len(prompts),
        num_tokens,
        num_response,
        shards,
        round(t1 - t0, 1),
        round(time.perf_counter() - t1, 1),
    )
    (out_dir / "dataset.json").write_text(json.dumps(asdict(info), indent=2))
    return info


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


def load_dataset(data_dir: str | Path) -> tuple[DatasetInfo, list[dict[str, torch.Tensor]]]:
    """The dataset's info and one dict per sequence (token_ids, target_ids, loss_mask, features)."""
    data_dir = Path(data_dir)
    meta = data_dir / "dataset.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{data_dir} is not a draft-head dataset (no dataset.json)")
    info = DatasetInfo(**json.loads(meta.read_text()))
    sequences = []
    for name in info.shards:
        shard = load_file(str(data_dir / name))
        offsets = shard["seq_offsets"].tolist()
        for a, b in zip(offsets[:-1], offsets[1:]):
            sequences.append({k: shard[k][a:b] for k in ("token_ids", "target_ids", "loss_mask", "features")})
    return info, sequences
