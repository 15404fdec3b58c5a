"""How well do draft heads predict the target? Next-token agreement on held-out self-distilled data.

    python benchmarks/head_eval.py runs/head/data src/specdec/data/eagle/smollm2-135m runs/head \
        --min-prompt-index 4000 --steps 5

Reads a `specdec train-draft` dataset (OUT/data) and scores each head on its held-out split,
the sequences train-draft leaves out of training (every 20th in the dataset's order), with the
trainer's own loss pass (no feature noise): `acc{j}` is the share of response positions
where the head's top draft token at unrolled step j equals the target's greedy token, the
head fed its own features for the steps before j and the real tokens (so roughly the
acceptance of chain position j + 1 given that the earlier positions passed).
`--min-prompt-index N` keeps only sequences of prompts N and later: heads trained on other
prompt prefixes (the earlier default of 4000 prompts) have then seen none of them either.

    python benchmarks/head_eval.py --bench-prompts all runs/head-a runs/head-b

scores the heads instead on `specdec bench`'s own prompts (a workload name or comma list,
none of them in the training corpus): the target's greedy replies to them, 128 tokens, are
recorded as train-draft records them (cached under results/head_eval/) and every sequence
counts; `--by-category` adds a table of draft step 0's agreement per prompt category. Set
beside a bench run's acceptance by position, this separates what the head knows
(teacher-forced agreement here) from what decoding makes of it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import safe_open

from specdec.models.eagle import load_native_head
from specdec.models.loader import load_model
from specdec.train.data import load_dataset
from specdec.models.head_io import target_lm_head_weight
from specdec.train.trainer import TrainConfig, Trainer


def prompt_indices(data_dir: Path, shards: list[str]) -> list[int]:
    """The prompt index of every sequence, in load_dataset's order (shard metadata)."""
    indices: list[int] = []
    for name in shards:
        with safe_open(str(data_dir / name), "pt") as f:
            indices += json.loads(f.metadata()["indices"])
    return indices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", help="a train-draft dataset directory (OUT/data); not with --bench-prompts")
    ap.add_argument("heads", nargs="+", help="head directories (native layout)")
    ap.add_argument("--bench-prompts", default=None, metavar="WORKLOADS",
                    help="score on these bench workloads' prompts (e.g. all, or grounded,qa) instead of a dataset's held-out split")
    ap.add_argument("--max-new-tokens", type=int, default=128, help="reply length recorded with --bench-prompts")
    ap.add_argument("-m", "--model", default=None, help="the target (default: embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--min-prompt-index", type=int, default=0)
    ap.add_argument("--steps", type=int, default=5, help="unrolled draft steps scored")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--by-category", action="store_true", help="with --bench-prompts: also draft step 0's agreement per category")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bench_prompts and args.data:  # one positional too many: the first was a head
        args.heads.insert(0, args.data)
    elif not args.bench_prompts and not args.data:
        ap.error("give a dataset directory or --bench-prompts")
    if args.by_category and not args.bench_prompts:
        ap.error("--by-category needs --bench-prompts")
    target = load_model(args.model, "bfloat16", "cpu", 4096, batch_invariant=False)
    if args.bench_prompts:
        from specdec.bench.workloads import load_workload
        from specdec.train.data import build_dataset

        prompts = load_workload(args.bench_prompts.split(","))
        layers = sorted({tuple(json.loads((Path(h) / "config.json").read_text())["feature_layers"]) for h in args.heads})
        if len(layers) > 1:
            raise SystemExit("--bench-prompts: the heads record different target layers; score them separately")
        data_dir = Path("results") / "head_eval" / f"bench-{args.bench_prompts.replace(',', '-')}-{args.max_new_tokens}"
        build_dataset(target, [p.as_messages() for p in prompts], data_dir, layers[0], args.max_new_tokens, batch_size=16)
    else:
        data_dir = Path(args.data)
    lm = target_lm_head_weight(target.model)
    header = " | ".join(f"acc{j}" for j in range(args.steps))
    rows, held_by_layers, category_rows = [], {}, []
    categories: list[str] = []
    for path in args.heads:
        head = load_native_head(path, lm.float(), torch.float32).requires_grad_(True)  # the trainer's loss pass
        layers = tuple(head.config.feature_layers)
        if layers not in held_by_layers:
            info, sequences = load_dataset(data_dir, layers)
            indices = prompt_indices(data_dir, info.shards)
            held_by_layers[layers] = [s for i, s in enumerate(sequences)
                                      if args.bench_prompts or (i % 20 == 19 and indices[i] >= args.min_prompt_index)]
            if args.by_category:  # sequences load in shard order, not prompt order: each one's prompt's category
                of_sequence = [prompts[i].category for i in indices]
        held = held_by_layers[layers]
        if not held:
            raise SystemExit(f"no held-out sequences of prompts >= {args.min_prompt_index} in {data_dir}")
        config = TrainConfig(unroll=args.steps, max_tokens_per_batch=2048)
        trainer = Trainer(head, target.model.embed.weight, lm, held, config, Path("results") / "head_eval")
        metrics = trainer.evaluate(held)
        rows.append(f"| {path} | {len(held)} | " + " | ".join(f"{metrics[f'acc{j}']:.3f}" for j in range(args.steps)) + " |")
        if args.by_category:  # --bench-prompts: one layer set (checked above), so one of_sequence
            categories = sorted(set(of_sequence))
            trainer.config = replace(config, unroll=1)
            scores = [trainer.evaluate([s for s, c in zip(held, of_sequence) if c == cat])["acc0"] for cat in categories]
            category_rows.append(f"| {path} | " + " | ".join(f"{v:.3f}" for v in scores) + " |")
    print(f"| head | {'bench' if args.bench_prompts else 'held-out'} sequences | {header} |\n|---|---|{'---|' * args.steps}")
    print("\n".join(rows))
    if category_rows:
        print(f"\n| head (acc0) | {' | '.join(categories)} |\n|---|{'---|' * len(categories)}")
        print("\n".join(category_rows))


if __name__ == "__main__":
    main()
