"""What do these clips have in common, and which one is the odd one out? (issue 14)

``python -m set_abstraction.predict --videos a.mp4 b.mp4 c.mp4 --resume CKPT [--backbone_weights W]
[--candidates x.mp4 y.mp4] --graph metadata/moments_graph.json``

Each clip: the sampled frames only are decoded (``set_abstraction.video``), normalised and embedded by the
3D ResNet-50 (``--backbone_weights``: the published Moments in Time / Kinetics 3D ResNet-50 the released
features came from, loaded strictly). Then, with the SAM of ``--resume`` (an original-layout
``*.pth.tar`` or a ``save_pretrained`` directory):

- abstraction: the top-k hierarchy nodes for the whole set, with softmax scores;
- set completion: the ``--candidates`` ranked by cosine distance to the set's abstraction embedding;
- odd-one-out: each member's distance to the mean embedding of the set's non-singleton subsets.

Writes ``prediction.json`` and ``prediction.png`` (a frame of each clip, the predicted concept, the odd one
marked) into ``--out``.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import atomic_write_text, load_state_dict_strict
from common.errors import InputError, run_cli
from common.safe_pickle import add_trust_flag
from common.threads import add_num_threads_flag, apply_num_threads
from set_abstraction.backbone import ARCHS, build_backbone, load_backbone_weights
from set_abstraction.convert import convert_state_dict, infer_config, read_original_checkpoint
from set_abstraction.graph import load_graph
from set_abstraction.model import AbstractionEmbeddingModule, SAMConfig
from set_abstraction.scripts.extract_features import to_tensor
from set_abstraction.video import READERS, read_frames, resize_frames

MAX_SET = 8


def load_sam(path: str | Path, trust: bool = False, model_config: str | None = None) -> AbstractionEmbeddingModule:
    """A SAM from a save_pretrained directory or an original-layout checkpoint (sizes read off its shapes)."""
    path = Path(path)
    if path.is_dir():
        return AbstractionEmbeddingModule.from_pretrained(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found (a .pth.tar of train.py or a save_pretrained directory)")
    ckpt = read_original_checkpoint(path, trust=trust)
    state = convert_state_dict(ckpt["state_dict"])
    config = SAMConfig.from_json(model_config) if model_config else infer_config(state, path)
    model = AbstractionEmbeddingModule.from_config(config)
    load_state_dict_strict(model, state, strict=True, source=path)
    return model


class ClipEncoder:
    """Sampled frames -> normalised clip tensor -> backbone feature."""

    def __init__(self, args: argparse.Namespace):
        torch.manual_seed(args.seed)
        self.backbone = build_backbone(args.arch, args.width)
        self.random = args.backbone_weights is None
        if not self.random:
            load_backbone_weights(self.backbone, args.backbone_weights, trust=args.trust_checkpoint)
        self.backbone.eval()
        self.args = args

    def read(self, path: str | Path) -> np.ndarray:
        """[T, S, S, 3] uint8 sampled frames of one clip (one-line error for anything unreadable)."""
        clip = read_frames(path, self.args.num_frames, reader=self.args.reader)
        return resize_frames(clip.frames, self.args.frame_size)

    @torch.no_grad()
    def encode(self, clips: list[np.ndarray]) -> torch.Tensor:
        """[N, feature_dim] features."""
        config = self.backbone.config
        batch = torch.stack([to_tensor(c, config.mean, config.std) for c in clips])
        return self.backbone(batch)


def build_parser() -> argparse.ArgumentParser:
    """CLI flags."""
    p = argparse.ArgumentParser(prog="python -m set_abstraction.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", nargs="+", required=True, help=f"the set: 2 to {MAX_SET} video files")
    p.add_argument("--resume", required=True,
                   help="SAM checkpoint: an original-layout .pth.tar (train.py, released files) or a "
                        "save_pretrained directory")
    p.add_argument("--candidates", nargs="*", default=[], help="videos to rank for set completion")
    p.add_argument("--graph", default=None,
                   help="the dataset's <dataset>_graph.json, to name the predicted nodes (default: node labels)")
    p.add_argument("--backbone_weights", default=None,
                   help="published Moments in Time / Kinetics 3D ResNet-50 file (moments_models .pth.tar, "
                        "pretorched resnet3d50_kinetics .pth) or a state dict of this backbone; default: random "
                        "weights (the answers then only show the pipeline)")
    p.add_argument("--arch", default="resnet3d50", choices=list(ARCHS), help="backbone depth")
    p.add_argument("--width", type=int, default=64, help="backbone base width (64 gives 2048-d features)")
    p.add_argument("--model_config", default=None,
                   help="SAM sizes (name or JSON); default: read off the checkpoint's shapes")
    p.add_argument("--num_frames", type=int, default=16, help="frames sampled per clip (the model's 16)")
    p.add_argument("--frame_size", type=int, default=224, help="frames are resized to this square size")
    p.add_argument("--reader", default="auto", choices=READERS, help="video decoder (auto: decord, pyav, opencv)")
    p.add_argument("--topk", type=int, default=5, help="abstraction nodes to list")
    p.add_argument("--out", default="runs/predict/set_abstraction", help="where prediction.json/.png go")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier prediction in --out")
    p.add_argument("--seed", type=int, default=0, help="seed of the random backbone when no weights are given")
    add_trust_flag(p)
    add_num_threads_flag(p)
    return p


def node_names(graph_path: str | None, num_nodes: int) -> list[str]:
    """Display name of each classifier output (category and node id when a graph is given)."""
    if graph_path is None:
        return [f"node {i}" for i in range(num_nodes)]
    graph = load_graph(graph_path)
    names = [f"node {i}" for i in range(num_nodes)]
    for node in graph.nodes:
        label = graph.node_to_label(node)
        if label >= num_nodes:
            raise InputError(graph_path, f"label {label} does not fit the checkpoint's {num_nodes} nodes",
                             record=str(node), field="label")
        names[label] = f"{graph.node_to_category(node)} ({node})"
    return names


@torch.no_grad()
def predict(model: AbstractionEmbeddingModule, features: torch.Tensor, candidates: torch.Tensor | None,
            names: list[str], topk: int) -> dict:
    """Abstraction top-k, candidate ranking and odd-one-out for one set of features [n, D]."""
    model.eval()
    x = features.unsqueeze(0)
    _, logits = model(x)
    probs = logits[0, :, -1].softmax(dim=0)  # the full set is the last subset
    scores, labels = probs.topk(min(topk, probs.numel()))
    result = {"abstraction": [{"node": names[int(i)], "label": int(i), "score": float(s)}
                              for s, i in zip(scores, labels)]}
    n = features.shape[0]
    if n >= 3:
        dist, order = model.find_outlier(x)
        result["odd_one_out"] = {"index": int(order[0, -1]), "distances": [float(d) for d in dist[0]]}
    if candidates is not None and len(candidates):
        dist = model.rank(x, candidates.unsqueeze(0))[0]
        result["completion"] = [{"index": int(i), "distance": float(dist[i])} for i in dist.argsort()]
    return result


def plot(clips: list[np.ndarray], names: list[str], result: dict, out_png: Path,
         candidate_clips: list[np.ndarray], candidate_names: list[str]) -> Path:
    """A middle frame of each clip; the predicted concept as title; the odd one outlined in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(clips), len(candidate_clips))
    rows = 2 if candidate_clips else 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows + 0.6), squeeze=False)
    odd = result.get("odd_one_out", {}).get("index")
    for j, (clip, name) in enumerate(zip(clips, names)):
        ax = axes[0, j]
        ax.imshow(clip[len(clip) // 2])
        label = Path(name).name + ("\nODD ONE OUT" if j == odd else "")
        ax.set_title(label, fontsize=8, color="#c9302c" if j == odd else "black")
        for spine in ax.spines.values():
            spine.set_edgecolor("#c9302c" if j == odd else "#888888")
            spine.set_linewidth(4 if j == odd else 1)
        ax.set_xticks([]), ax.set_yticks([])
    ranks = {c["index"]: r for r, c in enumerate(result.get("completion", []))}
    for j, (clip, name) in enumerate(zip(candidate_clips, candidate_names)):
        ax = axes[1, j]
        ax.imshow(clip[len(clip) // 2])
        ax.set_title(f"candidate #{ranks[j] + 1}: {Path(name).name}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    for ax in axes.flat:
        if not ax.images:
            ax.axis("off")
    top = result["abstraction"][0]
    fig.suptitle(f"in common: {top['node']} ({top['score']:.2f})", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def main(argv: Sequence[str] | None = None) -> int:
    """Decode, embed, predict, print and write prediction.json / prediction.png."""
    args = build_parser().parse_args(argv)
    apply_num_threads(args.num_threads)
    out = Path(args.out)
    if not 2 <= len(args.videos) <= MAX_SET:
        raise InputError("--videos", f"a set needs 2 to {MAX_SET} videos, got {len(args.videos)}")
    for flag in ("num_frames", "frame_size", "topk", "width"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag}", "must be >= 1")
    if (out / "prediction.json").exists() and not args.overwrite:
        raise InputError(out / "prediction.json", "exists; pass --overwrite or another --out")
    # Everything is read and checked before anything is written.
    model = load_sam(args.resume, trust=args.trust_checkpoint, model_config=args.model_config)
    names = node_names(args.graph, model.num_nodes)
    encoder = ClipEncoder(args)
    if encoder.backbone.config.feature_dim != model.in_features:
        raise InputError("--arch", f"{args.arch} width {args.width} gives {encoder.backbone.config.feature_dim}-d "
                                   f"features, the checkpoint takes {model.in_features}-d")
    clips = [encoder.read(v) for v in args.videos]
    candidate_clips = [encoder.read(v) for v in args.candidates]
    features = encoder.encode(clips)
    candidates = encoder.encode(candidate_clips) if candidate_clips else None
    result = predict(model, features, candidates, names, args.topk)
    result.update({"videos": list(args.videos), "candidates": list(args.candidates), "checkpoint": str(args.resume),
                   "backbone_weights": args.backbone_weights})
    if candidates is not None:
        for entry in result["completion"]:
            entry["video"] = args.candidates[entry["index"]]
    if encoder.random:
        result["note"] = "random backbone weights (no --backbone_weights): the answers only show the pipeline"
    print("abstraction (what the set has in common):")
    for entry in result["abstraction"]:
        print(f"  {entry['score']:.3f}  {entry['node']}")
    if "odd_one_out" in result:
        odd = result["odd_one_out"]
        print(f"odd one out: {args.videos[odd['index']]} (distances "
              + ", ".join(f"{d:.3f}" for d in odd["distances"]) + ")")
    else:
        print("odd one out: needs 3 or more videos")
    for rank, entry in enumerate(result.get("completion", []), start=1):
        print(f"completion #{rank}: {entry['video']} (distance {entry['distance']:.3f})")
    if encoder.random:
        print(f"note: {result['note']}")
    out.mkdir(parents=True, exist_ok=True)
    png = plot(clips, args.videos, result, out / "prediction.png", candidate_clips, args.candidates)
    atomic_write_text(out / "prediction.json", json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'prediction.json'} and {png}")
    return 0


if __name__ == "__main__":
    run_cli(main)
