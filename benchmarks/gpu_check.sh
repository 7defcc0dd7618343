#!/usr/bin/env bash
# One prepared GPU check (NVIDIA): the card's ceilings, then `hubtune bench` against them.
#   1. pinned host<->device copy bandwidth and the bf16 matmul rate (8192^3), the ceilings;
#   2. `hubtune bench` for timm resnet50 and vit_base_patch16_224 (random weights) at bf16 with
#      channels-last and torch.compile, batch sizes 64 and 256;
#   3. achieved TFLOP/s (items/s x 2 x GMACs) as a fraction of the measured matmul ceiling.
# Needs a Python with CUDA torch, timm and transformers; installs hubtune itself offline (no deps,
# no build isolation: the GPU machine may reach no package index) if missing.
# Finishes well under 8 minutes on an H100/H200. Results: $OUT (or benchmarks/results).
# GPU_CHECK_SMOKE=1 runs the same steps on the CPU with tiny timm test models in seconds, so the
# script is known to work before GPU time is spent on it (tests/test_gpu_check_script.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c "import hubtune_timm" 2>/dev/null \
    || "$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index -e .
RESULTS="${OUT:-benchmarks/results}"
mkdir -p "$RESULTS"
STAMP="$(date +%Y-%m-%d)"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then
    DEVICE=cpu MATMUL=256 MODELS="timm:test_resnet timm:test_vit"
    BENCH=(--precision fp32 --no-compile --batch-sizes 2 --warmup 1 --iters 2 --repeats 1)
else
    DEVICE=cuda MATMUL=8192 MODELS="timm:resnet50 timm:vit_base_patch16_224"
    BENCH=(--precision bf16 --channels-last --compile --batch-sizes 64,256 --warmup 5 --iters 20 --repeats 3)
fi

"$PYTHON" - "$RESULTS/gpu-ceilings-$STAMP.json" "$DEVICE" "$MATMUL" <<'PY'
import json, sys, time, torch
out, device, n = sys.argv[1], torch.device(sys.argv[2]), int(sys.argv[3])
cuda = device.type == "cuda"
assert cuda or sys.argv[2] == "cpu", "no CUDA device"
assert not cuda or torch.cuda.is_available(), "no CUDA device"
def timed(fn, repeats=10):
    fn()
    if not cuda:
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record(); torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / repeats
result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__}
if cuda:  # pinned host memory <-> card, 1 GiB each way
    host = torch.empty(1 << 30, dtype=torch.uint8, pin_memory=True)
    card = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    result["h2d_gb_s"] = round((1 << 30) / timed(lambda: card.copy_(host, non_blocking=True)) / 1e9, 1)
    result["d2h_gb_s"] = round((1 << 30) / timed(lambda: host.copy_(card, non_blocking=True)) / 1e9, 1)
dtype = torch.bfloat16 if cuda else torch.float32
a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
result["matmul_dtype"] = str(dtype).removeprefix("torch.")
result["matmul_tflops"] = round(2 * n ** 3 / timed(lambda: a @ b, 20) / 1e12, 3)
print(json.dumps(result))
json.dump(result, open(out, "w"), indent=2)
PY

for model in $MODELS; do
    name="${model#timm:}"
    "$PYTHON" -m hubtune bench "$model" --weights random --device "$DEVICE" "${BENCH[@]}" \
        --json > "$RESULTS/gpu-bench-$name-$STAMP.json"
done

"$PYTHON" - "$RESULTS" "$STAMP" <<'PY'
import json, sys
from pathlib import Path
results, stamp = Path(sys.argv[1]), sys.argv[2]
ceilings = json.loads((results / f"gpu-ceilings-{stamp}.json").read_text())
ceiling = ceilings["matmul_tflops"]
print(f"{ceilings['device']}: {ceilings['matmul_dtype']} matmul ceiling {ceiling} TFLOP/s"
      + (f", copies {ceilings['h2d_gb_s']} GB/s to the card, {ceilings['d2h_gb_s']} GB/s back" if "h2d_gb_s" in ceilings else ""))
for path in sorted(results.glob(f"gpu-bench-*-{stamp}.json")):
    for row in json.loads(path.read_text()):
        if row["error"] or not row["gmacs"]:
            print(f"{row['model']} bs={row['batch_size']}: {row['error'] or 'no GMACs'}")
            continue
        achieved = row["items_per_s"] * 2 * row["gmacs"] / 1e3
        print(f"{row['model']} bs={row['batch_size']} {row['precision']}: {row['items_per_s']:.0f} img/s, "
              f"{achieved:.3f} TFLOP/s = {achieved / ceiling:.0%} of the measured ceiling")
PY
