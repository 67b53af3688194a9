"""Seeded synthetic caption sets in the real formats (abstract-50S-like lists, COCO caption files).

Captions are built from a small grammar with the same phenomena as human captions (names, clitics,
negations, commas, final periods, quotes, hyphens, numbers, abbreviations, brackets, ellipses), so the
tokenizer and every scorer go through the same code paths as on the real data.

``python -m common.metrics.synthetic --out DIR`` writes ``abstract48S.json`` (list of {image_id, caption}),
``coco_refs.json`` (COCO caption format) and ``coco_preds.json`` (a results list).
"""
from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path

from common.errors import InputError, run_cli

NAMES = ["Mike", "Jenny", "the boy", "the girl", "a man", "a woman", "the dog", "the cat"]
VERBS = ["is playing with", "is sitting next to", "is kicking", "wants", "is holding", "is afraid of", "likes",
         "is looking at", "is running to", "doesn't like", "can't reach", "won't share"]
OBJECTS = ["a ball", "the soccer ball", "a red kite", "the big tree", "a hot dog", "the owl", "a pie",
           "a baseball bat", "Jenny's hat", "Mike's glasses", "the slide", "a sandwich", "the grill"]
ODD_OBJECTS = ["the sand-box", "the 2 bears", "3 apples", "a well-known toy", "the table (outside)",
               "the U.S. flag", "a 10,000 dollar car"]
PLACES = ["in the park", "at the beach", "near the tent", "by the fire", "under the sun", "outside"]
EXTRAS = [", and they're happy", ", but he's sad", "; it's sunny", " -- it is late", "...",
          " because it's fun", ", e.g. a game", " at 3:30 p.m.", ' and says "hello"', " & smiles",
          " with his mom/dad", " -- what a day!", " ?", " !"]
QUIRKS = [
    "Don't you see? I can't, won't, shouldn't.",
    "\"Quoted\" text 'single' and `back'",
    "AT&T and R&D; a & b",
    "well-known x - y -- z --- w",
    "$1,000.50 and 3.14 and 10:30 and 1/2",
    "Wait... what.... ok . . . end..",
    "(paren) [bracket] {brace}",
    "and/or a/b foo*bar",
    "gonna wanna gotta cannot 'tis 'twas y'all",
    "It's 5 o'clock. I've got 2 dogs' bones. The boys' toys.",
    "The Jan. meeting. Jan. 5 Tue. Fri. Inc. is Co. Corp. Ltd.",
    "a.m. p.m. A.M. PM etc., etc.; e.g. i.e. vs",
    "MIKE AND JENNY ARE HAPPY. THE DOG'S TOY.",
    "I'M I'LL I'D WE'RE THEY'VE HE'S",
    "rock 'n' roll 'em '90s '60s 80's the '80s",
    "Café naïve — “smart” ‘quotes’ … € £",
    "5-year-old twenty-one x-ray mother-in-law co-op",
    "the man in the red shirt is 6'2\" tall",
    "",
]


def caption(rng: random.Random, quirk_scale: float = 1.0) -> str:
    """One random caption of the grammar (sometimes a tokenizer quirk line).

    ``quirk_scale`` scales how often unusual tokens appear (1: tests, many quirks; ~0.05: like human captions).
    """
    if rng.random() < 0.04 * quirk_scale:
        return rng.choice(QUIRKS)
    obj = rng.choice(ODD_OBJECTS) if rng.random() < 0.1 * quirk_scale else rng.choice(OBJECTS)
    extra = rng.choice(EXTRAS) if rng.random() < 0.15 * quirk_scale else ""
    s = f"{rng.choice(NAMES)} {rng.choice(VERBS)} {obj} {rng.choice(PLACES)}{extra}"
    s = s[0].upper() + s[1:]
    end = rng.random()
    return s + ("." if end < 0.7 else "" if end < 0.9 else " .")


def caption_sets(n_images: int = 500, n_captions: int = 48, seed: int = 0, quirk_scale: float = 1.0) -> list[dict]:
    """abstract-50S-like list of {image_id, caption}, n_captions per image; captions of one image share words."""
    rng = random.Random(seed)
    out = []
    for i in range(n_images):
        # an image has a "scene": a preferred subject and object, so its captions agree (like human ones)
        scene = (rng.choice(NAMES), rng.choice(OBJECTS))
        for _ in range(n_captions):
            c = caption(rng, quirk_scale)
            if rng.random() < 0.6 and c and c not in QUIRKS:
                c = c.replace(c.split(" ")[0], scene[0].capitalize(), 1)
                for o in OBJECTS + ODD_OBJECTS:
                    if o in c:
                        c = c.replace(o, scene[1], 1)
                        break
            out.append({"image_id": f"Scene{i}_0.png", "caption": c})
    return out


def coco_files(records: Sequence[dict]) -> tuple[dict, list[dict]]:
    """(COCO reference dict, results list): the first caption of each image becomes its prediction."""
    images, annotations, preds, seen = [], [], [], set()
    for rec in records:
        if rec["image_id"] not in seen:
            seen.add(rec["image_id"])
            images.append({"id": rec["image_id"], "file_name": rec["image_id"]})
            preds.append({"image_id": rec["image_id"], "caption": rec["caption"]})
        else:
            annotations.append({"id": len(annotations), "image_id": rec["image_id"], "caption": rec["caption"]})
    coco = {"info": {"description": "synthetic"}, "licenses": [], "type": "captions", "images": images,
            "annotations": annotations}
    return coco, preds


def main(argv: Sequence[str] | None = None) -> int:
    """Write the synthetic caption files."""
    p = argparse.ArgumentParser(prog="python -m common.metrics.synthetic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--images", type=int, default=500, help="number of images")
    p.add_argument("--captions", type=int, default=48, help="captions per image")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    recs = caption_sets(a.images, a.captions, a.seed)
    coco, preds = coco_files(recs)
    for name, obj in (("abstract48S.json", recs), ("coco_refs.json", coco), ("coco_preds.json", preds)):
        path = out / name
        if path.exists():
            raise InputError(path, "exists; choose another --out (results are never overwritten)")
        path.write_text(json.dumps(obj), encoding="utf-8")
    print(f"wrote {len(recs)} captions for {a.images} images to {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
