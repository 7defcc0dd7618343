"""Text extraction: `hubtune extract` vs `SentenceTransformer.encode` vs a transformers
`pipeline("feature-extraction")` loop, bundled MiniLM, same sentences, same precision (fp32).

Measured in one run, alternating, several repeats (this machine is shared and noisy):

- in-process, same precision (fp32): hubtune's extractor into a fresh store vs encode(batch_size=64)
  vs the pipeline (batch_size=64, truncation at the model's 256 tokens) followed by the mean pooling
  and L2 normalisation a user adds to get the same sentence vectors;
- cache: reading the whole dataset's cached vectors back vs computing them;
- the whole `hubtune extract` command (start-up, model load and store writes included) at its
  default precision vs encode in-process at its default (fp32);
- the same command again over the fully cached data (it must not even load the model).

Usage: python benchmarks/bench_text_extract.py [--sentences 5000] [--repeats 3]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, sentences, spread, summary_row, text_arguments, timed  # noqa: E402

MODEL = "hf:sentence-transformers/all-MiniLM-L6-v2"


def main() -> None:
    args = text_arguments(__doc__)

    import numpy as np
    from sentence_transformers import SentenceTransformer
    from transformers import pipeline

    import hubtune
    from hubtune.backbone import LoadOptions
    from hubtune.extract import extract
    from hubtune.store import EmbeddingStore
    from hubtune.store.vectors import load_dataset_vectors
    from hubtune_hf.embedded import embedded_files

    texts = sentences(args.sentences)
    work = Path(tempfile.mkdtemp(prefix="hubtune-bench-"))
    table = work / "sentences.jsonl"
    table.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    st = SentenceTransformer(str(embedded_files()), device="cpu")
    backbone = hubtune.load_backbone(MODEL, precision="fp32", device="cpu")
    pipe = pipeline("feature-extraction", model=str(embedded_files()), device="cpu")

    def pipeline_vectors() -> np.ndarray:
        tokens = pipe(texts, batch_size=64, tokenize_kwargs={"truncation": True, "max_length": 256})
        means = np.stack([np.asarray(t[0]).mean(axis=0) for t in tokens])
        return means / np.linalg.norm(means, axis=1, keepdims=True)

    st.encode(texts[:64], batch_size=64)  # warm all three
    backbone.embed(texts[:64])
    pipe(texts[:64], batch_size=64)

    st_times, ours_times, pipe_times, read_times, cli_times, cached_times = [], [], [], [], [], []
    for repeat in range(args.repeats):
        st_times.append(timed(lambda: st.encode(texts, batch_size=64)))
        with EmbeddingStore(work / f"inproc-{repeat}") as store:
            summary = extract(MODEL, table, store, backbone=backbone, batch_size=64, options=LoadOptions(precision="fp32"),
                              progress=False)
            ours_times.append(summary.seconds)
            read_times.append(timed(lambda: load_dataset_vectors(store, summary.fingerprint, summary.dataset)))
        pipe_times.append(timed(pipeline_vectors))
        command = [sys.executable, "-m", "hubtune", "extract", MODEL, str(table), "--cache", str(work / f"cli-{repeat}"),
                   "--no-progress", "--json"]
        cli_times.append(timed(lambda: subprocess.run(command, check=True, capture_output=True)))
        cached_times.append(timed(lambda: subprocess.run(command, check=True, capture_output=True)))
        print(f"repeat {repeat}: encode {st_times[-1]:.2f}s, extract(fp32) {ours_times[-1]:.2f}s, "
              f"pipeline {pipe_times[-1]:.2f}s, cached read {read_times[-1] * 1000:.1f}ms, CLI {cli_times[-1]:.2f}s, "
              f"cached CLI {cached_times[-1]:.3f}s", flush=True)

    med = statistics.median
    result = {
        "sentences": len(texts),
        "encode_fp32_s": st_times, "hubtune_extract_fp32_s": ours_times, "pipeline_fp32_s": pipe_times,
        "cached_read_s": read_times,
        "hubtune_cli_default_precision_s": cli_times, "hubtune_cli_cached_s": cached_times,
        "ratio_inprocess_same_precision": med(st_times) / med(ours_times),
        "ratio_vs_pipeline_same_precision": med(pipe_times) / med(ours_times),
        "ratio_recompute_vs_cached_read": med(ours_times) / med(read_times),
        "ratio_cli_default_vs_encode": med(st_times) / med(cli_times),
        "ratio_first_vs_cached_cli": med(cli_times) / med(cached_times),
    }
    print(f"encode (fp32, in-process):          {spread(st_times)}")
    print(f"hubtune extract (fp32, in-process): {spread(ours_times)}")
    print(f"pipeline loop (fp32, in-process):   {spread(pipe_times)}")
    print(f"cached read of all vectors:         {spread(read_times)}")
    print(f"hubtune extract CLI (default):      {spread(cli_times)}")
    print(f"hubtune extract CLI, all cached:    {spread(cached_times)}")
    print(f"throughput ratio hubtune/encode, same precision: {result['ratio_inprocess_same_precision']:.2f}x (target >= 1.2)")
    print(f"throughput ratio hubtune/pipeline loop, same precision: {result['ratio_vs_pipeline_same_precision']:.2f}x")
    print(f"recompute / cached read:                         {result['ratio_recompute_vs_cached_read']:.0f}x (target >= 100)")
    print(f"whole CLI at default precision vs encode:        {result['ratio_cli_default_vs_encode']:.2f}x (target >= 1.5)")
    print(f"first run / cached rerun (whole command):        {result['ratio_first_vs_cached_cli']:.1f}x (target >= 20)")
    result["summary"] = [
        summary_row("text extract vs SentenceTransformer.encode, fp32, in-process", st_times, ours_times, ">= 1.2"),
        summary_row("text extract vs transformers pipeline loop, fp32, in-process", pipe_times, ours_times, ""),
        summary_row("cached read vs recompute, all vectors of the dataset", ours_times, read_times, ">= 100"),
        summary_row("whole `hubtune extract` command (default precision) vs encode", st_times, cli_times, ">= 1.5 on bf16 CPUs"),
        summary_row("whole command, fully cached rerun vs first run", cli_times, cached_times, ">= 20"),
    ]
    print(f"saved {save('text-extract', result)}")


if __name__ == "__main__":
    main()
