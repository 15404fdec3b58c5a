"""Weight layouts for CPU linears: which kernel streams the weights fastest.

    python benchmarks/linear_layouts.py [--rows 1,2,4,8,16 --rounds 15 --threads 2]

Runs the default model's 120 per-layer matrices (30 layers of wqkv 960x576, wo 576x576,
w13 3072x576, w2 576x1536; random values, the kernels do not care) at M rows, the
shapes a decode step (M = 1) and a verify pass (M = K + 1) multiply, through each route:

  F.linear      torch's default: MKL for float32, a oneDNN matmul over W^T for bfloat16
  onednn        mkldnn._linear_pointwise on the dense [N, K] weight (CPULinear, float32)
  blocked       the same call on the weight reordered once by mkldnn._reorder_linear_weight
                (BlockedLinear, bfloat16 without the C kernel)
  native        the engine's C kernel on its panel-packed weight (PackedLinear, csrc/matmul.c),
                where it is built for the dtype

The matrices total 425 MB in float32 and 212 MB in bfloat16, past the caches, so each
pass streams them from DRAM as decoding does. Rounds interleave the routes (this
machine is shared); each cell is the median round, as ms per pass and GB/s of weights.
It also checks that the blocked layout returns, bit for bit, the products of the route
the engine would use otherwise (float32: onednn; bfloat16: F.linear). The native kernel
computes other (invariant) reduction orders, so it is checked for closeness only; its bit
for bit properties are tests/test_native.py's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from specdec.models.linear import _onednn_linear as onednn  # the call CPULinear/BlockedLinear make
from specdec.models.native import native_linear, native_linear_supported, native_pack

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]
LAYERS = 30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="1,2,4,8,16")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [int(r) for r in args.rows.split(",")]
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads; ms per pass over the 120 matrices (GB/s of weights)")
    print(f"{'dtype':9} {'rows':>4} {'F.linear':>16} {'onednn':>16} {'blocked':>16} {'native':>16}  blocked exact")
    for dtype in (torch.float32, torch.bfloat16):
        weights = [torch.randn(n, k).mul_(0.05).to(dtype) for _ in range(LAYERS) for n, k in SHAPES]
        blocked = [torch.ops.mkldnn._reorder_linear_weight(w, 1) for w in weights]
        nbytes = sum(w.numel() * w.element_size() for w in weights)
        routes = {
            "F.linear": (lambda x, w: F.linear(x, w), weights),
            "onednn": (lambda x, w: onednn(x, w, None), weights),
            "blocked": (lambda x, w: onednn(x, w, None), blocked),
        }
        if native_linear_supported(dtype):
            packed = [(native_pack(w), w.shape[0], w.shape[1]) for w in weights]
            routes["native"] = (lambda x, p: native_linear(x, *p), packed)
        for m in rows:
            xs = [torch.randn(m, w.shape[1]).to(dtype) for w in weights]
            times = {name: [] for name in routes}
            for r in range(args.rounds + 1):
                for name, (fn, ws) in routes.items():
                    t0 = time.perf_counter()
                    for x, w in zip(xs, ws):
                        fn(x, w)
                    if r:  # round 0 warms up
                        times[name].append(time.perf_counter() - t0)
            dense_route = routes["onednn" if dtype == torch.float32 else "F.linear"][0]
            same = all(torch.equal(onednn(x, b, None), dense_route(x, w)) for x, w, b in zip(xs[:8], weights[:8], blocked[:8]))
            cells = []
            for name in routes:
                t = statistics.median(times[name])
                cells.append(f"{t * 1e3:6.2f} ({nbytes / t / 1e9:4.1f})")
            if "native" in routes:
                for x, w, p in zip(xs[:8], weights[:8], routes["native"][1][:8]):
                    torch.testing.assert_close(native_linear(x, *p).float(), F.linear(x.float(), w.float()), atol=2e-2, rtol=2e-2)
            else:
                cells.append("-")
            exact = "yes" if same else "NO"
            print(f"{str(dtype).replace('torch.', ''):9} {m:4} " + " ".join(f"{c:>16}" for c in cells) + f"  {exact}", flush=True)


if __name__ == "__main__":
    main()
