"""Would another inference backend make the bundled MiniLM's fp32 forward faster on this CPU?

The text target (extract >= 1.2 x SentenceTransformer.encode at equal precision) can only be met
by a faster forward once padding is gone and both cores are busy. This script times the bare
forward (model + mean pooling + normalisation) over hubtune's own batches of the benchmark
sentences (sorted by token count, 64 rows), alternating, several repeats, for:

- torch eager: what `hubtune extract` runs;
- `hubtune extract --compile`: torch.compile (inductor) with freezing, which folds the weights and
  prepacks them for oneDNN;
- ONNX Runtime's CPU provider with all graph optimisations (only if `onnxruntime` and `onnx` are
  installed: `pip install onnxruntime onnx`), on the same number of threads.

Each variant's vectors are checked against eager's (max abs difference printed) before timing.
Usage: python benchmarks/bench_text_backends.py [--sentences 5000] [--repeats 3]
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, sentences, spread, summary_row, text_arguments, timed  # noqa: E402

MODEL = "hf:sentence-transformers/all-MiniLM-L6-v2"


def ort_forward(backbone: Any, sample: dict, work: Path) -> Callable[[dict], Any]:
    """The backbone's network exported to ONNX and run by ONNX Runtime; pooling as hubtune's."""
    import onnxruntime as ort
    import torch
    import torch.nn.functional as F

    from hubtune.pooling import pool_tokens

    names = list(sample)

    class Hidden(torch.nn.Module):
        def __init__(self, model: Any):
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return self.model(**dict(zip(names, tensors))).last_hidden_state

    path = work / "model.onnx"
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "hidden"]}
    # .eval(): the exporter restores the wrapper's mode afterwards, and a new module is in training
    # mode, which would switch the shared network's dropout on
    torch.onnx.export(Hidden(backbone.model).eval(), tuple(sample.values()), str(path), input_names=names,
                      output_names=["hidden"], dynamic_axes=axes, opset_version=17, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads leave the cores to torch
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(batch: dict) -> Any:
        hidden = torch.from_numpy(session.run(None, {name: batch[name].numpy() for name in names})[0])
        vectors = pool_tokens(hidden, batch["attention_mask"], backbone.pool)
        return F.normalize(vectors, dim=-1) if backbone.normalize else vectors

    return forward


def main() -> None:
    args = text_arguments(__doc__)

    import torch
    import torch._inductor.config as inductor

    import hubtune
    from hubtune.extract.batches import prepared_batches

    eager = hubtune.load_backbone(MODEL, precision="fp32", device="cpu")
    samples = eager.preprocessor.prepare_many(sentences(args.sentences))
    batches = [batch for _, batch, _ in prepared_batches(eager.preprocessor, samples, 0, 64)]

    def run(forward: Callable[[dict], Any]) -> Any:
        with torch.inference_mode():
            return torch.cat([forward(batch) for batch in batches])

    reference = run(eager.embed_batch)
    variants: dict[str, Callable[[dict], Any]] = {"torch eager": eager.embed_batch}
    inductor.freezing = True
    compiled = hubtune.load_backbone(MODEL, precision="fp32", device="cpu")
    compiled.compile()
    variants["torch.compile (inductor, freezing)"] = compiled.embed_batch
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        variants["ONNX Runtime (CPU, all graph optimisations)"] = ort_forward(
            eager, batches[0], Path(tempfile.mkdtemp(prefix="hubtune-ort-")))
    else:
        print("onnxruntime/onnx not installed: ONNX Runtime skipped (pip install onnxruntime onnx)")

    for name, forward in variants.items():
        seconds = timed(lambda: run(forward))  # warm-up (compilation happens here)
        print(f"{name}: warm-up {seconds:.1f}s, max |difference| from eager "
              f"{float((run(forward) - reference).abs().max()):.2e}", flush=True)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, forward in variants.items():
            times[name].append(timed(lambda: run(forward)))
        print(f"repeat {repeat}: " + ", ".join(f"{name} {values[-1]:.2f}s" for name, values in times.items()), flush=True)
    base = times["torch eager"]
    for name, values in times.items():
        print(f"{name:>45}: {spread(values)}; speed vs eager {statistics.median(base) / statistics.median(values):.2f}x")
    tokens = sum(int(batch["input_ids"].numel()) for batch in batches)
    result = {"sentences": len(samples), "tokens_in_batches": tokens, "threads": torch.get_num_threads(),
              "seconds": times,
              "summary": [summary_row(f"MiniLM fp32 forward, {name} vs torch eager", base, values, "")
                          for name, values in times.items() if name != "torch eager"]}
    print(f"saved {save('text-backends', result)}")


if __name__ == "__main__":
    main()
