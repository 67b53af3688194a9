"""VisualCOMET on your own image (issue 13): JPEG + boxes in, intent/before/after inferences and a picture out.

    python -m visualcomet.predict --image x.jpg --metadata x.json --event "1 is talking to 2" --place "in a bar" \\
        --model_name_or_path experiments/image-inference-80000-ckpt --detector_weights model_final_a2914c.pkl

The metadata JSON is VCR's (``boxes`` [[x1, y1, x2, y2(, score)], ...], ``names`` COCO classes, ``width``,
``height``); person number k in the event is object k (1-based). Region features come from the detectron2 Mask
R-CNN R101-C4 weights exactly as for the training data (spec 2.7, ``visualcomet/scripts/extract_features.py``).
Writes ``<output_dir>/<stem>_inferences.json`` and ``<output_dir>/<stem>.png`` (numbered boxes, inferences beside).
"""
from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.errors import InputError, run_cli
from common.regions.extract import DTYPES
from common.safe_pickle import add_trust_flag

RELATIONS = ("intent", "before", "after")
DEMO_METADATA = {"names": ["person", "tie"], "boxes": [[20.0, 15.0, 500.0, 600.0, 0.99], [220.0, 380.0, 300.0, 560.0, 0.9]],
                 "width": 512, "height": 600}


def check_event(event: str, names: list[str], source: str) -> None:
    """Every person number in the event must name one of the metadata objects (1-based)."""
    from visualcomet.data import map_numbers

    if not event.strip():
        raise InputError(source, "the event is empty", field="event")
    _, mapping = map_numbers(event)
    for number in mapping:
        if not 1 <= int(number) <= len(names):
            raise InputError(source, f"person number {number} but the metadata has {len(names)} objects (1-based)",
                             field="event")


def render(image: Path, meta: dict[str, Any], result: dict[str, Any], out_png: Path) -> Path:
    """PNG: the image with numbered boxes, the event, place and inferences beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from visualcomet.visualize import draw_example

    items = [{"event": result["event"], "place": result["place"], "inference_relation": rel,
              "generations": result[rel]} for rel in RELATIONS]
    fig, (ax_img, ax_txt) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1, 1.1]})
    draw_example(ax_img, ax_txt, meta, image, items, max_gens=len(result["intent"]))
    ax_img.set_title(image.name, fontsize=8)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    with warnings.catch_warnings():  # sampled byte tokens may have no glyph in the font: drawn as boxes
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.tight_layout()
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png


def predict_image(args: argparse.Namespace) -> dict[str, Any]:
    """Validate every input, extract the region features, sample the inferences, write JSON and PNG."""
    import torch

    from common.checkpoint import atomic_write_json
    from common.regions.extract import detectron2_box_features
    from common.regions.image import read_image
    from common.regions.weights import load_detector
    from visualcomet.generation import predict
    from visualcomet.model import load_pretrained
    from visualcomet.scripts.extract_features import read_vcr_metadata
    from visualcomet.tokenization import VisualCometTokenizer

    image = Path(args.image)
    meta = read_vcr_metadata(args.metadata)
    check_event(args.event, meta["names"], args.metadata)
    if args.num_samples < 1 or args.length < 1:
        raise InputError("--num_samples", "--num_samples and --length must be >= 1")
    out_dir = Path(args.output_dir or Path("runs/predict") / image.stem)
    out_json, out_png = out_dir / f"{image.stem}_inferences.json", out_dir / f"{image.stem}.png"
    for path in (out_json, out_png):
        if path.exists() and not args.overwrite:
            raise InputError(path, "exists; pass --overwrite to replace it", field="output_dir")
    rgb = read_image(image)
    if (rgb.shape[1], rgb.shape[0]) != (int(meta["width"]), int(meta["height"])):
        raise InputError(args.metadata, f"metadata says {meta['width']}x{meta['height']} but the image is "
                                        f"{rgb.shape[1]}x{rgb.shape[0]}", field="width")
    tokenizer = VisualCometTokenizer.from_pretrained(args.model_name_or_path)
    model, _ = load_pretrained(args.model_name_or_path, trust=args.trust_checkpoint, require_weights=True)
    detector = load_detector(args.detector_weights, "detectron2", trust=args.trust_checkpoint)
    width = detector.cfg.trunk.res5_channels
    if width != model.config.feature_dim:
        raise InputError(args.detector_weights, f"detector features are {width}-d but the model expects "
                                                f"{model.config.feature_dim} (config feature_dim)", field="weights")
    feats = detectron2_box_features(detector, rgb, meta["boxes"], args.dtype)
    model.eval()
    torch.manual_seed(args.seed)
    result: dict[str, Any] = {"image": str(image), "event": args.event, "place": args.place}
    for rel in RELATIONS:
        result[rel] = predict(model, tokenizer, feats[0], feats[1:], meta["names"], meta["boxes"], meta["width"],
                              meta["height"], args.event, args.place, rel, num_samples=args.num_samples,
                              length=args.length, top_p=args.top_p, seed=args.seed, do_sample=bool(args.do_sample))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_json, result)
    render(image, meta, result, out_png)
    return {"json": out_json, "png": out_png, "result": result}


def write_demo_inputs(out_dir: str | Path, feature_dim: int = 128, seed: int = 0) -> dict[str, Path]:
    """Tiny random VisualCOMET model + tiny random detectron2 weights + metadata for matplotlib's grace_hopper.jpg."""
    import torch

    from common.checkpoint import atomic_write_json
    from common.regions.weights import write_random_weights
    from visualcomet.model import VisualCometLMHead, load_config, save_pretrained
    from visualcomet.synthetic import write_tokenizer_and_config
    from visualcomet.tokenization import VisualCometTokenizer

    out = Path(out_dir)
    model_dir = write_tokenizer_and_config(out, feature_dim=feature_dim)
    tokenizer = VisualCometTokenizer.from_pretrained(model_dir)
    config = load_config(model_dir)
    config.vocab_size = len(tokenizer)
    torch.manual_seed(seed)
    save_pretrained(VisualCometLMHead(config), model_dir, tokenizer)
    weights = write_random_weights(out / "detectron2_tiny.pkl", "detectron2", seed=seed)
    meta = atomic_write_json(out / "grace_hopper.json", DEMO_METADATA)
    return {"model": model_dir, "weights": weights, "metadata": meta}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags and predict (or, with --demo_setup, write the tiny demo inputs)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", help="the photograph (.jpg/.png)")
    p.add_argument("--metadata", help="VCR-style JSON: boxes, names, width, height")
    p.add_argument("--event", help='what happens, people by object number: "1 is pouring wine for 2"')
    p.add_argument("--place", default="", help='where: "in a restaurant"')
    p.add_argument("--model_name_or_path", help="trained VisualCOMET directory (e.g. image-inference-80000-ckpt)")
    p.add_argument("--detector_weights", help="detectron2 mask_rcnn_R_101_C4_3x model_final_*.pkl")
    p.add_argument("--num_samples", type=int, default=5, help="inferences per relation")
    p.add_argument("--length", type=int, default=20, help="sampled tokens per inference")
    p.add_argument("--top_p", type=float, default=0.9, help="nucleus threshold")
    p.add_argument("--do_sample", type=int, default=1, choices=[0, 1], help="1: nucleus sampling; 0: beam search")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="detector precision")
    p.add_argument("--output_dir", default=None, help="default runs/predict/<image stem>")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs of the same image")
    p.add_argument("--demo_setup", metavar="DIR", help="only write a tiny random model, detector weights and "
                                                     "grace_hopper metadata to DIR (make visualcomet-predict)")
    add_trust_flag(p)
    args = p.parse_args(argv)
    if args.demo_setup:
        for name, path in write_demo_inputs(args.demo_setup).items():
            print(f"{name}: {path}")
        return 0
    missing = [f"--{k}" for k in ("image", "metadata", "event", "model_name_or_path", "detector_weights")
               if not getattr(args, k)]
    if missing:
        p.error(f"required: {', '.join(missing)}")
    done = predict_image(args)
    for rel in RELATIONS:
        line = " | ".join(done["result"][rel])
        print(f"{rel}: " + "".join(c if c.isprintable() else "\ufffd" for c in line))  # sampled bytes may be controls
    print(f"wrote {done['json']} and {done['png']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
