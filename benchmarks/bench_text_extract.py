"""Text extraction: `hubtune extract` vs `SentenceTransformer.encode`, bundled MiniLM, same sentences.

Measured in one run, alternating, several repeats (this machine is shared and noisy):

- in-process, same precision (fp32): hubtune's extractor into a fresh store vs encode(batch_size=64);
- the whole `hubtune extract` command (start-up, model load and store writes included) at its
  default precision vs encode in-process at its default (fp32);
- the same command again over the fully cached data (it must not even load the model).

Usage: python benchmarks/bench_text_extract.py [--sentences 5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, sentences, spread, timed  # noqa: E402

MODEL = "hf:sentence-transformers/all-MiniLM-L6-v2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from sentence_transformers import SentenceTransformer

    import hubtune
    from hubtune.backbone import LoadOptions
    from hubtune.extract import extract
    from hubtune.store import EmbeddingStore
    from hubtune_hf.embedded import embedded_files

    texts = sentences(args.sentences)
    work = Path(tempfile.mkdtemp(prefix="hubtune-bench-"))
    table = work / "sentences.jsonl"
    table.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    st = SentenceTransformer(str(embedded_files()), device="cpu")
    backbone = hubtune.load_backbone(MODEL, precision="fp32", device="cpu")
    st.encode(texts[:64], batch_size=64)  # warm both
    backbone.embed(texts[:64])

    st_times, ours_times, cli_times, cached_times = [], [], [], []
    for repeat in range(args.repeats):
        st_times.append(timed(lambda: st.encode(texts, batch_size=64)))
        with EmbeddingStore(work / f"inproc-{repeat}") as store:
            ours_times.append(timed(lambda: extract(MODEL, table, store, backbone=backbone, batch_size=64,
                                                    options=LoadOptions(precision="fp32"), progress=False)))
        command = [sys.executable, "-m", "hubtune", "extract", MODEL, str(table), "--cache", str(work / f"cli-{repeat}"),
                   "--no-progress", "--json"]
        cli_times.append(timed(lambda: subprocess.run(command, check=True, capture_output=True)))
        cached_times.append(timed(lambda: subprocess.run(command, check=True, capture_output=True)))
        print(f"repeat {repeat}: encode {st_times[-1]:.2f}s, extract(fp32) {ours_times[-1]:.2f}s, "
              f"CLI {cli_times[-1]:.2f}s, cached CLI {cached_times[-1]:.3f}s", flush=True)

    med = statistics.median
    result = {
        "sentences": len(texts),
        "encode_fp32_s": st_times, "hubtune_extract_fp32_s": ours_times,
        "hubtune_cli_default_precision_s": cli_times, "hubtune_cli_cached_s": cached_times,
        "ratio_inprocess_same_precision": med(st_times) / med(ours_times),
        "ratio_cli_default_vs_encode": med(st_times) / med(cli_times),
        "ratio_first_vs_cached_cli": med(cli_times) / med(cached_times),
    }
    print(f"encode (fp32, in-process):          {spread(st_times)}")
    print(f"hubtune extract (fp32, in-process): {spread(ours_times)}")
    print(f"hubtune extract CLI (default):      {spread(cli_times)}")
    print(f"hubtune extract CLI, all cached:    {spread(cached_times)}")
    print(f"throughput ratio hubtune/encode, same precision: {result['ratio_inprocess_same_precision']:.2f}x (target >= 1.0)")
    print(f"whole CLI at default precision vs encode:        {result['ratio_cli_default_vs_encode']:.2f}x (target >= 1.5)")
    print(f"first run / cached rerun (whole command):        {result['ratio_first_vs_cached_cli']:.1f}x (target >= 20)")
    print(f"saved {save('text-extract', result)}")


if __name__ == "__main__":
    main()
