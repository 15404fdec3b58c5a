"""Does vLLM speculate with our exported head as well as specdec does? Run in vLLM's venv:

    .venv-vllm/bin/python benchmarks/vllm_head_check.py --out results/vllm_head_check.json

(scripts/setup_peers.sh builds .venv-vllm.) Each side runs in a process of its own and
writes its JSON to a file beside the export:

- specdec (the main venv's python, --specdec-python): the head (--head, default the shipped
  one) at fixed K, greedy, one prompt at a time, and plain decoding; it also writes the
  target as an HF directory (--hf-dir) and exports the head in the vllm layout
  (`specdec export-draft`, --export-dir) when they are missing;
- vLLM plain, then vLLM with speculative_config {"method": "eagle" (or "eagle3" for an
  EAGLE-3 export), "model": EXPORT, "num_speculative_tokens": K}, fed the same prompt token ids (specdec's chat template),
  greedy, the same max_tokens, all prompts as one `LLM.generate` batch.

Acceptance length is 1 + accepted / drafts for both (vLLM's counters
vllm:spec_decode_num_drafts and _num_accepted_tokens; specdec's SpecStats). The check
passes when vLLM's is within --tolerance (relative) of specdec's; greedy mismatches of
vLLM+EAGLE against vLLM plain (and of each against specdec plain) are reported per prompt
with the first differing position. The prompts default to the held-out workload, which no
head was trained or tuned on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--side", default="check", choices=["check", "specdec", "vllm-plain", "vllm-eagle"],
                   help="internal: which process this is (default: the check that runs the others)")
    p.add_argument("--head", default=None, help="specdec head directory (default: the shipped head)")
    p.add_argument("--hf-dir", default=str(ROOT / "runs" / "smollm2-hf"), help="the target as an HF directory (for vLLM)")
    p.add_argument("--export-dir", default=str(ROOT / "runs" / "head-vllm"), help="the head in the vllm layout")
    p.add_argument("--prompts", default="heldout", help="workload name(s), comma list (bench's names)")
    p.add_argument("--max-prompts", type=int, default=0, help="first N prompts (0 = all)")
    p.add_argument("-k", "--num-speculative-tokens", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--dtype", default="float32", choices=["bfloat16", "float32"])
    p.add_argument("--threads", type=int, default=1, help="per side (1 on a shared machine: OpenMP spins)")
    p.add_argument("--tolerance", type=float, default=0.10, help="relative acceptance-length gap allowed")
    p.add_argument("--specdec-python", default=str(ROOT / ".venv" / "bin" / "python"))
    p.add_argument("--prompt-ids", default=None, help="internal: JSON file of prompt token ids (vLLM sides)")
    p.add_argument("--result", default=None, help="internal: where a side writes its JSON (vLLM logs to stdout)")
    p.add_argument("--out", default=None, help="write the full JSON result here")
    return p.parse_args(argv)


def first_mismatch(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (a shorter equal prefix counts at its end), None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


# ------------------------------------------------------------------ specdec side (main venv)
def specdec_side(args) -> dict:
    import torch

    from specdec.api import LLM, encode_prompt
    from specdec.bench.workloads import load_workload
    from specdec.config import SamplingParams
    from specdec.engine.stats import SpecStats
    from specdec.proposers.factory import DEFAULT_EAGLE_HEAD

    torch.set_num_threads(args.threads)
    head = args.head or str(DEFAULT_EAGLE_HEAD)
    prompts = load_workload(args.prompts.split(","))
    prompts = prompts[: args.max_prompts] if args.max_prompts else prompts
    common = dict(dtype=args.dtype, threads=args.threads, max_model_len=4096, max_num_seqs=1)
    runs = {}
    for name, kw in (("plain", {}), ("eagle", dict(speculative_model=head, speculative_method="eagle",
                                                     num_speculative_tokens=args.num_speculative_tokens,
                                                     draft_prune=False))):
        llm = LLM(**common, **kw)
        ids = [encode_prompt(llm.tokenizer, messages=p.as_messages()) for p in prompts]
        params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
        total, outputs = SpecStats(), []
        start = time.perf_counter()
        for prompt_ids in ids:
            tokens = [t for event in llm.stream(prompt_ids, params) for t in event.step.token_ids]
            outputs.append(tokens)
            total.merge(llm.last_stats)
        runs[name] = dict(token_ids=outputs, seconds=time.perf_counter() - start, num_drafts=total.num_drafts,
                          num_draft_tokens=total.num_draft_tokens, num_accepted_tokens=total.num_accepted_tokens)
        del llm
    return dict(prompt_ids=ids, prompt_names=[p.id for p in prompts], head=head, **runs)


def ensure_artifacts(args) -> None:
    """The target as an HF directory and the head in the vllm layout, made by specdec's venv."""
    py = args.specdec_python
    if not (Path(args.hf_dir) / "config.json").is_file():
        code = ("import sys; from specdec.models.loader import load_model; from specdec.models.convert import to_transformers; "
                "t = load_model(None, 'float32', 'cpu', 1024, batch_invariant=False); "
                "to_transformers(t.model, t.config).save_pretrained(sys.argv[1]); t.tokenizer.save_pretrained(sys.argv[1])")
        subprocess.run([py, "-c", code, args.hf_dir], check=True)
    if not (Path(args.export_dir) / "config.json").is_file():
        cmd = [py, "-m", "specdec.cli", "export-draft", "--out", args.export_dir, "--format", "vllm"]
        subprocess.run(cmd + ([args.head] if args.head else []), check=True)


# ------------------------------------------------------------------ vLLM sides (vLLM's venv)
def vllm_side(args) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    ids = json.loads(Path(args.prompt_ids).read_text())
    # a fixed KV cache budget (vLLM's CPU default reserves 92% of memory); eager: no compile time
    kw = dict(model=args.hf_dir, dtype=args.dtype, max_model_len=4096, seed=0, disable_log_stats=False,
              kv_cache_memory_bytes=1 << 30, enforce_eager=True)
    if args.side == "vllm-eagle":
        archs = json.loads((Path(args.export_dir) / "config.json").read_text()).get("architectures") or []
        method = "eagle3" if any("Eagle3" in a for a in archs) else "eagle"
        kw["speculative_config"] = {"method": method, "model": args.export_dir,
                                    "num_speculative_tokens": args.num_speculative_tokens}
    t0 = time.perf_counter()
    llm = LLM(**kw)
    load_seconds = time.perf_counter() - t0
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    start = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in ids], params, use_tqdm=False)
    seconds = time.perf_counter() - start
    counters = {m.name: m.value for m in llm.get_metrics() if m.name.startswith("vllm:spec_decode_num_")
                and hasattr(m, "value")}
    return dict(token_ids=[list(o.outputs[0].token_ids) for o in outs], seconds=seconds, load_seconds=load_seconds,
                num_drafts=int(counters.get("vllm:spec_decode_num_drafts", 0)),
                num_draft_tokens=int(counters.get("vllm:spec_decode_num_draft_tokens", 0)),
                num_accepted_tokens=int(counters.get("vllm:spec_decode_num_accepted_tokens", 0)))


def run_side(python: str, side: str, args, extra: list[str]) -> dict:
    argv = [python, str(Path(__file__).resolve()), "--side", side, "--hf-dir", args.hf_dir, "--export-dir", args.export_dir,
            "--prompts", args.prompts, "--max-prompts", str(args.max_prompts), "-k", str(args.num_speculative_tokens),
            "--max-tokens", str(args.max_tokens), "--dtype", args.dtype, "--threads", str(args.threads)] + extra
    result = Path(args.export_dir) / f"vllm_head_check_{side}.json"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{args.threads - 1}")  # vLLM's CPU threads: cores 0..threads-1
    print(f"vllm_head_check: running {side}", file=sys.stderr)
    subprocess.run(argv + ["--result", str(result)], env=env, check=True, stdout=sys.stderr)
    return json.loads(result.read_text())


def acceptance_length(run: dict) -> float | None:
    return 1 + run["num_accepted_tokens"] / run["num_drafts"] if run["num_drafts"] else None


def check(args) -> dict:
    ensure_artifacts(args)
    ours = run_side(args.specdec_python, "specdec", args, ["--head", args.head] if args.head else [])
    ids_file = Path(args.export_dir) / "vllm_head_check_prompt_ids.json"
    ids_file.write_text(json.dumps(ours["prompt_ids"]))
    plain = run_side(sys.executable, "vllm-plain", args, ["--prompt-ids", str(ids_file)])
    eagle = run_side(sys.executable, "vllm-eagle", args, ["--prompt-ids", str(ids_file)])
    names = ours["prompt_names"]

    def mismatches(a: dict, b: dict) -> dict:
        return {n: first_mismatch(x, y) for n, x, y in zip(names, a["token_ids"], b["token_ids"])
                if first_mismatch(x, y) is not None}

    ours_al, vllm_al = acceptance_length(ours["eagle"]), acceptance_length(eagle)
    gap = None if not ours_al or vllm_al is None else vllm_al / ours_al - 1
    result = {
        "k": args.num_speculative_tokens, "dtype": args.dtype, "threads": args.threads, "max_tokens": args.max_tokens,
        "prompts": names, "head": ours["head"], "export": args.export_dir,
        "specdec_acceptance_length": ours_al, "vllm_acceptance_length": vllm_al, "relative_gap": gap,
        "within_tolerance": gap is not None and abs(gap) <= args.tolerance,
        "counters": {"specdec": {k: ours["eagle"][k] for k in ("num_drafts", "num_draft_tokens", "num_accepted_tokens")},
                     "vllm": {k: eagle[k] for k in ("num_drafts", "num_draft_tokens", "num_accepted_tokens")}},
        "greedy_mismatches": {  # prompt -> first differing token index
            "vllm_eagle_vs_vllm_plain": mismatches(eagle, plain),
            "specdec_eagle_vs_specdec_plain": mismatches(ours["eagle"], ours["plain"]),
            "vllm_plain_vs_specdec_plain": mismatches(plain, ours["plain"]),
        },
        "generated_tokens": {"vllm_plain": sum(map(len, plain["token_ids"])), "vllm_eagle": sum(map(len, eagle["token_ids"])),
                             "specdec_plain": sum(map(len, ours["plain"]["token_ids"]))},
        "vllm_seconds": {"plain": plain["seconds"], "eagle": eagle["seconds"]},
    }
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side != "check":
        side = specdec_side(args) if args.side == "specdec" else vllm_side(args)
        Path(args.result).write_text(json.dumps(side))
        return 0
    result = check(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0 if result["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
