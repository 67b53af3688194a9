"""Spec section 9 items not covered elsewhere (F = fixed, K = kept, O = offered behind a flag).
Covered in other files: 2 (test_model), 6/8/9/12 (test_training), 7/24 (test_data), 10/11 (test_optim),
13 (test_decoding), 14/15 (test_model), 17/18 (test_evaluation), 19 (test_data + the real-file test here)."""
import argparse
import json
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

from clip4idc.convert import new_to_original
from clip4idc.data import build_dataset
from clip4idc.data.images import load_image
from clip4idc.data.spot import spot_gt
from clip4idc.factory import create_model, find_openai_weights
from clip4idc.models import build_model, load_clip_config
from clip4idc.params import build_parser, check_args
from clip4idc.train import run, seeding_enabled


def test_9_3_spot_caption_script_runs_the_caption_stage(repo_root):
    script = (repo_root / "clip4idc" / "scripts" / "caption_spot.sh").read_text()
    assert "main_task_caption.py" in script and "main_task_retrieval.py" not in script
    assert "--datatype spot" in script


def test_9_4_always_seeded_unless_asked():
    args = argparse.Namespace(datatype="spot", seed_only_clevr=False)
    assert seeding_enabled(args, "caption")
    args.seed_only_clevr = True
    assert not seeding_enabled(args, "caption") and seeding_enabled(args, "retrieval")
    args.datatype = "clevr"
    assert seeding_enabled(args, "caption")


def test_9_5_select_on_val(tmp_path, syn_root, tiny_flags):
    model = build_model(load_clip_config("tiny"), None, "retrieval")
    torch.save(new_to_original(model.state_dict()), tmp_path / "ret.bin")
    argv = ["--do_eval", "--select_on_val", "--data_path", str(syn_root / "clevr"), "--output_dir", str(tmp_path / "o"),
            "--init_model", str(tmp_path / "ret.bin")] + tiny_flags
    metrics = run(check_args(build_parser("retrieval").parse_args(argv), "retrieval"), "retrieval")
    log = (tmp_path / "o" / "log.txt").read_text()
    assert "***** Running val *****" in log and "Num examples = 8" in log
    assert set(metrics) >= {"R1", "V2T$R1"}


def test_9_8_import_does_not_initialise_distributed():
    import torch.distributed as dist

    import clip4idc.train  # noqa: F401  (the original called init_process_group at import time)
    assert not dist.is_initialized()


def test_9_16_one_item_per_caption_kept(tmp_path, syn_root, tokenizer):
    import shutil

    root = tmp_path / "clevr"
    shutil.copytree(syn_root / "clevr", root)
    caps = json.loads((root / "change_captions.json").read_text())
    caps = {k: v + ["another sentence"] for k, v in caps.items()}
    (root / "change_captions.json").write_text(json.dumps(caps))
    ds = build_dataset("clevr", "retrieval", "train", root, "", tokenizer, 10, 28)
    assert len(ds) == 2 * len(ds.scenes)
    assert ds.items[0][0] == ds.items[1][0]  # the same scene twice: in-batch false negatives are possible (kept)
    assert ds.cut_off_points[:2] == [2, 4]


def test_9_20_local_openai_weights_or_random(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert find_openai_weights("ViT-B/32") is None
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "ViT-B-32.pt").write_bytes(b"")
    assert find_openai_weights("ViT-B/32") == tmp_path / "modules" / "ViT-B-32.pt"
    # an OpenAI-layout file given by path: sizes inferred from the tensors, pair params stay new
    torch.manual_seed(0)
    src = build_model(load_clip_config("tiny"), None, "retrieval")
    openai = OrderedDict((k[len("clip."):], v) for k, v in new_to_original(src.state_dict()).items()
                         if not any(s in k for s in ("bef_", "aft_", "joint_", "ln_mid")))
    openai["input_resolution"] = torch.tensor(28)
    torch.save(openai, tmp_path / "tiny_openai.pt")
    args = build_parser("retrieval").parse_args(["--output_dir", "x", "--pretrained_clip_name",
                                                 str(tmp_path / "tiny_openai.pt"), "--intra_num_hidden_layers", "2"])
    model, cfg, _ = create_model(args, "retrieval")
    assert (cfg.vision_width, cfg.vision_layers, cfg.image_resolution, cfg.intra_layers) == (64, 4, 28, 2)
    torch.testing.assert_close(model.clip.visual.proj.weight, src.clip.visual.proj.weight)


def test_9_21_no_boto3_or_requests_needed():
    import clip4idc.convert  # noqa: F401
    import clip4idc.train  # noqa: F401
    assert "boto3" not in sys.modules


def test_9_22_squashed_not_cropped_and_9_23_resolution(tmp_path):
    img = np.zeros((30, 60, 3), dtype=np.uint8)
    img[:, :30] = (255, 0, 0)
    img[:, 30:] = (0, 0, 255)
    Image.fromarray(img).save(tmp_path / "wide.png")
    arr = load_image(tmp_path / "wide.png", 28)
    assert arr.shape == (1, 3, 28, 28) and arr.dtype == np.float32
    assert arr[0, 0, :, 2].mean() > 1.0 and arr[0, 2, :, 25].mean() > 1.0  # both halves survive the resize
    assert load_image(tmp_path / "wide.png", 32).shape == (1, 3, 32, 32)


def test_real_spot_gt_rebuilt_byte_exact(shared_data_dir, tmp_path):
    """Rebuild the released gt/spot_total_change_captions_reformat.json from a raw test.json recovered
    from it (record i = image entry i and its captions) and compare the bytes (spec 3.4 / 9.19)."""
    path = shared_data_dir / "captions" / "spot_total_change_captions_reformat.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    text = path.read_text()
    gt = json.loads(text)
    anns, records, pos = gt["annotations"], [], 0
    images = gt["images"]
    for j, image in enumerate(images):
        sentences = []
        last_of_run = j + 1 == len(images) or images[j + 1]["id"] != image["id"]
        while last_of_run and pos < len(anns) and anns[pos]["image_id"] == image["id"]:
            sentences.append(anns[pos]["caption"])
            pos += 1
        records.append({"img_id": image["id"][: -len(".png")], "sentences": sentences})
    assert pos == len(anns)
    (tmp_path / "test.json").write_text(json.dumps(records))
    rebuilt = spot_gt(tmp_path / "test.json")
    assert (len(rebuilt["images"]), len({i["id"] for i in rebuilt["images"]}), len(rebuilt["annotations"])) == (1404, 1270, 2107)
    assert json.dumps(rebuilt) == text


def test_9_1_faithful_fp16_option(tmp_path, syn_root, tiny_flags):
    from clip4idc.convert import default_model
    from clip4idc.models.precision import convert_weights_fp16

    model = default_model("caption")
    convert_weights_fp16(model)
    exported = new_to_original(model.state_dict())
    assert sum(v.dtype == torch.float16 for v in exported.values()) == 195  # as the released files (spec 5.6)
    assert exported["clip.token_embedding.weight"].dtype == torch.float32
    assert exported["decoder.classifier.cls.predictions.bias"].dtype == torch.float32
    # a smoke step of the mode: float16 CLIP tensors updated in place with float16 moments
    from clip4idc.optim import build_optimizer

    torch.manual_seed(0)
    tiny = build_model(load_clip_config("tiny"), None, "retrieval")
    convert_weights_fp16(tiny)
    opt = build_optimizer(tiny, "retrieval", 1e-3, 1.0, 10, 0.1)
    ids = torch.tensor([[49406, 518, 49407], [49406, 736, 49407]])
    before = tiny.clip.visual.layers[0].mlp.fc1.weight.detach().clone()
    for _ in range(2):  # the first BertAdam update has LR 0
        tiny(torch.randn(2, 3, 28, 28), torch.randn(2, 3, 28, 28), text_ids=ids).backward()
        opt.step()
        opt.zero_grad()
    fc1 = tiny.clip.visual.layers[0].mlp.fc1.weight
    assert fc1.dtype == torch.float16 and opt.state[fc1]["next_v"].dtype == torch.float16
    assert not torch.equal(fc1.detach(), before)
    args = check_args(build_parser("caption").parse_args(["--output_dir", "x", "--do_eval", "--datatype", "clevr",
                                                          "--faithful_fp16"]), "caption")
    assert args.faithful_fp16


def test_amp_flags(tmp_path, syn_root, tiny_flags):
    from common.errors import InputError

    base = ["--do_train", "--data_path", str(syn_root / "clevr"), "--batch_size", "16", "--epochs", "1",
            "--device", "cpu"] + tiny_flags
    with pytest.raises(InputError, match="needs CUDA"):
        run(check_args(build_parser("retrieval").parse_args(base + ["--output_dir", str(tmp_path / "a"), "--fp16"]),
                       "retrieval"), "retrieval")
    with pytest.raises(InputError, match="choose one"):
        check_args(build_parser("retrieval").parse_args(base + ["--output_dir", "x", "--bf16", "--faithful_fp16"]),
                   "retrieval")
    result = run(check_args(build_parser("retrieval").parse_args(base + ["--output_dir", str(tmp_path / "b"), "--bf16",
                                                                         "--save_original_precision"]),
                            "retrieval"), "retrieval")
    assert np.isfinite(result["last"]["R1"]) and (tmp_path / "b" / "pytorch_model.bin.0").is_file()
    # --save_original_precision (issue 17): the CLIP Conv/Linear/attention tensors in float16, as the original
    from clip4idc.convert import original_fp16_names

    saved = torch.load(tmp_path / "b" / "pytorch_model.bin.0", weights_only=True)
    half = {k for k, v in saved.items() if v.dtype == torch.float16}
    assert half == set(original_fp16_names(saved)) and len(half) == 51  # tiny: 6 blocks x 8 + conv1, both projections
    assert all(v.dtype == torch.float32 for k, v in saved.items() if k not in half)
