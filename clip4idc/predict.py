"""Caption your own image pairs with a trained CLIP4IDC checkpoint (the original's issue #4).

    python -m clip4idc.predict --init_model OUT/pytorch_model.bin.5 --before a.png --after b.png
    python -m clip4idc.predict --init_model CKPT --pairs pairs.txt [--output captions.json] [--png_dir vis/]

`--pairs` is a text file with one `BEFORE AFTER` pair of image paths per line (tab- or space-separated;
relative paths are taken from the list file's directory; `#` starts a comment). The model sizes come
from the clip4idc_config.json written next to checkpoints by the training scripts, or are inferred
from the weights (then pass --intra_num_hidden_layers / --decoder_model if they differ from the defaults).
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import atomic_write_json
from common.errors import InputError, run_cli
from common.safe_pickle import add_trust_flag
from common.threads import add_num_threads_flag, apply_num_threads
from clip4idc.data.images import load_image
from clip4idc.decoding import decode_captions
from clip4idc.factory import model_from_checkpoint
from clip4idc.tokenizer import get_tokenizer
from clip4idc.visualize import save_pair_png


def read_pairs(path: str | Path) -> list[tuple[Path, Path]]:
    """(before, after) paths of a pair-list file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "pair list not found")
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split("\t") if "\t" in line else shlex.split(line)
        if len(parts) != 2:
            raise InputError(path, f"expected 'BEFORE AFTER', got {len(parts)} fields", record=f"line {n}")
        pairs.append(tuple((p if Path(p).is_absolute() else path.parent / p) for p in map(str.strip, parts)))
    if not pairs:
        raise InputError(path, "no pairs listed")
    return [(Path(a), Path(b)) for a, b in pairs]


@torch.no_grad()
def caption_pairs(model, pairs: list[tuple[Path, Path]], max_words: int, beam_size: int = 1, batch_size: int = 16,
                  device: str = "cpu", length_penalty: float = 0.0) -> list[str]:
    """One generated caption per (before, after) image pair."""
    tokenizer = get_tokenizer()
    size = model.clip.cfg.image_resolution
    out = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        bef = torch.from_numpy(np.concatenate([load_image(b, size) for b, _ in chunk])).to(device)
        aft = torch.from_numpy(np.concatenate([load_image(a, size) for _, a in chunk])).to(device)
        out.extend(decode_captions(model, tokenizer, bef, aft, max_words, beam_size, length_penalty))
    return out


def main(argv=None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init_model", required=True,
                   help="caption-stage checkpoint (original or this layout), or a save_pretrained directory")
    p.add_argument("--before", help="'before' image of one pair")
    p.add_argument("--after", help="'after' image of one pair")
    p.add_argument("--pairs", help="file listing 'BEFORE AFTER' image paths, one pair per line")
    p.add_argument("--beam_size", type=int, default=1, help="1 = greedy (the original's decoding)")
    p.add_argument("--length_penalty", type=float, default=0.0,
                   help="with --beam_size > 1: choose the beam maximising log-prob / length**alpha (0 = raw log-prob)")
    p.add_argument("--max_words", type=int, default=None, help="decoding length (default: from the checkpoint config, else 32)")
    p.add_argument("--intra_num_hidden_layers", type=int, default=None, help="per-image blocks (default: checkpoint config, else 9)")
    p.add_argument("--decoder_model", default=None, help="decoder config when the checkpoint has no clip4idc_config.json")
    p.add_argument("--output", help="also write [{before, after, caption}] to this JSON file (must not exist)")
    p.add_argument("--png_dir", help="write a side-by-side PNG per pair into this directory")
    p.add_argument("--batch_size", type=int, default=16, help="pairs per forward pass")
    add_num_threads_flag(p)
    add_trust_flag(p)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    a = p.parse_args(argv)
    if a.num_threads is not None and a.num_threads < 1:
        raise InputError("--num_threads", f"must be >= 1, got {a.num_threads}")
    apply_num_threads(a.num_threads)
    if a.beam_size < 1:
        raise InputError("--beam_size", "must be >= 1")
    if a.length_penalty != 0.0 and a.beam_size == 1:
        raise InputError("--length_penalty", "only applies to beam search: also pass --beam_size > 1")
    if a.pairs and (a.before or a.after):
        p.error("give either --before/--after or --pairs")
    if a.pairs:
        pairs = read_pairs(a.pairs)
    elif a.before and a.after:
        pairs = [(Path(a.before), Path(a.after))]
    else:
        p.error("give --before and --after, or --pairs")
    if a.output and Path(a.output).exists():
        raise InputError(a.output, "exists; refusing to overwrite")
    model, max_words = model_from_checkpoint(a.init_model, trust=a.trust_checkpoint,
                                             intra_layers=a.intra_num_hidden_layers, decoder_model=a.decoder_model,
                                             device=a.device)
    captions = caption_pairs(model, pairs, a.max_words or max_words, a.beam_size, a.batch_size, a.device,
                             a.length_penalty)
    for (bef, aft), cap in zip(pairs, captions):
        print(cap if len(pairs) == 1 else f"{bef}\t{aft}\t{cap}")
    if a.output:
        atomic_write_json(a.output, [{"before": str(b), "after": str(f), "caption": c} for (b, f), c in zip(pairs, captions)])
    if a.png_dir:
        size = model.clip.cfg.image_resolution
        for n, ((bef, aft), cap) in enumerate(zip(pairs, captions)):
            save_pair_png(Path(a.png_dir) / f"pair_{n:04d}.png", load_image(bef, size)[0], load_image(aft, size)[0],
                          cap, title=f"{bef.name} -> {aft.name}")
    return 0


if __name__ == "__main__":
    run_cli(main)
