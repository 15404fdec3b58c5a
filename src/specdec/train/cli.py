"""`specdec train-draft`: self-distill a dataset from the target and train an EAGLE head.

    specdec train-draft --out runs/head [--model TARGET] [--prompts FILE.jsonl]
        [--prompt-source corpus|self|mix] [--num-prompts 0] [--max-new-tokens 192] [--epochs 6]
        [--unroll 3] [--draft-vocab 8192] [--time-budget 55] [--resume]

The defaults are the recipe of the head shipped for the default model (README: figures and
the time it takes on 2 CPU cores).

With `--reply-prompts N`, a second round follows the first: N prompts that quote the
target's own first-round replies (copy, summarize, rewrite, translate them; corpus.grounded_in),
generated and recorded the same way into OUT/replies, and trained on together with OUT/data.

With `--prompt-source self` the prompts are N the target writes itself (train/self_prompts.py,
cached in OUT/self_prompts.jsonl); `mix` interleaves N/2 of them with the first N/2 of --prompts.

OUT/data holds the dataset (shards written as sequences finish; a rerun resumes), OUT holds
checkpoint.pt, metrics.jsonl, summary.json and the head (config.json + model.safetensors),
which `--speculative eagle --draft-model OUT` loads.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


DEFAULT_BUDGET_MINUTES = 55.0  # the issue's 60 minutes on 2 CPU cores, less loading and saving
DATA_SHARE = 0.5  # of the budget, for generating the self-distillation data
DATASET_COUNTS = ("num_sequences", "num_tokens", "num_response_tokens", "generate_seconds", "record_seconds")


def register(sub) -> None:
    p = sub.add_parser("train-draft", help="train an EAGLE draft head on the target's own outputs")
    p.add_argument("-m", "--model", default=None, help="target: GGUF file or HF directory (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--out", required=True, help="output directory (dataset, checkpoints, head)")
    p.add_argument("--prompts", default=None, help="JSONL of prompts, messages or ShareGPT conversations, or a comma list of them "
                   "(default: the shipped train_prompts.jsonl then train_corpus.jsonl)")
    p.add_argument("--num-prompts", type=int, default=0,
                   help="use the first N prompts (default: %(default)s = all of them; self and mix need N > 0)")
    p.add_argument("--prompt-source", default="corpus", choices=["corpus", "self", "mix"],
                   help="corpus: the --prompts files; self: N prompts the target writes after its chat template's "
                   "opening of a user turn (Magpie; deduplicated, filtered, none near the bench sets); mix: half of "
                   "each, interleaved (default: %(default)s)")
    p.add_argument("--self-prompts", default=None, metavar="FILE",
                   help="JSONL cache of the prompts the target writes, reused and extended by a rerun "
                   "(default: OUT/self_prompts.jsonl)")
    p.add_argument("--self-max-tokens", type=int, default=128,
                   help="tokens the target writes per self prompt at most; a prompt cut there is dropped (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=192, help="tokens the target generates per prompt at most (default: %(default)s)")
    p.add_argument("--gen-batch", type=int, default=128, help="sequences generated together (continuous batching; default: %(default)s)")
    p.add_argument("--data-dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="dtype the target generates and records the data in (bfloat16 is faster where the CPU has bfloat16 instructions; default: %(default)s)")
    p.add_argument("--epochs", type=int, default=6, help="passes over the data (default: %(default)s)")
    p.add_argument("--draft-vocab", type=int, default=8192, help="draft vocabulary size (0 = the target's full vocabulary; default: %(default)s)")
    p.add_argument("--arch", default="eagle1", choices=["eagle1", "eagle3"],
                   help="head architecture: EAGLE-1 reads the last layer, EAGLE-3 three fused layers (default: %(default)s)")
    p.add_argument("--unroll", type=int, default=3, help="training-time test steps (1 = teacher forcing only; default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default: %(default)s)")
    p.add_argument("--cls-weight", type=float, default=1.0, help="weight of the next-token cross-entropy (default: %(default)s)")
    p.add_argument("--reg-weight", type=float, default=1.0, help="weight of the next-feature regression, eagle1 (default: %(default)s)")
    p.add_argument("--batch-tokens", type=int, default=2048, help="padded tokens per training batch (default: %(default)s)")
    p.add_argument("--prompt-weight", type=float, default=0.0, help="loss weight of prompt positions (responses: 1); > 0 also records the target's labels there (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the head's initialization, the data order and the self prompts (default: %(default)s)")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--reply-prompts", type=int, default=0,
                   help="after the first round, generate N more prompts that quote the target's own replies "
                   "(summarize, copy, rewrite, translate them: text the head has not seen; OUT/replies; default: %(default)s)")
    p.add_argument("--python-docs", type=int, default=0, help="also train on up to N tokens of CPython's reference docs, teacher-forced (default: %(default)s)")
    p.add_argument("--time-budget", type=float, default=DEFAULT_BUDGET_MINUTES, metavar="MINUTES",
                   help=f"wall-clock budget of the whole run (default {DEFAULT_BUDGET_MINUTES:g}; 0 = none): prompts stop "
                   f"joining the data at {DATA_SHARE * 100:.0f}%% of it, and training's schedule is shortened to end within it")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="dataset directory (default OUT/data); one recorded with more layers than the head reads is sliced")
    p.add_argument("--record-layers", default=None,
                   help="comma list of target layers to record (default: the head's; e.g. 2,15,27,-1 serves eagle1 and eagle3)")
    p.set_defaults(func=run_train_draft)

    e = sub.add_parser("export-draft", help="write a draft head in vLLM's or SGLang's EAGLE/EAGLE-3 layout")
    e.add_argument("head", nargs="?", default=None,
                   help="head directory (train-draft's OUT; default: the head shipped for the default model)")
    e.add_argument("--out", required=True, help="output directory (config.json + model.safetensors)")
    e.add_argument("-m", "--model", default=None, help="the head's target (default: embedded SmolLM2-135M-Instruct)")
    e.add_argument("--format", default="vllm", choices=["vllm", "sglang"],
                   help="vllm: what vLLM's EAGLE/EAGLE-3 loaders read (eagle1: full vocabulary, fc bias folded into "
                   "embed_tokens); sglang: SGLang/SpecForge names with d2t/t2d (train/export.py documents both; default: %(default)s)")
    e.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"], help="weight dtype written (default: %(default)s)")
    e.set_defaults(func=run_export_draft)


def run_export_draft(args: argparse.Namespace) -> int:
    """Load a native or public head against its target, write it in the chosen layout, read it
    back, and print what was checked."""
    import torch

    from specdec.models.head_io import load_head, read_weights
    from specdec.models.loader import load_model
    from specdec.proposers.factory import DEFAULT_EAGLE_HEAD
    from specdec.train.export import check_export, export_head

    head_dir = Path(args.head) if args.head else DEFAULT_EAGLE_HEAD
    out = Path(args.out)
    if out.resolve() == head_dir.resolve():
        raise SystemExit(f"error: --out {out} is the head's own directory; choose another")
    target = load_model(args.model, "float32", "cpu", 1024, batch_invariant=False)
    head = load_head(head_dir, target)
    embed = target.model.embed.weight.detach().float()
    export_head(head, out, getattr(torch, args.dtype), args.format, embed)
    problems = check_export(out, args.format)
    if problems:
        raise SystemExit(f"error: {out} does not fit the {args.format} layout: " + "; ".join(problems))
    c = head.config
    vocab = f"{c.draft_vocab_size}-token draft vocabulary"
    if args.format == "sglang":
        schema = "SpecForge's LlamaForCausalLMEagle3" if c.arch == "eagle3" else "the EAGLE-1 (yuhuili) layout"
        print(f"wrote {c.arch} head ({vocab}, feature layers {list(c.feature_layers)}) to {out} in the sglang layout; "
              f"checked: tensor names, shapes and config against {schema}; not loaded in SGLang here")
        return 0
    note = ""
    if c.arch == "eagle1":
        vocab = f"the full {c.vocab_size}-token vocabulary" + (f" (was {c.draft_vocab_size})" if c.reduced_vocab else "")
        if head.fc.bias is not None:
            written = read_weights(out)["embed_tokens.weight"].double()
            w_e = head.fc.weight[:, : c.hidden_size].double()
            error = ((written - embed.double()) @ w_e.T - head.fc.bias.double()).abs().max()
            note = f"; fc bias folded into embed_tokens (max |error| {float(error):.2g} at {args.dtype})"
    method = "eagle3" if c.arch == "eagle3" else "eagle"
    print(f"wrote {c.arch} head ({vocab}, feature layers {list(c.feature_layers)}) to {out} in the vllm layout{note}; "
          f"checked: tensor names, shapes and config against vLLM's {'Eagle3' if method == 'eagle3' else 'Eagle'}"
          f"LlamaForCausalLM loader; load it with speculative_config={{\"method\": \"{method}\", \"model\": \"{out}\", "
          f"\"num_speculative_tokens\": K}}; benchmarks/vllm_head_check.py measures it in vLLM")
    return 0


def prompt_conversations(args: argparse.Namespace, target, out: Path, deadline: float | None) -> list[list[dict]]:
    """The conversations --prompt-source names: the --prompts files, self prompts, or both interleaved."""
    from specdec.train.data import DEFAULT_PROMPTS, load_conversations
    from specdec.train.self_prompts import interleave, self_prompts

    files = args.prompts.split(",") if args.prompts else DEFAULT_PROMPTS
    if args.prompt_source == "corpus":
        return load_conversations(files, args.num_prompts or None)
    if args.num_prompts <= 0:
        raise SystemExit(f"train-draft: --prompt-source {args.prompt_source} needs --num-prompts N > 0")
    if args.prompt_source == "self" and args.prompts:
        raise SystemExit("train-draft: --prompts is not read with --prompt-source self (mix reads it)")
    num_self = args.num_prompts if args.prompt_source == "self" else args.num_prompts // 2
    cache = Path(args.self_prompts) if args.self_prompts else out / "self_prompts.jsonl"
    try:
        texts = self_prompts(target, num_self, cache, args.seed, args.self_max_tokens, args.gen_batch, deadline) if num_self else []
    except ValueError as e:  # settings that differ from the cache's, or no usable prompt
        raise SystemExit(f"train-draft: {e}") from e
    written = [[{"role": "user", "content": text}] for text in texts]
    if args.prompt_source == "self":
        return written
    return interleave(load_conversations(files, args.num_prompts - num_self), written)


def run_train_draft(args: argparse.Namespace) -> int:
    import torch

    from specdec.models.eagle import EagleConfig, EagleHead, draft_vocab_from_counts, save_head
    from specdec.models.head_io import target_lm_head_weight
    from specdec.models.loader import load_model
    from specdec.train.data import build_dataset, build_text_dataset, load_dataset, python_docs_texts, reply_passages
    from specdec.train.corpus import grounded_in
    from specdec.train.trainer import TrainConfig, Trainer, hold_freed_memory

    hold_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    budget = args.time_budget * 60 if args.time_budget and args.time_budget > 0 else None
    data_deadline = t_start + DATA_SHARE * budget if budget else None
    out = Path(args.out)
    target = load_model(args.model, args.data_dtype, "cpu", 4096, batch_invariant=False)
    config = target.config
    feature_layers = None
    head_config = EagleConfig.for_target(config, args.arch, args.draft_vocab or None, feature_layers)

    # 1) data: generate responses and record features (both resume)
    data_dir = Path(args.data) if args.data else out / "data"
    if (data_dir / "dataset.json").is_file():
        print(f"train-draft: reusing the dataset in {data_dir}")
    else:
        conversations = prompt_conversations(args, target, out, data_deadline)
        record = tuple(int(x) for x in args.record_layers.split(",")) if args.record_layers else head_config.feature_layers
        build_dataset(target, conversations, data_dir, record, args.max_new_tokens, args.gen_batch,
                      deadline=data_deadline, prompt_labels=args.prompt_weight > 0)
    info, sequences = load_dataset(data_dir, head_config.feature_layers)
    if args.prompt_weight > 0 and not info.prompt_labels:
        raise SystemExit(f"train-draft: {data_dir} was recorded without labels at prompt positions, which "
                         "--prompt-weight > 0 trains on; record a new dataset (another --out or --data)")
    if args.reply_prompts:  # 1b) a second round quoting the first round's replies (resumes too)
        replies_dir = out / "replies"
        if not (replies_dir / "dataset.json").is_file():
            texts = reply_passages(sequences, target.tokenizer)
            rows = grounded_in(texts, args.reply_prompts, args.seed)
            conversations = [[{"role": "user", "content": row["prompt"]}] for row in rows]
            print(f"train-draft: {len(conversations)} prompts quoting the target's replies ({len(texts)} usable replies)")
            build_dataset(target, conversations, replies_dir, tuple(info.feature_layers), args.max_new_tokens, args.gen_batch,
                          deadline=data_deadline, prompt_labels=info.prompt_labels)
        replies_info, replies = load_dataset(replies_dir, head_config.feature_layers)
        sequences += replies
        for key in DATASET_COUNTS:
            setattr(info, key, getattr(info, key) + getattr(replies_info, key))
    extra: list[dict] = []
    if args.python_docs:
        docs_dir = out / "docs"
        if not (docs_dir / "dataset.json").is_file():
            build_text_dataset(target, python_docs_texts(), docs_dir, head_config.feature_layers, max_tokens=args.python_docs)
        extra = load_dataset(docs_dir)[1]

    # 2) the head: draft vocabulary from token counts, LM head rows from the target
    torch.manual_seed(args.seed)
    head_config.lm_head_from_target = head_config.reduced_vocab
    head = EagleHead(head_config)
    lm_weight = target_lm_head_weight(target.model)
    if head_config.reduced_vocab:
        counts = torch.zeros(config.vocab_size, dtype=torch.long)
        for s in sequences:  # the generated data only: the vocabulary of chat replies
            counts += torch.bincount(s["token_ids"].long(), minlength=config.vocab_size)
            counts += torch.bincount(s["target_ids"].long(), minlength=config.vocab_size)
        head.draft_to_target.copy_(draft_vocab_from_counts(counts, head_config.draft_vocab_size))
        covered = counts[head.draft_to_target].sum() / counts.sum()
        print(f"train-draft: draft vocabulary of {head_config.draft_vocab_size} covers {float(covered):.4f} of the data's tokens")
        head.lm_head.weight.requires_grad_(False)
    head.init_from_target(lm_weight, target.model.norm.weight)

    # 3) train, holding out 1 in 20 generated sequences for early stopping and the summary
    train_seqs = [s for i, s in enumerate(sequences) if i % 20 != 19] + extra
    held_out = [s for i, s in enumerate(sequences) if i % 20 == 19]
    train_config = TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        unroll=args.unroll,
        max_tokens_per_batch=args.batch_tokens,
        seed=args.seed,
        cls_weight=args.cls_weight,
        reg_weight=args.reg_weight,
        prompt_weight=args.prompt_weight,
    )
    trainer = Trainer(head, target.model.embed.weight, lm_weight, train_seqs, train_config, out)
    last = trainer.train(resume=args.resume, eval_sequences=held_out, deadline=t_start + budget - 30.0 if budget else None)
    metrics = trainer.evaluate(held_out) if held_out else {}

    head.config.extra = {
        "target": str(target.path.name),
        "num_sequences": info.num_sequences,
        "num_tokens": info.num_tokens,
        "num_extra_tokens": sum(s["token_ids"].numel() for s in extra),
        "epochs": args.epochs,
        "unroll": args.unroll,
        "held_out": {k: round(v, 4) for k, v in metrics.items()},
    }
    save_head(head, out)
    summary = {
        "dataset": {k: getattr(info, k) for k in DATASET_COUNTS},
        "train": last,
        "held_out": metrics,
        "time_budget_minutes": args.time_budget,
        # across resumed runs: the dataset's generation and the trainer's steps and evaluations
        "data_seconds": round(info.generate_seconds + info.record_seconds, 1),
        "train_seconds": last["train_seconds"],
        # this invocation alone, start to end (loading, a reused dataset, the final evaluation)
        "run_seconds": round(time.perf_counter() - t_start, 1),
        "resumed": bool(args.resume),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0
