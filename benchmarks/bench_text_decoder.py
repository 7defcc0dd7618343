"""A decoder embedder: `hubtune extract` vs `SentenceTransformer.encode` on a Qwen3-Embedding-shaped model.

The model is built on the fly with random weights (no download): a Qwen3 decoder (hidden 384,
4 layers, 6 heads of 64, 2 key/value heads, MLP 1024), the sentence-transformers files of
Qwen3-Embedding (lasttoken pooling, Normalize, the query instruction prompt, max_seq_length 512) and
a byte-level BPE tokenizer trained on the benchmark's own sentences that pads on the left and
appends <|endoftext|>, as Qwen3-Embedding's does. It is seeded into a private Hub cache, so hubtune
loads it as `hf:ORG/NAME` and sentence-transformers loads the same folder.

Measured in one run, alternating, several repeats: hubtune's extractor (in-process, fp32, into a
fresh store; its length-sorted batches of 64; its defaults, i.e. two one-thread forwards at once on a
CPU) vs `encode(batch_size=64)` (fp32, torch's default threads), the same sentences (3 to 150 words);
then the same with one torch thread each (`torch.set_num_threads(1)`, `streams=1`): the forward is
the same code, so that row shows batching and tokenising alone, and it is far less sensitive to other
processes on a shared machine than two-thread OpenMP regions are. The vectors are compared too
(cosine; the store keeps float16).

Usage: python benchmarks/bench_text_decoder.py [--sentences 1500] [--repeats 3]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fact_row, save, sentences, spread, summary_row, text_arguments, timed  # noqa: E402

REPO = "hubtune-bench/qwen3-embedding-shaped"
QUERY = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
SHAPE = dict(hidden_size=384, num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=2, head_dim=64,
             intermediate_size=1024, max_position_embeddings=2048)


def build(folder: Path, corpus: list[str]) -> None:
    """A Qwen3-Embedding-shaped sentence-transformers repository with random weights."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    eos = "<|endoftext|>"
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=8000, special_tokens=[eos], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {eos}",
                                                             special_tokens=[(eos, tokenizer.token_to_id(eos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos, pad_token=eos, padding_side="left",
                                   model_max_length=32768)
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    Qwen3Model(Qwen3Config(vocab_size=len(fast), **SHAPE)).save_pretrained(folder)
    files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
        "1_Pooling/config.json": {"word_embedding_dimension": SHAPE["hidden_size"], "pooling_mode_lasttoken": True,
                                  "include_prompt": True},
        "sentence_bert_config.json": {"max_seq_length": 512, "do_lower_case": False},
        "config_sentence_transformers.json": {"model_type": "SentenceTransformer", "prompts": {
            "query": QUERY, "document": ""}, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    }
    for name, payload in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(payload, indent=2))


def main() -> None:
    args = text_arguments(__doc__ or "")
    if "--sentences" not in sys.argv:
        args.sentences = 1500  # a 4-layer decoder: 1,500 sentences keep a repeat near a minute on 2 cores
    work = Path(tempfile.mkdtemp(prefix="hubtune-bench-decoder-"))
    os.environ["HF_HUB_CACHE"] = str(work / "hub")  # a private cache: nothing lands in the user's
    os.environ["HF_HUB_OFFLINE"] = "1"

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    import hubtune
    from hubtune.backbone import LoadOptions
    from hubtune.extract import extract
    from hubtune.hfhub import repo_folder, seed_snapshot
    from hubtune.store import EmbeddingStore
    from hubtune.store.vectors import load_dataset_vectors

    texts = sentences(args.sentences)
    build(work / "repo", texts)
    commit = seed_snapshot(REPO, work / "repo")
    folder = repo_folder(REPO) / "snapshots" / commit
    table = work / "sentences.jsonl"
    table.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    model = f"hf:{REPO}"
    st = SentenceTransformer(str(folder), device="cpu")
    backbone = hubtune.load_backbone(model, precision="fp32", device="cpu")
    st.encode(texts[:64], batch_size=64)  # warm both
    backbone.embed(texts[:64])

    load_before = os.getloadavg()  # the machine is shared: how busy it was is part of the result
    threads = torch.get_num_threads()
    times: dict[str, list[float]] = {"encode": [], "extract": [], "encode_1t": [], "extract_1t": []}
    encoded: list = []

    def ours(name: str, streams: int | None) -> Any:
        with EmbeddingStore(work / name) as store:
            summary = extract(model, table, store, backbone=backbone, batch_size=64, streams=streams,
                              options=LoadOptions(precision="fp32"), progress=False)
            return summary.seconds, load_dataset_vectors(store, summary.fingerprint, summary.dataset).vectors

    for repeat in range(args.repeats):
        torch.set_num_threads(threads)
        times["encode"].append(timed(lambda: encoded.append(st.encode(texts, batch_size=64))))
        seconds, vectors = ours(f"store-{repeat}", None)
        times["extract"].append(seconds)
        torch.set_num_threads(1)
        times["encode_1t"].append(timed(lambda: st.encode(texts, batch_size=64)))
        times["extract_1t"].append(ours(f"store-1t-{repeat}", 1)[0])
        print(f"repeat {repeat}: encode {times['encode'][-1]:.2f}s, extract(fp32) {times['extract'][-1]:.2f}s; "
              f"one thread each: encode {times['encode_1t'][-1]:.2f}s, extract {times['extract_1t'][-1]:.2f}s",
              flush=True)
    torch.set_num_threads(threads)
    st_times, ours_times = times["encode"], times["extract"]

    reference = encoded[-1]
    cosine = (vectors * reference).sum(1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))
    ratio = statistics.median(st_times) / statistics.median(ours_times)
    ratio_1t = statistics.median(times["encode_1t"]) / statistics.median(times["extract_1t"])
    result = {
        "sentences": len(texts), "model": {"shape": SHAPE, "pooling": "lasttoken", "padding": "left",
                                           "normalize": True, "max_seq_length": 512},
        "torch_threads": threads,
        "load_average_1_5_15_min_before_after": [list(load_before), list(os.getloadavg())],
        "encode_fp32_s": st_times, "hubtune_extract_fp32_s": ours_times,
        "encode_fp32_one_thread_s": times["encode_1t"], "hubtune_extract_fp32_one_thread_s": times["extract_1t"],
        "ratio_inprocess_same_precision": ratio, "ratio_one_thread_each": ratio_1t,
        "min_cosine_stored_vs_encode": float(cosine.min()),
    }
    print(f"encode (fp32, in-process):          {spread(st_times)}")
    print(f"hubtune extract (fp32, in-process): {spread(ours_times)}")
    print(f"encode, one thread:                 {spread(times['encode_1t'])}")
    print(f"hubtune extract, one thread:        {spread(times['extract_1t'])}")
    print(f"throughput ratio hubtune/encode, same precision: {ratio:.2f}x (target >= 1.0)")
    print(f"the same, one thread each:                       {ratio_1t:.2f}x")
    print(f"lowest cosine, stored (float16) vs encode: {cosine.min():.6f}")
    result["summary"] = [
        summary_row("decoder embedder (Qwen3-Embedding-shaped, lasttoken, left padding) extract vs encode, fp32",
                    st_times, ours_times, ">= 1.0"),
        summary_row("the same, one torch thread each (extract streams=1)", times["encode_1t"], times["extract_1t"], ""),
        fact_row("same vectors: lowest cosine of stored (float16) vs encode", f"{cosine.min():.6f}", ">= 0.9999"),
    ]
    print(f"saved {save('text-decoder', result)}")


if __name__ == "__main__":
    main()
