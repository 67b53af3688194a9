"""Scripts: original flags in --help, refusals with one-line errors, python <script> and python -m, the
do_eval path writing hyp_ep_eval.json in the original format, predict on a saved checkpoint."""
import json
import subprocess
import sys

import pytest
import torch

from clip4idc.convert import new_to_original
from clip4idc.factory import save_config_sidecar
from clip4idc.main_task_caption import main as caption_main
from clip4idc.main_task_retrieval import main as retrieval_main
from clip4idc.params import UNUSED, build_parser, check_args

ORIGINAL_FLAGS = ["do_pretrain", "do_train", "do_eval", "data_path", "features_path", "num_thread_reader", "lr",
                  "epochs", "batch_size", "batch_size_val", "lr_decay", "n_display", "seed", "max_words", "margin",
                  "hard_negative_rate", "negative_weighting", "n_pair", "output_dir", "cross_model", "decoder_model",
                  "init_model", "resume_model", "do_lower_case", "warmup_proportion", "gradient_accumulation_steps",
                  "n_gpu", "cache_dir", "fp16", "fp16_opt_level", "task_type", "datatype", "world_size", "local_rank",
                  "rank", "coef_lr", "use_mil", "sampled_use_mil", "text_num_hidden_layers", "visual_num_hidden_layers",
                  "intra_num_hidden_layers", "cross_num_hidden_layers", "freeze_layer_num", "linear_patch",
                  "pretrained_clip_name"]


def test_parsers_have_original_flags_and_defaults():
    r = build_parser("retrieval").parse_args(["--output_dir", "x"])
    c = build_parser("caption").parse_args(["--output_dir", "x"])
    for flag in ORIGINAL_FLAGS:
        assert hasattr(r, flag) and hasattr(c, flag), flag
    assert r.feature_framerate == 1 and c.gt_dir == "gt"
    assert (r.task_type, c.task_type) == ("retrieval", "caption")
    assert (r.lr, r.epochs, r.batch_size, r.batch_size_val, r.max_words, r.seed) == (1e-4, 20, 256, 3500, 20, 42)
    assert (r.intra_num_hidden_layers, r.freeze_layer_num, r.linear_patch, r.coef_lr) == (9, 0, "2d", 1.0)
    assert (r.pretrained_clip_name, r.datatype, r.warmup_proportion, r.n_display) == ("ViT-B/32", "msrvtt", 0.1, 100)


def test_unused_flags_and_bad_values_are_refused(capsys):
    from common.errors import run_cli

    base = ["--output_dir", "unused_dir", "--datatype", "clevr"]
    cases = ((base + ["--do_train", "--margin", "0.3"], "--margin"),
             (base + ["--do_train", "--task_type", "caption"], "retrieval"),
             (base, "--do_train or --do_eval"),
             (["--output_dir", "unused_dir", "--do_train", "--datatype", "msrvtt"], "--datatype"))
    for argv, needle in cases:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(retrieval_main, argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and needle in err and "\n" not in err
    assert set(UNUSED) >= {"margin", "n_pair", "use_mil", "cache_dir", "fp16_opt_level"}


def test_help_of_both_scripts_and_module_form(repo_root):
    for script in ("main_task_retrieval.py", "main_task_caption.py"):
        proc = subprocess.run([sys.executable, script, "--help"], cwd=repo_root / "clip4idc", capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        for flag in ("--intra_num_hidden_layers", "--coef_lr", "--freeze_layer_num", "--resume_model"):
            assert flag in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "clip4idc.main_task_caption", "--help"], cwd=repo_root,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "--beam_size" in proc.stdout and "--gt_dir" in proc.stdout


def test_keep_freed_memory_applies_on_glibc(repo_root):
    import platform

    code = "from clip4idc.sysmem import keep_freed_memory; print(keep_freed_memory())"
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert proc.stdout.strip() == str(glibc)


def _save_tiny_checkpoint(model, out_dir, max_words=10):
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(new_to_original(model.state_dict()), out_dir / "pytorch_model.bin.0")
    save_config_sidecar(out_dir, model.clip.cfg, model.decoder.cfg, max_words)
    return out_dir / "pytorch_model.bin.0"


def test_do_eval_writes_original_hyp_format(tmp_path, syn_root, tiny_caption_model, tiny_flags):
    ckpt = _save_tiny_checkpoint(tiny_caption_model, tmp_path / "ckpt")
    out = tmp_path / "eval"
    argv = ["--do_eval", "--data_path", str(syn_root / "clevr"), "--output_dir", str(out), "--init_model", str(ckpt),
            "--gt_dir", str(syn_root / "gt"), "--caption_metrics", "Bleu", "--n_visualize", "1"] + tiny_flags
    assert caption_main(argv) == 0
    hyps = json.loads((out / "hyp_ep_eval.json").read_text())
    assert set(hyps[0]) == {"caption", "image_id"}
    ids = [h["image_id"] for h in hyps]
    assert len(ids) == 32 and ids[0] == "000001.png" or ids[0].endswith(".png")
    assert all(i.endswith("_n") for i in ids[16:]) and not any(i.endswith("_n") for i in ids[:16])
    scores = json.loads((out / "scores_ep_eval.json").read_text())
    assert {"total", "semantic", "distractor", "color", "material", "add", "drop", "move"} <= set(scores)
    assert list((out / "vis_ep_eval").glob("*.png"))
    with pytest.raises(Exception, match="refusing to overwrite"):
        caption_main(argv)


def test_predict_cli_on_saved_checkpoint(tmp_path, syn_root, tiny_caption_model, repo_root):
    ckpt = _save_tiny_checkpoint(tiny_caption_model, tmp_path / "ckpt")
    bef = syn_root / "clevr" / "images" / "CLEVR_default_000000.png"
    aft = syn_root / "clevr" / "sc_images" / "CLEVR_semantic_000000.png"
    proc = subprocess.run([sys.executable, "-m", "clip4idc.predict", "--init_model", str(ckpt), "--before", str(bef),
                           "--after", str(aft)], cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1
    from clip4idc.predict import main as predict_main
    (tmp_path / "pairs.txt").write_text(f"# before after\n{bef}\t{aft}\n{aft} {bef}\n")
    assert predict_main(["--init_model", str(ckpt), "--pairs", str(tmp_path / "pairs.txt"), "--output",
                         str(tmp_path / "caps.json"), "--png_dir", str(tmp_path / "png")]) == 0
    caps = json.loads((tmp_path / "caps.json").read_text())
    assert len(caps) == 2 and set(caps[0]) == {"before", "after", "caption"}
    assert len(list((tmp_path / "png").glob("*.png"))) == 2
    (tmp_path / "bad.txt").write_text("only_one_path.png\n")
    from common.errors import InputError
    with pytest.raises(InputError, match="line 1"):
        predict_main(["--init_model", str(ckpt), "--pairs", str(tmp_path / "bad.txt")])


def test_retrieval_stage_checkpoint_cannot_caption(tmp_path):
    from clip4idc.models import build_model, load_clip_config
    from clip4idc.predict import main as predict_main
    from common.errors import InputError

    model = build_model(load_clip_config("tiny"), None, "retrieval")
    torch.save(new_to_original(model.state_dict()), tmp_path / "ret.bin")
    with pytest.raises(InputError, match="no caption decoder"):
        predict_main(["--init_model", str(tmp_path / "ret.bin"), "--before", "a.png", "--after", "b.png"])


def test_check_args_accepts_tiny_setup(tiny_flags):
    args = check_args(build_parser("retrieval").parse_args(["--output_dir", "x", "--do_train"] + tiny_flags), "retrieval")
    assert args.datatype == "clevr"
