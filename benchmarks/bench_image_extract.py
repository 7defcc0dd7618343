"""Image extraction over a folder of JPEGs: `hubtune extract` vs the loops a user would write.

Two pairs, each the same model on the same files, measured in one run, alternating, several repeats:

- timm (default resnet18, random weights): hubtune's extractor into a fresh store (its defaults:
  precision auto, channels-last, decoding in DataLoader workers, batching) vs a plain per-batch timm
  loop (PIL open + the model's own transform + forward, fp32, NCHW, one process);
- Hugging Face (a ViT-S/16-sized ViT, random weights, saved and seeded into a private Hub cache):
  hubtune vs a `pipeline("image-feature-extraction")` loop over the file paths, same batch size.

Usage: python benchmarks/bench_image_extract.py [--images 600] [--repeats 3] [--model resnet18]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, spread, summary_row, timed  # noqa: E402

BATCH = 32


def jpeg_folder(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` 320 x 240 JPEGs in two class folders: smooth gradients plus noise (realistic decode cost)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, 320, dtype=np.float32)[None, :, None]
    for i in range(count):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = ramp * rng.uniform(0.2, 1.0, (1, 1, 3)) + rng.normal(0, 20, (240, 320, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def timm_loop(name: str, paths: list[Path]) -> object:
    """The plain loop: what one writes with timm's own docs open."""
    import timm
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_model_data_config

    model = timm.create_model(name, pretrained=False, num_classes=0).eval()
    transform = create_transform(**resolve_model_data_config(model))

    def run() -> list:
        out = []
        with torch.inference_mode():
            for start in range(0, len(paths), BATCH):
                batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[start : start + BATCH]])
                out.append(model(batch))
        return out
    return run


def hf_vit(work: Path) -> str:
    """A ViT-S/16-sized ViT with random weights, saved with its processor and seeded as a Hub snapshot."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    from hubtune.hfhub import seed_snapshot

    folder = work / "vit-small"
    config = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    seed_snapshot("bench/vit-small", folder)
    return str(folder)


def pipeline_loop(folder: str, paths: list[Path]) -> object:
    import numpy as np
    from transformers import pipeline

    pipe = pipeline("image-feature-extraction", model=folder, device="cpu")

    def run() -> np.ndarray:
        return np.stack([np.asarray(out)[0, 0] for out in pipe([str(p) for p in paths], batch_size=BATCH)])
    return run


def hubtune_run(ref: str, data: Path, work: Path, tag: str) -> tuple[object, object]:
    """(hubtune's extract over ``data`` into a fresh store per call, the backbone it uses)."""
    import hubtune
    from hubtune.cli.common import resolve_workers
    from hubtune.extract import extract
    from hubtune.store import EmbeddingStore

    backbone = hubtune.load_backbone(ref, weights="random", device="cpu")
    calls = iter(range(1000))

    def run() -> None:
        with EmbeddingStore(work / f"{tag}-{next(calls)}") as store:
            extract(ref, data, store, backbone=backbone, batch_size=BATCH,
                    workers=resolve_workers("auto", "image"), progress=False)
    return run, backbone


def race(name: str, peer: object, ours: object, repeats: int, target: str) -> dict:
    ours()  # warm-up passes (first-shape kernel selection, worker start)
    peer()
    peer_s, ours_s = [], []
    for repeat in range(repeats):
        peer_s.append(timed(peer))
        ours_s.append(timed(ours))
        print(f"{name} repeat {repeat}: peer {peer_s[-1]:.2f}s, hubtune {ours_s[-1]:.2f}s", flush=True)
    print(f"{name}: peer {spread(peer_s)}; hubtune {spread(ours_s)}")
    row = summary_row(name, peer_s, ours_s, target)
    print(f"{name}: hubtune's throughput / the peer's = {row['result']} (target {target or 'none'})", flush=True)
    return {"peer_s": peer_s, "hubtune_s": ours_s, "summary": row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="resnet18", help="timm architecture for the timm pair")
    parser.add_argument("--skip-hf", action="store_true", help="only the timm pair")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hubtune-bench-images-"))
    os.environ["HF_HOME"] = str(work / "hf")  # private Hub cache for the seeded ViT
    os.environ["HF_HUB_OFFLINE"] = "1"
    data = jpeg_folder(work / "jpegs", args.images)
    paths = sorted(data.rglob("*.jpg"))
    import hubtune.runtime as runtime

    result: dict = {"images": len(paths), "batch_size": BATCH, "workers_auto": os.cpu_count(),
                    "precision_auto": runtime.resolve_precision("auto", runtime.resolve_device("cpu"))}
    ours, backbone = hubtune_run(f"timm:{args.model}", data, work, "timm")
    result["timm"] = race(f"image extract vs plain timm loop ({args.model}, {len(paths)} JPEGs)",
                          timm_loop(args.model, paths), ours, args.repeats, ">= 2")
    del ours, backbone
    if not args.skip_hf:
        folder = hf_vit(work)
        ours, _ = hubtune_run("hf:bench/vit-small", data, work, "hf")
        result["hf"] = race(f"image extract vs transformers pipeline loop (ViT-S/16, {len(paths)} JPEGs)",
                            pipeline_loop(folder, paths), ours, args.repeats, "")
    result["summary"] = [result[pair]["summary"] for pair in ("timm", "hf") if pair in result]
    print(f"saved {save('image-extract', result)}")


if __name__ == "__main__":
    main()
