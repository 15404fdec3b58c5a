"""Train an EAGLE head on self-distilled features (train/data.py).

Loss, per unrolled step j = 0 .. unroll-1 (weight step_decay**j):
  reg  smooth L1 between the head's output and the target's next feature (eagle1 heads,
       whose output lives in the feature space; EAGLE-1)
  cls  cross-entropy against the target's next-token distribution, restricted to the draft
       vocabulary and renormalized: the top-k recorded with the data (label_ids/probs),
       else softmax(lm_head(f)) when the features include layer -1 (EAGLE-1), else the
       target's argmax tokens. Against the recorded top-k the loss (and the argmax the
       agreement metric reads) runs through a C kernel on CPU (`label_cross_entropy`):
       ATen's several passes over the [M, V_d] logits were a large share of a step's time.
  loss = reg_weight * reg + cls_weight * cls, averaged over response tokens (and, with
       prompt_weight > 0, over prompt tokens at that weight: the target's predictions on
       text it did not write, free extra signal since the forward covers them anyway).

Step 0 is EAGLE-1's teacher-forced pass: pair (f_t + noise, x_{t+1}) at position t, its output
h_{t+1} is scored against f_{t+1} and the target's distribution of x_{t+2}. Steps j >= 1
are EAGLE-3's training-time test: row t feeds the head's own previous output with x_{t+1+j}
at position t+j, and attends to the real pairs 0..t and to its own entries of steps 1..j
(never to the real pair that inference would not have), so later draft positions are
trained on the inputs they will see. A row of a step j >= 1 reads nothing of another row's
steps >= 1, so those steps run only on the rows that take a loss at them or later, packed to
the left of each batch row (`compact_rows`): the prompt positions, a large share of the
tokens, drop out of 2 of the 3 layer passes and out of the wider attention, which shortens
a step (`compact_unroll=False` is the reference to time it against; train-draft logs
`seconds_per_step` to metrics.jsonl).
In step 0 every row writes its key and value, but only the rows whose output is used (a
loss at step 0, or the input of step 1) go on through the query, attention, output
projection and MLP (`EagleHead.step(query_rows=...)`). `hold_freed_memory` (called by
`specdec train-draft`) keeps a step's freed blocks for the next step. Row counts are rounded
up (`width_multiple`, `loss_rows_multiple`) so that the matmul shapes repeat from batch to
batch: oneDNN JIT-compiles a kernel for each new shape, at a cost far above the product's
own, and with exact shapes nearly every batch brought new ones (`width_multiple=1` and
`loss_rows_multiple=1` give exact shapes to time against).

AdamW with linear warm-up and cosine decay, gradient clipping, a seeded batch order and
feature noise per (epoch, step), checkpoints every `checkpoint_every` steps that `resume`
continues from exactly, tqdm progress and metrics.jsonl.
"""

from __future__ import annotations

import ctypes
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from specdec.cache import KVCache
from specdec.models.eagle import EagleHead, head_logits_dense


@dataclass
class TrainConfig:
    epochs: int = 12
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    max_tokens_per_batch: int = 1024
    unroll: int = 2  # 1 = EAGLE-1 teacher forcing only
    reg_weight: float = 1.0
    cls_weight: float = 1.0  # EAGLE-1 used 0.1; with soft labels the token loss carries more here
    step_decay: float = 0.8
    prompt_weight: float = 0.0  # loss weight of prompt positions (teacher-forced user text), responses 1
    noise: float = 0.2  # uniform feature noise U(-noise/2, noise/2) on step-0 inputs
    grad_clip: float = 0.5
    seed: int = 0
    checkpoint_every: int = 100
    bf16_autocast: bool = True  # CPU matmuls in bfloat16 through oneDNN (faster than float32); fp32 master weights
    compact_unroll: bool = True  # steps >= 1 on the rows that take a loss only (False: every row, the reference)
    # row counts rounded up so that matmul shapes repeat: oneDNN JIT-compiles a kernel for
    # each new shape (costly next to the product itself); 1 = exact shapes
    width_multiple: int = 16  # a batch's width and the packed rows' widths
    loss_rows_multiple: int = 64  # the rows through the LM head


@dataclass
class Batch:
    features: torch.Tensor  # [B, L, F]
    token_ids: torch.Tensor  # [B, L] int64 (0 past a row's end)
    target_ids: torch.Tensor  # [B, L]
    loss_mask: torch.Tensor  # [B, L] bool, response tokens
    lengths: torch.Tensor  # [B]
    label_ids: torch.Tensor | None = None  # [B, L, k] the target's top-k next tokens (data.py)
    label_probs: torch.Tensor | None = None  # [B, L, k] their probabilities


def make_batches(sequences: list[dict], max_tokens: int, generator: torch.Generator) -> list[list[int]]:
    """Length-bucketed batches of sequence indices (about max_tokens padded tokens each), shuffled."""
    order = sorted(range(len(sequences)), key=lambda i: sequences[i]["token_ids"].numel())
    batches, current, width = [], [], 0
    for i in order:
        n = sequences[i]["token_ids"].numel()
        if current and max(width, n) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, width = [], 0
        current.append(i)
        width = max(width, n)
    if current:
        batches.append(current)
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def collate(sequences: list[dict], indices: list[int], multiple: int = 1) -> Batch:
    """The sequences padded to one width: the longest, rounded up to a multiple of `multiple`."""
    rows = [sequences[i] for i in indices]
    lengths = torch.tensor([r["token_ids"].numel() for r in rows])
    b, width = len(rows), -(-int(lengths.max()) // multiple) * multiple
    feat_dim = rows[0]["features"].shape[-1]
    features = torch.zeros(b, width, feat_dim)
    token_ids = torch.zeros(b, width, dtype=torch.long)
    target_ids = torch.zeros(b, width, dtype=torch.long)
    loss_mask = torch.zeros(b, width, dtype=torch.bool)
    labels = all("label_ids" in r for r in rows)
    k = rows[0]["label_ids"].shape[-1] if labels else 0
    label_ids = torch.zeros(b, width, k, dtype=torch.long) if labels else None
    label_probs = torch.zeros(b, width, k) if labels else None
    for j, r in enumerate(rows):
        n = r["token_ids"].numel()
        features[j, :n] = r["features"].float()
        token_ids[j, :n] = r["token_ids"].long()
        target_ids[j, :n] = r["target_ids"].long()
        loss_mask[j, :n] = r["loss_mask"].bool()
        if labels:
            label_ids[j, :n] = r["label_ids"].long()
            label_probs[j, :n] = r["label_probs"].float()
    return Batch(features, token_ids, target_ids, loss_mask, lengths, label_ids, label_probs)


class LabelCrossEntropy(torch.autograd.Function):
    """Per row: sum_j probs_j * -log softmax(logits)[ids_j], and the row's argmax, through
    the C kernel (csrc/elementwise.c: two passes over each row forward, one backward,
    against ATen's seven). probs [M, k] must be zero where a label is unused (its id any
    valid index). The gradient is the logits' dtype, as autocast's cast back would give."""

    @staticmethod
    def forward(ctx, logits, ids, probs):
        from specdec.models.native import native_label_ce_forward

        lse, loss, greedy = native_label_ce_forward(logits, ids, probs)
        ctx.save_for_backward(logits, ids, probs, lse)
        ctx.mark_non_differentiable(greedy)
        return loss, greedy

    @staticmethod
    def backward(ctx, grad_loss, _grad_greedy):
        from specdec.models.native import native_label_ce_backward

        logits, ids, probs, lse = ctx.saved_tensors
        return native_label_ce_backward(logits, ids, probs, lse, grad_loss), None, None


def label_cross_entropy(logits: torch.Tensor, ids: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([M] loss, [M] argmax) of logits [M, V] against soft labels (ids, probs) [M, k]: the C
    kernel on CPU, else the same sum through log_softmax in float32."""
    from specdec.models.native import native_label_ce_supported

    if native_label_ce_supported(logits):
        return LabelCrossEntropy.apply(logits, ids, probs)
    logp = torch.log_softmax(logits.float(), -1)
    return -(probs * logp.gather(-1, ids)).sum(-1), logp.argmax(-1)


def shift(x: torch.Tensor, n: int) -> torch.Tensor:
    """x[:, t + n] at t, zero-padded at the end ([B, L, ...])."""
    if n == 0:
        return x
    pad = torch.zeros_like(x[:, :n])
    return torch.cat((x[:, n:], pad), dim=1)


def unroll_mask(length: int, step: int) -> torch.Tensor:
    """[L, (step+1)L] bool: causal over the real pairs, then the diagonal of each later step."""
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    eye = torch.eye(length, dtype=torch.bool)
    return torch.cat([causal] + [eye] * step, dim=1)


def compact_rows(keep: torch.Tensor, multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """keep [B, L] bool -> (positions [B, L'], valid [B, L']): each batch row's kept positions
    in order, packed to the left; L' = the most any row keeps (rounded up to a multiple of
    `multiple`, at most L), the tail padded with other positions (valid False).
    keep[b, positions[b, c]] holds exactly where valid[b, c]."""
    b, length = keep.shape
    count = keep.sum(1)
    width = min(length, max(1, -(-int(count.max()) // multiple) * multiple))
    key = torch.arange(length)[None] + length * (~keep).long()  # kept first, each group in order
    positions = key.argsort(dim=1)[:, :width]
    return positions, torch.arange(width)[None] < count[:, None]


def compact_unroll_mask(positions: torch.Tensor, length: int, step: int) -> torch.Tensor:
    """[B, L', L + step * L'] bool for a step >= 1 on compacted rows: the real pairs up to each
    row's position, then the row's own slot of each step 1..step (unroll_mask, rows selected)."""
    causal = torch.arange(length)[None, None] <= positions[:, :, None]  # [B, L', L]
    eye = torch.eye(positions.shape[1], dtype=torch.bool).expand(positions.shape[0], -1, -1)
    return torch.cat([causal] + [eye] * step, dim=2)


def hold_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks of up to 32 MiB in the process for reuse, instead
    of handing them back to the kernel (munmap, heap trims) and faulting fresh zeroed pages in
    at the next step. A training step allocates and frees the same few hundred MB of
    activations, logits and gradients each time; with glibc's defaults that costs many more
    page faults a step than with these settings, and a share of the step's time. The price
    is memory: the peak RSS grows, most when the shapes are not bucketed (`width_multiple`).
    To measure either on a machine, run `/usr/bin/time -v specdec train-draft ...` (page
    faults, maximum RSS) and read `seconds_per_step` in its metrics.jsonl, with and without
    this call (the README's train-draft runs are such comparisons).
    Process-wide, so `specdec train-draft` calls it, not the Trainer. Returns whether both
    settings took (False off glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # 32 MiB is glibc's ceiling for the mmap threshold on 64-bit; setting it also stops the
    # dynamic threshold, whose trims are what returned the memory
    return mallopt(m_mmap_threshold, 32 << 20) == 1 and mallopt(m_trim_threshold, 1 << 30) == 1


class Trainer:
    def __init__(self, head: EagleHead, embed_weight, lm_head_weight, sequences, config: TrainConfig, out_dir) -> None:
        self.head = head
        self.config = config
        self.sequences = sequences
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.embed = torch.nn.Embedding.from_pretrained(embed_weight.detach().float(), freeze=True)
        self.lm_head_weight = lm_head_weight.detach().float()  # [V, D] the target's
        head.attach(self.embed, lambda x: F.linear(x, self.lm_head_weight))
        self.soft_labels = -1 in head.config.feature_layers
        self.label_slice = None
        if self.soft_labels:
            i = head.config.feature_layers.index(-1)
            d = head.config.target_hidden_size
            self.label_slice = slice(i * d, (i + 1) * d)
        d2t = head.draft_to_target
        self.label_weight = self.lm_head_weight if d2t is None else self.lm_head_weight[d2t]  # [V_d, D]
        vocab = head.config.vocab_size
        self.t2d = torch.full((vocab,), -1, dtype=torch.long)
        self.t2d[d2t if d2t is not None else torch.arange(vocab)] = torch.arange(head.config.draft_vocab_size)
        params = [p for p in head.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
        g = torch.Generator().manual_seed(config.seed)
        self.steps_per_epoch = len(make_batches(sequences, config.max_tokens_per_batch, g))
        self.total_steps = self.steps_per_epoch * config.epochs
        self.train_seconds = 0.0  # of the runs before this one (resumed from their checkpoint)
        self._run_start: float | None = None  # time.perf_counter() when this run's train() began
        self.step = 0

    def lr_at(self, step: int) -> float:
        c = self.config
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        progress = (step - c.warmup_steps) / max(1, self.total_steps - c.warmup_steps)
        return c.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    def loss(self, batch: Batch, noise_gen: torch.Generator | None) -> tuple[torch.Tensor, dict]:
        head, c = self.head, self.config
        b, length, _ = batch.features.shape
        feats = batch.features
        inputs = feats
        if noise_gen is not None and c.noise > 0:  # drawn over the longest row: the same noise at any padded width
            n = int(batch.lengths.max())
            noise = (torch.rand((b, n, feats.shape[-1]), generator=noise_gen) - 0.5) * c.noise
            inputs = feats + F.pad(noise, (0, 0, 0, length - n))
        hidden = head.fuse_features(inputs)  # [B, L, D]
        positions = torch.arange(length)[None].expand(b, length)
        t = torch.arange(length)[None]
        # per step j, where a loss is taken: row t predicts feature t+1+j and token t+2+j
        steps = []  # (weight, response, recorded top-k ids or target ids)
        for j in range(c.unroll):
            inside = t + 2 + j < batch.lengths[:, None]  # [B, L]
            response = shift(batch.loss_mask, 2 + j) & inside
            weight = inside if c.prompt_weight > 0 else response
            ids = None
            if batch.label_ids is not None:  # the target's recorded top-k, within the draft vocabulary
                ids = self.t2d[shift(batch.label_ids, 1 + j)]  # [B, L, k], -1 outside
                weight = weight & (ids >= 0).any(-1)
            elif not self.soft_labels:
                ids = self.t2d[shift(batch.target_ids, 1 + j)]  # -1 outside the draft vocab
                weight = weight & (ids >= 0)
            steps.append((weight, response, ids))
        # steps >= 1 run on the rows that take a loss at one of them, packed; step 0's queries
        # on those and the rows that take a loss at step 0 (module docstring)
        later = torch.ones(b, length, dtype=torch.bool)  # every row: the reference
        if c.compact_unroll:
            later = torch.stack([weight for weight, _, _ in steps[1:]]).any(0) if c.unroll > 1 else ~later
        first = later | steps[0][0]
        rows, valid = compact_rows(later, c.width_multiple)  # [B, L'] positions of the packed rows
        width = rows.shape[1]
        total = torch.zeros(())
        metrics: dict[str, float] = {}
        prev: KVCache | None = None
        for j, (weight, response, ids) in enumerate(steps):
            if j == 0:
                cache = KVCache(1, b, length, head.config.num_kv_heads, head.config.head_dim, torch.float32)
                token_ids = shift(batch.token_ids, 1)
                if c.compact_unroll:
                    rows0, valid0 = compact_rows(first, c.width_multiple)  # [B, L0] step 0's query rows
                    hidden = head.step(hidden, token_ids, positions, cache, compact_unroll_mask(rows0, length, 0), rows0)
                    packed = weight.gather(1, rows0) & valid0  # [B, L0]
                else:  # the reference: the whole layer on every row, every position querying
                    hidden = head.step(hidden, token_ids, positions, cache, unroll_mask(length, 0)[None])
                    packed = weight
            else:
                if j == 1:  # rows ⊆ first, both in order: a row's index among step 0's is its rank in first
                    index = (first.long().cumsum(1) - 1).gather(1, rows).clamp(min=0)
                    hidden = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))  # [B, L', D]
                used = length + (j - 1) * width
                cache = KVCache(1, b, used + width, head.config.num_kv_heads, head.config.head_dim, torch.float32)
                cache.k[:, :, :, :used] = prev.k[:, :, :, :used]
                cache.v[:, :, :, :used] = prev.v[:, :, :, :used]
                cache.length = used
                token_ids = shift(batch.token_ids, 1 + j).gather(1, rows)
                hidden = head.step(hidden, token_ids, rows + j, cache, compact_unroll_mask(rows, length, j))
                packed = weight.gather(1, rows) & valid  # the same rows as weight, in the same order
            prev = cache
            # the LM head and the losses only where a loss is taken: [M] of the [B, L] positions
            response = (response & weight)[weight]  # [M]
            out = hidden[packed]  # [M, D]
            pad = -out.shape[0] % c.loss_rows_multiple  # zero rows to a repeating shape, sliced off again
            logits = head_logits_dense(head, F.pad(out, (0, 0, 0, pad)), self.lm_head_weight)[: out.shape[0]]  # [M, V_d]
            next_feats = shift(feats, 1 + j)[weight]  # [M, F]
            if batch.label_ids is not None:
                labels = ids[weight]  # [M, k]
                with torch.no_grad():
                    probs = shift(batch.label_probs, 1 + j)[weight] * (labels >= 0)
                    probs = probs / probs.sum(-1, keepdim=True).clamp(min=1e-9)
                ce, pred = label_cross_entropy(logits, labels.clamp(min=0), probs)
            else:
                logp = torch.log_softmax(logits.float(), -1)
                pred = logp.argmax(-1)
                if self.soft_labels:
                    with torch.no_grad():
                        labels = torch.softmax(F.linear(next_feats[..., self.label_slice], self.label_weight), -1)
                    ce = -(labels * logp).sum(-1)
                else:
                    ce = F.cross_entropy(logp, ids[weight], reduction="none")
            # per position: 1 on response tokens, prompt_weight on prompt tokens
            w = response.float() + c.prompt_weight * (~response).float()
            num = w.sum().clamp(min=1)
            step_loss = c.cls_weight * (ce * w).sum() / num
            if head.config.arch == "eagle1":
                reg = (F.smooth_l1_loss(out, next_feats, reduction="none").mean(-1) * w).sum() / num
                step_loss = step_loss + c.reg_weight * reg
                metrics[f"reg{j}"] = float(reg.detach())
            total = total + c.step_decay**j * step_loss
            with torch.no_grad():
                pred = head.to_target_ids(pred)
                target = shift(batch.target_ids, 1 + j)[weight]
                metrics[f"acc{j}"] = float(((pred == target) & response).sum() / response.sum().clamp(min=1))
        metrics["loss"] = float(total.detach())
        return total, metrics

    def save_checkpoint(self, epoch: int, batch_index: int) -> None:
        state = {
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": epoch,
            "batch_index": batch_index,
            "total_steps": self.total_steps,
            "train_seconds": self.seconds_trained(),
            "config": asdict(self.config),
        }
        tmp = self.out_dir / "checkpoint.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out_dir / "checkpoint.pt")

    def load_checkpoint(self) -> tuple[int, int]:
        path = self.out_dir / "checkpoint.pt"
        if not path.is_file():
            return 0, 0
        state = torch.load(path, weights_only=False)
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.total_steps = state.get("total_steps", self.total_steps)  # a schedule cut to a time budget stays cut
        self.train_seconds = state.get("train_seconds", 0.0)
        return state["epoch"], state["batch_index"]

    def seconds_trained(self) -> float:
        """Training wall time across resumed runs, this one's so far included."""
        return self.train_seconds + (time.perf_counter() - self._run_start if self._run_start is not None else 0.0)

    def save_best(self, score: float, epoch: int) -> dict[str, torch.Tensor]:
        """Keep the best epoch's weights in memory and in OUT/best.pt, so that a resumed run
        still compares against the epochs evaluated before it stopped."""
        weights = {k: v.detach().clone() for k, v in self.head.state_dict().items()}
        tmp = self.out_dir / "best.pt.tmp"
        torch.save({"score": score, "epoch": epoch, "head": weights}, tmp)
        tmp.replace(self.out_dir / "best.pt")
        return weights

    def load_best(self) -> tuple[float, int, dict[str, torch.Tensor] | None]:
        path = self.out_dir / "best.pt"
        if not path.is_file():
            return -1.0, 0, None
        state = torch.load(path, weights_only=True)
        return state["score"], state["epoch"], state["head"]

    def fit_to_deadline(self, deadline: float, seconds_per_step: float, eval_seconds: float) -> bool:
        """Set the schedule's length (the cosine decay follows) to the planned steps or, where
        they do not fit, to the steps that, with the held-out evaluations at the epoch ends
        still to come, finish by `deadline` (time.perf_counter()). A later call with a better
        step time may lengthen it again, never past the plan. Returns whether it changed."""
        planned = self.steps_per_epoch * self.config.epochs
        remaining = planned - self.step
        evals = -(-remaining // max(1, self.steps_per_epoch)) + 1
        fit = int((deadline - time.perf_counter() - evals * eval_seconds - 5.0) / max(seconds_per_step, 1e-6))
        total = self.step + max(0, min(fit, remaining))
        changed = total != self.total_steps
        self.total_steps = total
        return changed

    def train(self, resume: bool = False, eval_sequences: list[dict] | None = None, deadline: float | None = None) -> dict:
        """With eval_sequences, evaluate after every epoch and end on the best epoch's weights
        (by mean next-token agreement over the unrolled steps): early stopping on small data.
        With a deadline (time.perf_counter()) the schedule is shortened, from the measured
        step time, so that training and its evaluations end by then (`fit_to_deadline`)."""
        c = self.config
        epoch0, batch0 = self.load_checkpoint() if resume else (0, 0)
        best_score, best_epoch, best_state = self.load_best() if resume else (-1.0, 0, None)
        self.head.train()
        log = (self.out_dir / "metrics.jsonl").open("a")
        self._run_start = time.perf_counter()
        step_seconds: list[float] = []  # wall time of each step this run
        num_train = sum(s["token_ids"].numel() for s in self.sequences)
        num_eval = sum(s["token_ids"].numel() for s in eval_sequences) if eval_sequences else 0
        eval_seconds: float | None = None  # measured at the first evaluation
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step")
        last: dict = {}
        for epoch in range(epoch0, c.epochs):
            if self.step >= self.total_steps:
                break
            order = make_batches(self.sequences, c.max_tokens_per_batch, torch.Generator().manual_seed(c.seed * 1000 + epoch))
            next_batch = batch0 if epoch == epoch0 else 0
            for bi in range(next_batch, len(order)):
                if self.step >= self.total_steps:
                    break
                next_batch = bi + 1
                t_step = time.perf_counter()
                batch = collate(self.sequences, order[bi], c.width_multiple)
                noise_gen = torch.Generator().manual_seed(c.seed * 1_000_003 + self.step)
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr_at(self.step)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=c.bf16_autocast and self.head.device.type == "cpu"):
                    loss, metrics = self.loss(batch, noise_gen)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for p in self.head.parameters() if p.requires_grad], c.grad_clip)
                self.optimizer.step()
                self.step += 1
                last = {"step": self.step, "epoch": epoch, "lr": self.lr_at(self.step - 1), **metrics}
                log.write(json.dumps(last) + "\n")
                log.flush()
                bar.update(1)
                bar.set_postfix({k: round(v, 3) for k, v in metrics.items() if k.startswith(("loss", "acc"))})
                step_seconds.append(time.perf_counter() - t_step)
                if deadline is not None and len(step_seconds) % 50 == 0:  # the median of recent steps
                    per_step = sorted(step_seconds[-200:])[len(step_seconds[-200:]) // 2]
                    evals = eval_seconds if eval_seconds is not None else 0.5 * per_step * self.steps_per_epoch * num_eval / max(1, num_train)
                    if self.fit_to_deadline(deadline, per_step, evals if eval_sequences else 0.0):
                        bar.total = self.total_steps
                        bar.refresh()
                        log.write(json.dumps({"step": self.step, "total_steps": self.total_steps, "seconds_per_step": round(per_step, 3),
                                              "reason": "time budget"}) + "\n")
                if self.step % c.checkpoint_every == 0:
                    self.save_checkpoint(epoch, bi + 1)
            if eval_sequences:  # before the epoch's checkpoint: a run resumed after it has its score in best.pt
                t_eval = time.perf_counter()
                held = self.evaluate(eval_sequences)
                eval_seconds = time.perf_counter() - t_eval
                score = sum(held[f"acc{j}"] for j in range(c.unroll)) / c.unroll
                log.write(json.dumps({"epoch": epoch + 1, "step": self.step, "held_out": held}) + "\n")
                if score > best_score:
                    best_score, best_epoch, best_state = score, epoch + 1, self.save_best(score, epoch + 1)
                self.head.train()
            cut = next_batch < len(order)  # the schedule ended inside this epoch
            self.save_checkpoint(epoch if cut else epoch + 1, next_batch if cut else 0)
        bar.close()
        log.close()
        if best_state is not None:
            self.head.load_state_dict(best_state)
        self.head.eval()
        self.train_seconds, self._run_start = self.seconds_trained(), None
        return {**last, **({"best_epoch": best_epoch} if best_state is not None else {}),
                "total_steps": self.total_steps, "train_seconds": round(self.train_seconds, 1)}

    @torch.no_grad()
    def evaluate(self, sequences: list[dict]) -> dict:
        """Mean metrics over sequences (no noise), e.g. a held-out split."""
        self.head.eval()
        totals: dict[str, float] = {}
        batches = make_batches(sequences, self.config.max_tokens_per_batch, torch.Generator().manual_seed(0))
        for idx in batches:
            _, metrics = self.loss(collate(sequences, idx, self.config.width_multiple), None)
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + v / len(batches)
        return totals
