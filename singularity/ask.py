"""Ask a question about one of your own videos with a Singularity QA checkpoint (issue 14).

    python -m singularity.ask --video v.mp4 --question "what is the man holding" --pretrained_path qa.pth \\
        [--answer_list answers.json] [--png answer.png]

The answers are ranked as the QA evaluation ranks them (``tasks/vqa.py predict``: the ``k_test`` answers with
the highest first-token probability, re-scored by the decoder's sequence likelihood, softmax): the top 5 are
printed with their scores and drawn in a PNG under the video's frames and the question. The frames are the
evaluation's (``video_input.num_frames_test`` frames, ``sample_type_test``), decoded frame-indexed.

The answer list is ``--answer_list`` (a JSON list of strings) or the config's ``answer_list``; the model config is
the one stored in the checkpoint or ``--config YAML``, with ``key=value`` overrides.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the monorepo importable (absolute imports only)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from common.errors import InputError, run_cli
from common.safe_pickle import add_trust_flag
from singularity.data.annotations import pre_text
from singularity.data.frames import IMAGE_SUFFIXES, read_clip
from singularity.data.transforms import EvalTransform
from singularity.models.config_paths import cfg_get
from singularity.search import frame_settings, load_model, truncation_note

TOP = 5


@torch.no_grad()
def rank_answers(model, tokenizer, config, clip: torch.Tensor, question: str, answer_list: list[str],
                 device: torch.device) -> list[tuple[str, float]]:
    """(answer, probability) best first, as ``tasks.vqa.predict`` ranks one question's answers."""
    eos = str(cfg_get(config, "eos", "[SEP]"))
    ans = tokenizer([f"{a} {eos}" for a in answer_list], int(cfg_get(config, "max_a_len", 5)))
    ans = {k: v.to(device) for k, v in ans.items()}
    q = {k: v.to(device) for k, v in tokenizer([question], int(cfg_get(config, "max_q_len", 25))).items()}
    ids, probs = model.rank_answers(clip.unsqueeze(0).to(device), q, ans["input_ids"], ans["attention_mask"],
                                    int(cfg_get(config, "k_test", 128)))
    return [(answer_list[i], float(p)) for i, p in zip(ids[0].tolist(), probs[0].tolist())]


def plot_answer(path: Path, frames: np.ndarray, video: str, question: str, ranked: list[tuple[str, float]]) -> Path:
    """The sampled frames, the question and the top answers as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(frames)
    fig = plt.figure(figsize=(max(6.0, 1.8 * n), 4.6))
    grid = fig.add_gridspec(2, n, height_ratios=[1.1, 1.0])
    for t, frame in enumerate(frames):
        ax = fig.add_subplot(grid[0, t])
        ax.imshow(frame, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"frame {t + 1}", fontsize=7)
    ax = fig.add_subplot(grid[1, :])
    names = [a for a, _ in ranked][::-1]
    scores = [s for _, s in ranked][::-1]
    ax.barh(range(len(names)), scores, color=["#bbbbbb"] * (len(names) - 1) + ["#2a9d4b"])
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (softmax over the ranked answers)", fontsize=8)
    for y, s in enumerate(scores):
        ax.text(min(s + 0.01, 0.9), y, f"{s:.3f}", va="center", fontsize=8)
    fig.suptitle(f"{Path(video).name}\nQ: " + "\n".join(textwrap.wrap(question, 90)), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True, help="the video file")
    parser.add_argument("--question", required=True, help="the question")
    parser.add_argument("--pretrained_path", required=True, help="QA checkpoint (tasks/vqa.py ckpt_best.pth)")
    parser.add_argument("--answer_list", help="JSON list of candidate answers (default: the config's answer_list)")
    parser.add_argument("--config", help="model config YAML (default: the config stored in the checkpoint)")
    parser.add_argument("--png", help="output PNG (default: <video stem>_answers.png in the current directory)")
    parser.add_argument("--allow_short", action="store_true",
                        help="accept a video with fewer frames than num_frames_test (the last frame is repeated)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    add_trust_flag(parser)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. video_input.num_frames_test=8)")
    return parser


def main(argv=None) -> int:
    """CLI entry (see the module docstring)."""
    from singularity.tasks.vqa import load_answer_list

    args = build_parser().parse_args(argv)
    video = Path(args.video)
    if video.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(video, f"is an image ({video.suffix}), a video was expected", field="--video")
    question = pre_text(args.question)  # as the QA datasets (pre_text)
    if not question:
        raise InputError("--question", "empty question")
    device = torch.device(args.device)
    model, config, tokenizer = load_model("vqa", args.pretrained_path, args.config, args.overrides,
                                          args.trust_checkpoint, device)
    answer_file = args.answer_list or cfg_get(config, "answer_list")
    if not answer_file:
        raise InputError(args.pretrained_path, "no answer list: pass --answer_list answers.json", field="answer_list")
    answers = load_answer_list(str(answer_file))
    settings = frame_settings(config)
    n = settings["num_frames"]
    short_ok = args.allow_short or settings["sample_type"] not in ("rand", "middle")
    clip = read_clip(video, n, settings["sample_type"], reader=settings["reader"], min_frames=0 if short_ok else n)
    raw = torch.from_numpy(np.ascontiguousarray(clip.frames)).permute(0, 3, 1, 2)
    media = EvalTransform(settings["image_res"])(raw)
    note = truncation_note(tokenizer, question, int(cfg_get(config, "max_q_len", 25)), what="question")
    if note:
        print(note, file=sys.stderr)
    ranked = rank_answers(model, tokenizer, config, media, question, answers, device)[:TOP]
    print(f"video: {video}  (frames {clip.indices} of {clip.vlen})")
    print(f"question: {args.question}")
    for rank, (answer, score) in enumerate(ranked, 1):
        print(f"{rank:>2}. {answer:<24} {score:.4f}")
    png = Path(args.png) if args.png else Path(f"{video.stem}_answers.png")
    plot_answer(png, clip.frames, str(video), args.question, ranked)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    run_cli(main)
