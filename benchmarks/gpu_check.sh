#!/usr/bin/env bash
# One prepared GPU check (NVIDIA): the card's ceilings, then `hubtune bench` against them.
#   1. pinned host<->device copy bandwidth and the bf16 matmul rate (8192^3), the ceilings;
#   2. `hubtune bench` for timm resnet50 and vit_base_patch16_224 (random weights) at bf16 with
#      channels-last and torch.compile, batch sizes 64 and 256;
#   3. achieved TFLOP/s (items/s x 2 x GMACs) as a fraction of the measured matmul ceiling.
# Needs a Python with CUDA torch, timm and transformers; installs hubtune itself without deps if
# missing. Finishes well under 8 minutes on an H100/H200. Results: $OUT (or benchmarks/results).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c "import hubtune" 2>/dev/null || "$PYTHON" -m pip install -q --no-deps -e .
RESULTS="${OUT:-benchmarks/results}"
mkdir -p "$RESULTS"
STAMP="$(date +%Y-%m-%d)"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

"$PYTHON" - "$RESULTS/gpu-ceilings-$STAMP.json" <<'PY'
import json, sys, torch
assert torch.cuda.is_available(), "no CUDA device"
device = torch.device("cuda")
def timed(fn, repeats=10):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn(); torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        fn()
    end.record(); torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / repeats
host = torch.empty(1 << 30, dtype=torch.uint8, pin_memory=True)
card = torch.empty(1 << 30, dtype=torch.uint8, device=device)
h2d = (1 << 30) / timed(lambda: card.copy_(host, non_blocking=True)) / 1e9
d2h = (1 << 30) / timed(lambda: host.copy_(card, non_blocking=True)) / 1e9
a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
tflops = 2 * 8192 ** 3 / timed(lambda: a @ b, 20) / 1e12
result = {"device": torch.cuda.get_device_name(), "h2d_gb_s": round(h2d, 1), "d2h_gb_s": round(d2h, 1),
          "bf16_matmul_tflops": round(tflops, 1)}
print(json.dumps(result))
json.dump(result, open(sys.argv[1], "w"), indent=2)
PY

for model in timm:resnet50 timm:vit_base_patch16_224; do
    name="${model#timm:}"
    "$PYTHON" -m hubtune bench "$model" --weights random --device cuda --precision bf16 --channels-last --compile \
        --batch-sizes 64,256 --warmup 5 --iters 20 --repeats 3 --json > "$RESULTS/gpu-bench-$name-$STAMP.json"
done

"$PYTHON" - "$RESULTS" "$STAMP" <<'PY'
import json, sys
from pathlib import Path
results, stamp = Path(sys.argv[1]), sys.argv[2]
ceiling = json.loads((results / f"gpu-ceilings-{stamp}.json").read_text())["bf16_matmul_tflops"]
print(f"bf16 matmul ceiling: {ceiling} TFLOP/s")
for path in sorted(results.glob(f"gpu-bench-*-{stamp}.json")):
    for row in json.loads(path.read_text()):
        if row["error"] or not row["gmacs"]:
            print(f"{row['model']} bs={row['batch_size']}: {row['error'] or 'no GMACs'}")
            continue
        achieved = row["items_per_s"] * 2 * row["gmacs"] / 1e3
        print(f"{row['model']} bs={row['batch_size']}: {row['items_per_s']:.0f} img/s, {achieved:.1f} TFLOP/s "
              f"= {achieved / ceiling:.0%} of the measured ceiling")
PY
