"""Learning test (section 10 assert 8): the image model tells the scenes apart, the text-only ablation cannot."""
from __future__ import annotations

import json

import torch

from visualcomet import data as vdata
from visualcomet import ranking
from visualcomet.model import load_pretrained
from visualcomet.tokenization import VisualCometTokenizer


def curated(model_dir, vc_paths, include_image):
    tok = VisualCometTokenizer.from_pretrained(model_dir)
    model, _ = load_pretrained(model_dir, require_weights=True)
    lay, splits = vdata.build_finetune_data(vc_paths, tok, 40)
    ex, lab, recs = splits["val"]
    ds = vdata.VCGDataset(recs, ex, lab, tok, vc_paths, include_image=include_image)
    assert len(ds) == 96
    return ranking.curated_accuracy(model, ds, tok, lay, torch.device("cpu"))


def test_image_model_beats_text_only_ablation(vc_trained, vc_paths):
    acc_img = curated(vc_trained["image"], vc_paths, True)
    acc_txt = curated(vc_trained["text"], vc_paths, False)
    print(f"curated accuracy: image {acc_img:.3f} vs text-only {acc_txt:.3f} (chance 0.25)")
    assert acc_img >= 0.75
    assert acc_img >= acc_txt + 0.3
    ppl = {k: json.loads((d / "metrics.json").read_text())["perplexity_inference"] for k, d in vc_trained.items()}
    assert ppl["image"] < ppl["text"]
