"""A sentence-transformers repository's whole pipeline, reproduced: parity with ``SentenceTransformer.encode``.

Each repository is a tiny random replica built here with the real repositories' config files
(``modules.json``, ``1_Pooling/config.json``, ``2_Dense/config.json`` + ``model.safetensors``,
``config_sentence_transformers.json``, ``sentence_bert_config.json``, tokenizer files), in the shapes
of Qwen3-Embedding (a Qwen3 decoder, lasttoken, left padding, Normalize, a query instruction),
EmbeddingGemma (a bidirectional Gemma3 text model, mean, two Identity Dense layers, Normalize, a
default prompt), LaBSE (BERT, cls, a Tanh Dense, Normalize) and multilingual-e5 (query:/passage:
prompts, mean), plus weightedmean, mean_sqrt_len_tokens, max and ``include_prompt: false``. Each is
seeded into the Hub cache and loaded as ``hf:ORG/NAME``; sentence-transformers loads the same folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hubtune

OWNER = "hubtune-test"
QWEN_QUERY = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
GEMMA_PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: ",
                 "Clustering": "task: clustering | query: "}
TEXTS = [
    "A man is eating food.",
    "   leading spaces and a\ttab inside",
    "\tA tab first, then a sentence that goes on and on so that it is by far the longest text of this batch.",
    "trailing space ",
    "Ünïcödé, emoji 🙂 and punctuation!?",
    "x",
    "word " * 60,  # past max_seq_length: truncation must match
]
CORPUS = [QWEN_QUERY, *GEMMA_PROMPTS.values(), "query: passage: ", *TEXTS[:5],
          "the quick brown fox jumps over the lazy dog while a man is eating food"]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def assert_parity(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.shape == reference.shape
    assert _cosine(ours, reference).min() >= 1 - 1e-4
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=1e-3)


def _bpe(folder: Path, bos: str | None, eos: str, pad: str, padding_side: str) -> Any:
    """A byte-level BPE tokenizer trained on a few sentences (Qwen3 and Gemma use byte-level vocabularies)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [token for token in (pad, eos, bos) if token]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(CORPUS * 3, trainers.BpeTrainer(
        vocab_size=420, special_tokens=list(dict.fromkeys(specials)), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    template = f"{bos} $A {eos}" if bos else f"$A {eos}"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, tokenizer.token_to_id(t)) for t in dict.fromkeys(specials)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, pad_token=pad,
                                   padding_side=padding_side, model_max_length=128)
    fast.save_pretrained(folder)
    return fast


def _transformer(folder: Path, arch: str, padding_side: str) -> int:
    """Save a tiny random model of ``arch`` and its tokenizer in ``folder``; return its width."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast, Gemma3TextConfig, Qwen3Config

    from hubtune_hf.embedded import embedded_files

    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=128)
    if arch == "bert":
        tokenizer = BertTokenizerFast(vocab_file=str(embedded_files() / "vocab.txt"))
        tokenizer.save_pretrained(folder)
        BertModel(BertConfig(vocab_size=tokenizer.vocab_size, **small), add_pooling_layer=False).save_pretrained(folder)
        return 32
    from transformers import AutoModel

    if arch == "qwen3":
        tokenizer = _bpe(folder, None, "<|endoftext|>", "<|endoftext|>", padding_side)
        config: Any = Qwen3Config(vocab_size=len(tokenizer), num_key_value_heads=1, head_dim=16, **small)
    else:
        tokenizer = _bpe(folder, "<bos>", "<eos>", "<pad>", padding_side)
        config = Gemma3TextConfig(vocab_size=len(tokenizer), num_key_value_heads=1, head_dim=16, sliding_window=8,
                                  use_bidirectional_attention=True, pad_token_id=tokenizer.pad_token_id, **small)
    AutoModel.from_config(config).save_pretrained(folder)
    return 32


def _write(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))


def build_repo(folder: Path, arch: str, pooling: dict[str, Any], dense: list[tuple[int, bool, str]] = (),
               normalize: bool = True, prompts: dict[str, str] | None = None, default_prompt: str | None = None,
               padding_side: str = "right", max_seq_length: int = 48, lowercase: bool = False) -> Path:
    """The files of a sentence-transformers repository: Transformer, Pooling, Dense (out, bias,
    activation) each, then Normalize."""
    import torch
    from safetensors.torch import save_file

    width = _transformer(folder, arch, padding_side)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    _write(folder / "1_Pooling" / "config.json", {"word_embedding_dimension": width, **pooling})
    width *= max(1, sum(value is True for key, value in pooling.items() if key.startswith("pooling_mode_")))
    generator = torch.Generator().manual_seed(1)
    for out, bias, activation in dense:
        path = f"{len(modules)}_Dense"
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": path,
                        "type": "sentence_transformers.models.Dense"})
        _write(folder / path / "config.json", {"in_features": width, "out_features": out, "bias": bias,
                                               "activation_function": activation})
        tensors = {"linear.weight": torch.randn(out, width, generator=generator) / width ** 0.5}
        if bias:
            tensors["linear.bias"] = torch.randn(out, generator=generator) * 0.1
        save_file(tensors, str(folder / path / "model.safetensors"))
        width = out
    if normalize:
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": f"{len(modules)}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    _write(folder / "modules.json", modules)
    _write(folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": lowercase})
    _write(folder / "config_sentence_transformers.json", {
        "model_type": "SentenceTransformer", "prompts": prompts or {}, "default_prompt_name": default_prompt,
        "similarity_fn_name": "cosine"})
    return folder


REPOS: dict[str, dict[str, Any]] = {
    "qwen3-embedding": dict(arch="qwen3", pooling={"pooling_mode_lasttoken": True}, padding_side="left",
                            prompts={"query": QWEN_QUERY, "document": ""}),
    "embeddinggemma": dict(arch="gemma3", pooling={"pooling_mode": "mean"}, prompts=GEMMA_PROMPTS,
                           default_prompt="document", dense=[(64, False, "torch.nn.modules.linear.Identity"),
                                                             (32, False, "torch.nn.modules.linear.Identity")]),
    "labse": dict(arch="bert", pooling={"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
                  dense=[(32, True, "torch.nn.modules.activation.Tanh")]),
    "e5": dict(arch="bert", pooling={"pooling_mode_mean_tokens": True}, prompts={"query": "query: ",
                                                                                 "passage": "passage: "}),
    "weightedmean-left": dict(arch="qwen3", padding_side="left", lowercase=True,
                              pooling={"pooling_mode": "weightedmean", "include_prompt": False},
                              prompts={"query": QWEN_QUERY}, default_prompt="query", normalize=False),
    "mean-sqrt": dict(arch="bert", pooling={"pooling_mode_mean_sqrt_len_tokens": True}, normalize=False),
    "max": dict(arch="bert", pooling={"pooling_mode_max_tokens": True, "pooling_mode_cls_token": False},
                normalize=False, max_seq_length=16),
    "instructor-style": dict(arch="bert", pooling={"pooling_mode": "mean", "include_prompt": False},
                             prompts={"query": "Represent the question for retrieving documents: "}),
    "cls-and-mean": dict(arch="bert", pooling={"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True},
                         dense=[(16, True, "torch.nn.modules.activation.GELU")]),  # concatenated: 64 -> 16
}


@pytest.fixture(scope="module")
def repos(test_root: Path) -> dict[str, Path]:
    """Every replica, built once and seeded into the Hub cache: name -> its snapshot folder."""
    from hubtune.hfhub import repo_folder, seed_snapshot

    built = {}
    for name, spec in REPOS.items():
        folder = build_repo(test_root / "build" / f"st-{name}", **spec)
        commit = seed_snapshot(f"{OWNER}/st-{name}", folder)
        built[name] = repo_folder(f"{OWNER}/st-{name}") / "snapshots" / commit
    return built


def _st(folder: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def _load(name: str, **options: Any) -> Any:
    return hubtune.load_backbone(f"hf:{OWNER}/st-{name}", precision="fp32", device="cpu", **options)


@pytest.mark.parametrize("name", list(REPOS))
def test_every_prompt_matches_encode(repos: dict[str, Path], name: str) -> None:
    """The repo's default prompt (none, or its default_prompt_name), then each declared prompt by name,
    switched on the loaded backbone, and an ad-hoc prompt text: the vectors encode makes, batch by batch."""
    st = _st(repos[name])
    backbone = _load(name)
    assert backbone.prompts() == (REPOS[name].get("prompts") or {})
    assert_parity(backbone.embed(TEXTS, batch_size=3), st.encode(TEXTS, batch_size=3))
    for prompt_name in backbone.prompts():
        backbone.select_prompt(prompt_name)
        assert_parity(backbone.embed(TEXTS, batch_size=4), st.encode(TEXTS, prompt_name=prompt_name, batch_size=4))
    backbone.select_prompt(text="Some prompt: ")
    assert_parity(backbone.embed(TEXTS), st.encode(TEXTS, prompt="Some prompt: "))


def test_pooling_modes_and_pipeline_are_the_repos(repos: dict[str, Path]) -> None:
    expected = {"qwen3-embedding": "lasttoken", "embeddinggemma": "mean", "labse": "cls", "e5": "mean",
                "weightedmean-left": "weightedmean", "mean-sqrt": "mean_sqrt_len_tokens", "max": "max",
                "instructor-style": "mean", "cls-and-mean": "cls+mean"}
    for name, pool in expected.items():
        backbone = _load(name)
        assert backbone.pool == pool, name
        assert {"cls", "mean", "max", "lasttoken", "weightedmean", "mean_sqrt_len_tokens"} <= set(backbone.layer_pools.names)
    qwen = _load("qwen3-embedding")
    config = qwen.preprocess_config
    assert (config["padding"], config["strip"], config["normalize"], config["max_length"]) == ("left", False, True, 48)
    batch = qwen.preprocessor.collate([qwen.preprocessor(text) for text in ("x", "a longer text")])
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].all()  # padded on the left
    assert batch["input_ids"][0, 0] == qwen.preprocessor.tokenizer.pad_token_id
    gemma = _load("embeddinggemma")
    assert gemma.default_prompt_name == "document" and gemma.prompt == GEMMA_PROMPTS["document"]
    assert [step["kind"] for step in gemma.preprocess_config["after_pooling"]] == ["dense", "dense", "normalize"]
    assert _load("weightedmean-left").preprocess_config["include_prompt"] is False


def test_a_pooling_override_is_another_mode_of_the_same_model(repos: dict[str, Path]) -> None:
    """--pool picks any mode on any repo (here mean and cls on the left-padded decoder): the vectors
    of a SentenceTransformer whose Pooling was set to that mode."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    st = _st(repos["qwen3-embedding"])
    for mode in ("mean", "cls", "max", "weightedmean"):
        st[1] = Pooling(32, pooling_mode=mode)
        assert_parity(_load("qwen3-embedding", pool=mode).embed(TEXTS, batch_size=3), st.encode(TEXTS, batch_size=3))


def test_dim_equals_encode_truncate_dim(repos: dict[str, Path]) -> None:
    st = _st(repos["embeddinggemma"])
    for dim in (8, 16):
        ours = _load("embeddinggemma", dim=dim).embed(TEXTS)
        assert ours.shape == (len(TEXTS), dim)
        assert_parity(ours, st.encode(TEXTS, truncate_dim=dim))
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1) < 1.0, True)  # cut after Normalize, not renormalised


@pytest.mark.parametrize(("name", "workers"), [("qwen3-embedding", "0"), ("embeddinggemma", "1")])
def test_extract_then_export_stores_the_encode_vectors(repos: dict[str, Path], tmp_path: Path, name: str,
                                                       workers: str) -> None:
    """Through the extractor (length-sorted batches; left padding for the decoder; the default prompt
    applied in a DataLoader worker for EmbeddingGemma) and the store, at fp32."""
    from click.testing import CliRunner

    from hubtune.cli import cli

    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in TEXTS))
    runner, cache, ref = CliRunner(), str(tmp_path / "cache"), f"hf:{OWNER}/st-{name}"
    extracted = runner.invoke(cli, ["extract", ref, str(data), "--cache", cache, "--precision", "fp32",
                                    "--batch-size", "3", "--workers", workers, "--json"])
    assert extracted.exit_code == 0, extracted.output
    exported = runner.invoke(cli, ["export", "--cache", cache, "--model", ref, "--dataset", "texts",
                                   "--out", str(tmp_path / "out"), "--json"])
    assert exported.exit_code == 0, exported.output
    stored = np.load(tmp_path / "out" / "embeddings.npy").astype(np.float32)
    reference = _st(repos[name]).encode(TEXTS)  # EmbeddingGemma's default prompt: document
    assert _cosine(stored, reference).min() >= 1 - 1e-4  # stored as float16: cosine, not elementwise


def test_prompts_are_in_the_fingerprint_and_info(repos: dict[str, Path]) -> None:
    from click.testing import CliRunner

    from hubtune.cli import cli
    from hubtune.errors import BackboneOptionError

    plain, query, passage = _load("e5"), _load("e5", prompt="query"), _load("e5", prompt="passage")
    assert len({plain.fingerprint(), query.fingerprint(), passage.fingerprint()}) == 3
    assert query.fingerprint_fields()["prompt"] == "query: " and "prompt" not in plain.fingerprint_fields()
    assert _load("e5", prompt_text="query: ").fingerprint() == query.fingerprint()
    with pytest.raises(BackboneOptionError, match="has no prompt 'document'; its prompts: passage, query"):
        _load("e5", prompt="document")
    info = CliRunner().invoke(cli, ["info", f"hf:{OWNER}/st-embeddinggemma", "--json"])
    assert info.exit_code == 0, info.output
    described = json.loads(info.stdout)
    assert described["prompts"] == GEMMA_PROMPTS and described["default_prompt"] == "document"
    assert described["prompt"] == GEMMA_PROMPTS["document"]


def test_search_embeds_its_query_with_the_query_prompt(repos: dict[str, Path], tmp_path: Path) -> None:
    """A dataset extracted with the repo's default (document) prompt; search embeds the query text with
    the query prompt: its scores are encode_query . encode_document."""
    from click.testing import CliRunner

    from hubtune.cli import cli

    documents = TEXTS[:6]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in documents))
    runner, cache, ref = CliRunner(), str(tmp_path / "cache"), f"hf:{OWNER}/st-embeddinggemma"
    assert runner.invoke(cli, ["extract", ref, str(data), "--cache", cache, "--precision", "fp32"]).exit_code == 0
    found = runner.invoke(cli, ["search", "a man eating", "--cache", cache, "--model", ref, "--dataset", "docs",
                                "-k", "6", "--json"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)[0]
    st = _st(repos["embeddinggemma"])
    scores = st.encode_document(documents) @ st.encode_query(["a man eating"])[0]
    by_row = {hit["row"]: hit["score"] for hit in hits}
    np.testing.assert_allclose([by_row[row] for row in range(len(documents))], scores, atol=2e-3)  # float16 store


def _variant(repos: dict[str, Path], test_root: Path, name: str, edit: Any) -> str:
    """A copy of the LaBSE replica changed by ``edit(folder)``, seeded as another repository."""
    from hubtune.hfhub import seed_snapshot

    folder = test_root / "build" / f"st-broken-{name}"
    if not folder.exists():
        shutil.copytree(repos["labse"], folder)
        edit(folder)
    seed_snapshot(f"{OWNER}/st-broken-{name}", folder)
    return f"hf:{OWNER}/st-broken-{name}"


def _json_edit(relative: str, change: Any) -> Any:
    def edit(folder: Path) -> None:
        path = folder / relative
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return edit


def test_what_is_not_implemented_is_refused_by_name(repos: dict[str, Path], test_root: Path) -> None:
    from hubtune.errors import BackboneOptionError, UnsafeModelError

    def module_type(kind: str) -> Any:
        return _json_edit("modules.json", lambda modules: modules[2].update(type=kind))

    cases = {
        "router": (module_type("sentence_transformers.models.Router"), "module Router"),
        "layernorm": (module_type("sentence_transformers.models.LayerNorm"), "module LayerNorm"),
        "custom": (module_type("custom_st.Projection"), "custom_st.Projection"),
        "activation": (_json_edit("2_Dense/config.json", lambda c: c.update(activation_function="my.pkg.Swish")),
                       "activation_function 'my.pkg.Swish'"),
        "prelu": (_json_edit("2_Dense/config.json",
                             lambda c: c.update(activation_function="torch.nn.modules.activation.PReLU")), "PReLU"),
        "flag": (_json_edit("1_Pooling/config.json", lambda c: c.update(pooling_mode_fancy_tokens=True)),
                 "pooling_mode_fancy_tokens"),
        "mode": (_json_edit("1_Pooling/config.json", lambda c: c.update(pooling_mode="attention")), "attention"),
        "chat": (_json_edit("sentence_bert_config.json", lambda c: c.update(modality_config={
            "text": {"method": "forward", "method_output_name": "last_hidden_state"},
            "message": {"method": "forward", "method_output_name": "last_hidden_state"}})), "modality_config"),
        "sparse": (_json_edit("config_sentence_transformers.json", lambda c: c.update(model_type="SparseEncoder")),
                   "SparseEncoder"),
    }
    for case, (edit, message) in cases.items():
        with pytest.raises(BackboneOptionError, match=message.replace(".", r"\.").replace("'", "'")):
            hubtune.load_backbone(_variant(repos, test_root, case, edit), precision="fp32")

    def pickled(folder: Path) -> None:
        (folder / "2_Dense" / "model.safetensors").rename(folder / "2_Dense" / "pytorch_model.bin")

    with pytest.raises(UnsafeModelError, match="pytorch_model.bin"):
        hubtune.load_backbone(_variant(repos, test_root, "pickled", pickled), precision="fp32")


def test_the_pipeline_exports_and_reloads_without_hubtune(repos: dict[str, Path], tmp_path: Path) -> None:
    """LaBSE's shape (cls -> Tanh Dense -> Normalize), its top BERT block fine-tuned, then export-model:
    the standalone loader rebuilds the same pipeline and embeds what hubtune embeds."""
    import importlib.util

    import torch

    from hubtune.finetune.export import export_model
    from hubtune.finetune.run import FinetuneConfig, finetune
    from hubtune.finetune.train import TrainConfig
    from hubtune.heads.use import head_backbone, load_head

    data = tmp_path / "texts.jsonl"
    rows = [{"text": f"{word} {i}", "label": label} for i in range(4) for word, label in (("good", "pos"), ("bad", "neg"))]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = finetune(f"hf:{OWNER}/st-labse", data, tmp_path / "head", tmp_path / "cache",
                       options=hubtune.LoadOptions(precision="fp32", device="cpu"),
                       config=FinetuneConfig(unfreeze=1, train=TrainConfig(epochs=1, batch_size=4)), progress=False)
    assert summary["trained_blocks"] == ["encoder.layer.1"]
    export_model(tmp_path / "head", tmp_path / "export" / "model.safetensors")
    spec = importlib.util.spec_from_file_location("hubtune_loader", tmp_path / "export" / "hubtune_loader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model, meta = module.load(str(tmp_path / "export" / "model.safetensors"))
    assert [step["kind"] for step in meta["steps"]] == ["dense", "normalize"] and meta["pool"] == "cls"
    encoder = head_backbone(load_head(tmp_path / "head"))
    backbone = getattr(encoder, "backbone", encoder)
    texts = ["good 9", "  bad 9 and more words"]
    batch = backbone.preprocessor.collate([backbone.preprocessor(text) for text in texts])
    with torch.no_grad():
        exported = model.embed(batch["input_ids"], batch["attention_mask"]).numpy()
    np.testing.assert_allclose(exported, backbone.embed(texts), atol=1e-5)


def test_a_decoder_pipeline_rebuilds_from_its_recipe(repos: dict[str, Path]) -> None:
    """Qwen3-Embedding's shape cannot be partially fine-tuned (no block split for decoders: refused by
    name), but its export recipe rebuilds it: lasttoken over left padding, Normalize, the prompt recorded."""
    import importlib.util

    import torch

    from hubtune.errors import BackboneOptionError

    backbone = _load("weightedmean-left")
    with pytest.raises(BackboneOptionError, match="train a head on its frozen vectors"):
        backbone.blocks()
    recipe = backbone.export_recipe()
    spec = importlib.util.spec_from_file_location("rebuild", recipe["loader"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    meta = {**recipe, "modality": "text"}
    model = module.build(meta).eval()
    model.load_state_dict(backbone.model.state_dict())
    assert (meta["prompt"], meta["pool"]) == (QWEN_QUERY, "weightedmean") and meta["prompt_length"] > 0
    batch = backbone.preprocessor.collate([backbone.preprocessor(text) for text in TEXTS])
    with torch.no_grad():
        rebuilt = module.embed(model, meta, (batch["input_ids"], batch["attention_mask"]), None).numpy()
    np.testing.assert_allclose(rebuilt, backbone.embed(TEXTS, batch_size=len(TEXTS)), atol=1e-5)


def test_configs_read_as_sentence_transformers_reads_them(tmp_path: Path) -> None:
    """Legacy pooling flags (none set: mean; several: concatenated in its order), a one-item mode list,
    and a Dense config without an activation (Tanh), each next to what sentence-transformers loads."""
    import torch
    from safetensors.torch import save_file
    from sentence_transformers.base.modules import Dense
    from sentence_transformers.sentence_transformer.modules import Pooling

    from hubtune_hf.st_config import read_dense, read_pooling

    for config in ({"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False},
                   {"pooling_mode": ["lasttoken"], "include_prompt": False},
                   {"pooling_mode_mean_sqrt_len_tokens": True, "pooling_mode_max_tokens": True},
                   {"pooling_mode": "weightedmean", "pooling_mode_cls_token": True}, {}):
        (tmp_path / "config.json").write_text(json.dumps({"word_embedding_dimension": 8, **config}))
        loaded = Pooling.load(str(tmp_path))
        mode = loaded.pooling_mode if isinstance(loaded.pooling_mode, str) else "+".join(loaded.pooling_mode)
        assert read_pooling(config, "repo") == (mode, loaded.include_prompt), config
    dense = tmp_path / "2_Dense"
    _write(dense / "config.json", {"in_features": 8, "out_features": 4, "bias": True})
    save_file({"linear.weight": torch.zeros(4, 8), "linear.bias": torch.zeros(4)}, str(dense / "model.safetensors"))
    assert read_dense(tmp_path, "2_Dense", "repo").activation == type(Dense.load(str(dense)).activation_function).__name__
