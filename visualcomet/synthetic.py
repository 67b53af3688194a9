"""Synthetic VisualCOMET data in the real formats (spec 10): only the image tells the four scenes apart.

Writes ``{train,val,test}_annots.json``, VCR metadata under ``vcr1images/``, feature pickles under ``features/``,
and ``gpt2-tiny/`` (a byte-level BPE learned on the fixture text + a tiny GPT-2 config) usable as
``--model_name_or_path``::

    python -m visualcomet.synthetic --out runs/synthetic/visualcomet
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.errors import run_cli

EVENT = "1 is here with 2"
PLACE = "in a room"
SCENES = {
    "kitchen": {"intent": ["feed the family", "make food"], "before": ["buy some vegetables", "turn on the stove"],
                "after": ["serve the food to 2", "wash the dishes"]},
    "office": {"intent": ["finish the report", "impress the boss"], "before": ["turn on the computer", "drink coffee"],
               "after": ["send the email to 2", "go home late"]},
    "beach": {"intent": ["relax in the sun", "have fun with 2"], "before": ["drive to the coast", "pack a towel"],
              "after": ["swim in the sea", "build a sand castle"]},
    "party": {"intent": ["dance with 2", "meet new people"], "before": ["put on a nice dress", "buy a gift"],
              "after": ["drink some wine", "sing a song"]},
}
OBJECTS = ["person", "person", "person", "car", "cup", "chair", "diningtable", "cellphone"]
WIDTH, HEIGHT = 640, 360
SPLIT_SIZES = {"train": 80, "val": 16, "test": 4}


def fixture_texts() -> list[str]:
    """All sentences of the fixture (BPE training text)."""
    texts = [EVENT, PLACE]
    for rels in SCENES.values():
        for sents in rels.values():
            texts.extend(sents)
    return texts


def write_tokenizer_and_config(out: Path, n_layer: int = 2, n_head: int = 2, n_embd: int = 64, n_positions: int = 1024,
                               feature_dim: int = 2048, num_merges: int = 170) -> Path:
    """``out/gpt2-tiny``: vocab.json + merges.txt learned on the fixture text and a tiny GPT-2 config.json."""
    from visualcomet.tokenization import ADDED_TOKENS, VisualCometTokenizer, build_bpe_files

    model_dir = out / "gpt2-tiny"
    model_dir.mkdir(parents=True, exist_ok=True)
    texts = fixture_texts() * 4 + [" ".join(fixture_texts())]
    vocab, merges = build_bpe_files(texts, num_merges)
    tok = VisualCometTokenizer(vocab, merges)
    tok.save_pretrained(model_dir)
    config = {"model_type": "gpt2", "vocab_size": len(vocab) + len(ADDED_TOKENS), "n_layer": n_layer,
              "n_head": n_head, "n_embd": n_embd, "n_positions": n_positions, "n_ctx": n_positions,
              "feature_dim": feature_dim, "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
              "embd_pdrop": 0.1, "attn_pdrop": 0.1, "resid_pdrop": 0.1, "activation_function": "gelu_new"}
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
    return model_dir


def generate(out: str | Path, seed: int = 0, feature_dim: int = 2048, sizes: dict[str, int] | None = None,
             with_model_dir: bool = True) -> Path:
    """Write the whole synthetic dataset under ``out``; returns ``out``."""
    out = Path(out)
    sizes = dict(SPLIT_SIZES, **(sizes or {}))
    rng = np.random.default_rng(seed)
    names = list(SCENES)
    protos = {k: rng.standard_normal(feature_dim).astype(np.float32) for k in names}
    (out / "features").mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        annots = []
        for i in range(n):
            scene = names[i % len(names)]
            movie = f"Synthetic_Movie_{names.index(scene)}"
            movie_dir = f"movieclips_{movie}"
            image = f"{split}_clip_{i:03d}@{i % 3}"
            meta_dir = out / "vcr1images" / movie_dir
            meta_dir.mkdir(parents=True, exist_ok=True)
            boxes, segms = [], []
            for j in range(len(OBJECTS)):
                x1 = float(rng.uniform(0, WIDTH - 120))
                y1 = float(rng.uniform(0, HEIGHT - 120))
                x2, y2 = x1 + float(rng.uniform(40, 110)), y1 + float(rng.uniform(40, 110))
                boxes.append([round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2), round(float(rng.uniform(0.5, 1)), 3)])
                segms.append([[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]])
            meta = {"boxes": boxes, "segms": segms, "names": OBJECTS, "width": WIDTH, "height": HEIGHT}
            (meta_dir / f"{image}.json").write_text(json.dumps(meta))
            noise = lambda *shape: (0.1 * rng.standard_normal(shape)).astype(np.float32)  # noqa: E731
            feats = {"image_features": protos[scene] + noise(feature_dim),
                     "object_features": protos[scene][None, :] + noise(len(OBJECTS), feature_dim)}
            with open(out / "features" / f"{image}.pkl", "wb") as f:
                pickle.dump(feats, f)
            ann = {"img_fn": f"{movie_dir}/{image}.jpg", "movie": movie, "metadata_fn": f"{movie_dir}/{image}.json",
                   "split": split, "place": PLACE, "event": EVENT}
            if split != "test":
                ann.update({rel: list(s) for rel, s in SCENES[scene].items()})
            annots.append(ann)
        (out / f"{split}_annots.json").write_text(json.dumps(annots, indent=1))
    if with_model_dir:
        write_tokenizer_and_config(out, feature_dim=feature_dim)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory (the --data_dir of the scripts)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of prototypes, noise and boxes")
    parser.add_argument("--feature_dim", type=int, default=2048, help="RoI feature size (2048 like the real pickles)")
    args = parser.parse_args(argv)
    out = generate(args.out, seed=args.seed, feature_dim=args.feature_dim)
    print(f"wrote synthetic VisualCOMET data to {out}")
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
