"""``python -m singularity.ask`` (issue 14): answers ranked exactly as the QA evaluation ranks them, top 5 with
scores and a PNG; bad input is one line with exit code 2."""
import hashlib
import os
import shutil

import numpy as np
import pytest
import torch

from common.errors import run_cli
from singularity import ask


@pytest.fixture(scope="module")
def qa_ckpt(syn_dir, tiny_config, tmp_path_factory):
    """A tiny QA model (seeded random init) saved as tasks/vqa.py saves one: weights + plain config."""
    from singularity.config import to_container
    from singularity.tasks_common import build_model_for_task

    config = tiny_config(syn_dir, "qa_syn")
    torch.manual_seed(3)
    model = build_model_for_task("vqa", config)
    path = tmp_path_factory.mktemp("ask") / "qa.pth"
    torch.save({"model": model.state_dict(), "config": to_container(config)}, path)
    return path


def run(argv, capsys):
    try:
        run_cli(ask.main, argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def parse(out):
    """[(answer, score)] from the printed top 5."""
    rows = [line.split() for line in out.splitlines() if line[:3].strip().rstrip(".").isdigit()]
    return [(r[1], float(r[2])) for r in rows]


def test_answers_ranked_as_the_qa_evaluation(qa_ckpt, syn_dir, tiny_config, tmp_path, capsys):
    from singularity.data.build import qa_eval_loader
    from singularity.engine import Runtime
    from singularity.models.tokenizer import TextTokenizer
    from singularity.search import load_model
    from singularity.tasks.vqa import load_answer_list, predict

    config = tiny_config(syn_dir, "qa_syn", "video_input.cache_decoded=0")
    loader = qa_eval_loader(config, "val")
    rec = loader.dataset.anno[5]
    png = tmp_path / "a.png"
    code, out, err = run(["--video", rec["image"], "--question", rec["question"], "--pretrained_path", str(qa_ckpt),
                          "--png", str(png)], capsys)
    assert code == 0, err
    ranked = parse(out)
    assert len(ranked) == 5 and png.stat().st_size > 1000
    assert "frames [0, 2, 4, 6] of 8" in out
    # the evaluation's own pipeline: dataset item -> rank_answers, and predict()'s answer for this question
    model, cfg, tok = load_model("vqa", str(qa_ckpt), None, [], False, torch.device("cpu"))
    answers = load_answer_list(str(cfg.answer_list))
    media, question, _ = loader.dataset[5]
    eos = str(cfg.eos)
    ans = TextTokenizer(str(cfg.text_encoder))([f"{a} {eos}" for a in answers], int(cfg.max_a_len))
    q = tok([question], int(cfg.max_q_len))
    ids, probs = model.rank_answers(media.unsqueeze(0), q, ans["input_ids"], ans["attention_mask"], int(cfg.k_test))
    assert [a for a, _ in ranked] == [answers[i] for i in ids[0, :5].tolist()]
    np.testing.assert_allclose([s for _, s in ranked], probs[0, :5].numpy(), atol=1e-4)
    runtime = Runtime(info=None, device=torch.device("cpu"), amp_dtype=None, scaler=None)
    preds = {p["question_id"]: p["answer"] for p in predict(model, loader, tok, answers, runtime, cfg)}
    assert preds[rec["question_id"]] == ranked[0][0]


def test_answer_list_flag(qa_ckpt, syn_dir, tmp_path, capsys):
    video = next((syn_dir / "videos_images" / "syn_vid").glob("qaval_red_bar_*.mp4"))
    (tmp_path / "answers.json").write_text('["red", "blue"]')
    code, out, err = run(["--video", str(video), "--question", "what color is the shape", "--pretrained_path",
                          str(qa_ckpt), "--answer_list", str(tmp_path / "answers.json"),
                          "--png", str(tmp_path / "b.png")], capsys)
    assert code == 0, err
    ranked = parse(out)
    assert sorted(a for a, _ in ranked) == ["blue", "red"] and abs(sum(s for _, s in ranked) - 1) < 1e-3


def _video(syn_dir, tmp, name):
    src = next((syn_dir / "videos_images" / "syn_vid").glob("qaval_*.mp4"))
    return shutil.copy(src, tmp / name)


def _short(syn_dir, tmp):
    from singularity.synthetic import draw_shape, write_video

    write_video(tmp / "short.mp4", [draw_shape(np.random.default_rng(0), "red", "bar") for _ in range(2)])
    return tmp / "short.mp4"


BAD = [
    ("video-missing", lambda s, t, c: ["--video", str(t / "gone.mp4")], "gone.mp4", "video not found"),
    ("video-empty", lambda s, t, c: ["--video", str((t / "e.mp4").write_bytes(b"") or t / "e.mp4")], "e.mp4",
     "empty file"),
    ("video-garbage", lambda s, t, c: ["--video", str((t / "g.mp4").write_bytes(b"\x00x" * 99) and t / "g.mp4")],
     "g.mp4", "does not decode"),
    ("image-not-video", lambda s, t, c: ["--video", str(next((s / "videos_images" / "syn_img").glob("*.png")))],
     ".png", "a video was expected"),
    ("video-too-short", lambda s, t, c: ["--video", str(_short(s, t))], "short.mp4", "fewer than the 4 requested"),
    ("answer-list-missing", lambda s, t, c: ["--video", str(_video(s, t, "v.mp4")), "--answer_list",
                                             str(t / "no.json")], "no.json", "answer list not found"),
    ("answer-list-not-strings", lambda s, t, c: ["--video", str(_video(s, t, "v.mp4")), "--answer_list",
                                                 str((t / "n.json").write_text("[1, 2]") and t / "n.json")],
     "n.json", "list of answer strings"),
    ("ckpt-missing", lambda s, t, c: ["--video", str(_video(s, t, "v.mp4")), "--pretrained_path",
                                      str(t / "none.pth")], "none.pth", "checkpoint file not found"),
    ("ckpt-garbage", lambda s, t, c: ["--video", str(_video(s, t, "v.mp4")), "--pretrained_path",
                                      str((t / "junk.pth").write_bytes(b"junk" * 10) and t / "junk.pth")],
     "junk.pth", "torch checkpoint"),
    ("ckpt-malicious-pickle", lambda s, t, c: ["--video", str(_video(s, t, "v.mp4")), "--pretrained_path",
                                               str(_malicious(t))], "evil.pth", "os.system"),
]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious(tmp):
    """A torch file whose unpickling would run a shell command (refused: the marker is never created)."""
    torch.save({"model": {"w": torch.zeros(1)}, "config": _Evil(tmp / "pwned")}, tmp / "evil.pth")
    return tmp / "evil.pth"


@pytest.mark.parametrize("argv,name,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2(argv, name, message, qa_ckpt, syn_dir, tmp_path, capsys):
    args = argv(syn_dir, tmp_path, qa_ckpt)
    if "--pretrained_path" not in args:
        args += ["--pretrained_path", str(qa_ckpt)]
    keep = tmp_path / "out" / "old.png"
    keep.parent.mkdir()
    keep.write_bytes(b"previous result")
    before = hashlib.sha256(keep.read_bytes()).hexdigest()
    code, out, err = run(args + ["--question", "what color is it", "--png", str(keep)], capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert name in lines[0] and message in lines[0], lines[0]
    assert hashlib.sha256(keep.read_bytes()).hexdigest() == before
    assert not (tmp_path / "pwned").exists()


def test_short_video_allowed_and_long_question_truncated(qa_ckpt, syn_dir, tmp_path, capsys):
    video = _short(syn_dir, tmp_path)
    question = " ".join(["what color is the shape"] * 3)
    code, out, err = run(["--video", str(video), "--question", question, "--pretrained_path", str(qa_ckpt),
                          "--allow_short", "--png", str(tmp_path / "s.png")], capsys)
    assert code == 0, err
    assert "frames [0, 1, 1, 1] of 2" in out  # the sampler's padding, as training / evaluation pad
    note = [line for line in err.splitlines() if line.startswith("warning: question")]
    assert len(note) == 1 and "15 word pieces" in note[0] and "max_txt_l=8" in note[0]
