"""YAML + dotlist merge, None conversion, SL_DATA_DIR handling, every bundled config (spec 2.3-2.5, 9.16/9.26)."""
import pytest
from omegaconf import OmegaConf

from common.errors import InputError
from singularity.config import CONFIG_DIR, load_config, parse_overrides


def test_merge_none_and_lists(monkeypatch):
    monkeypatch.setenv("SL_DATA_DIR", "/data/sl")
    cfg = load_config("ret_msrvtt.yaml", ["optimizer.lr=3e-4", "stop_key=None", "test_types=[msrvtt_1k_test,None]",
                                          "video_input.num_frames_test=12"])
    assert cfg.optimizer.lr == 3e-4 and cfg.stop_key is None
    assert list(cfg.test_types) == ["msrvtt_1k_test", None]  # None inside lists converted too (9.16 F)
    assert cfg.video_input.num_frames_test == 12
    assert cfg.train_file[0] == "/data/sl/anno_downstream/msrvtt_ret_train7k.json"
    assert cfg.wandb.enable is False


def test_evaluate_sets_output_dir_and_disables_wandb(monkeypatch):
    monkeypatch.setenv("SL_DATA_DIR", "/data/sl")
    cfg = load_config("qa_msrvtt.yaml", ["evaluate=True", "pretrained_path=/x/ckpt.pth", "wandb.enable=True"])
    assert cfg.output_dir == "/x/eval" and cfg.wandb.enable is False


def test_cli_tokens():
    assert parse_overrides(["--local_rank=3", "a=1"]) == ["a=1"]
    with pytest.raises(InputError, match="cannot parse"):
        parse_overrides(["--lr", "1"])


def test_missing_env_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("SL_DATA_DIR", raising=False)
    with pytest.raises(InputError, match="SL_DATA_DIR is not set"):
        load_config("pretrain.yaml")


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_bundled_config_resolves(path, monkeypatch):
    monkeypatch.setenv("SL_DATA_DIR", "/data/sl")
    cfg = load_config(str(path))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["data_root"] == "/data/sl/videos_images"
    assert resolved["test_file"]
    if path.stem == "pretrain":
        assert len(resolved["train_file"]) == 2 and resolved["train_file"][0][0].endswith("coco.json")
        webvid = load_config(str(path), ["train_corpus=webvid_14m"])
        assert len(OmegaConf.to_container(webvid, resolve=True)["train_file"]) == 6
