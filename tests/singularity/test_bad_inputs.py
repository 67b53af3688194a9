"""Issue 11 for Singularity: every bad input is one line ``error: <file>: [record N: ][field 'x': ]msg`` with exit
code 2, nothing in the output directory changes, nothing a crafted pickle asks for runs.

Each case runs the real CLI entry in-process (``run_cli(main, argv)``) on the synthetic data of the session.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy.testing._private.utils as numpy_test_utils
import pytest
import torch
from omegaconf import OmegaConf

from common.errors import run_cli

SCRIPTS = Path(__file__).resolve().parents[2] / "singularity" / "scripts"


# ------------------------------------------------------------------------------------------------
# crafted pickles
# ------------------------------------------------------------------------------------------------

class SystemCall:
    """Unpickling calls ``os.system(cmd)``."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


class NestedTorchLoad:
    """Unpickling calls ``torch.storage._load_from_bytes`` on a torch-saved ``SystemCall``."""

    def __init__(self, cmd: str):
        inner = io.BytesIO()
        torch.save(SystemCall(cmd), inner)
        self.data = inner.getvalue()

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.data,)


class NumpyRunstring:
    """Unpickling calls numpy's ``runstring``, which ``exec``s its argument."""

    def __init__(self, cmd: str):
        self.code = f"import os; os.system({cmd!r})"

    def __reduce__(self):
        return numpy_test_utils.runstring, (self.code, {})


GADGETS = {"os_system": (SystemCall, "wants to call os.system"),
           "nested_torch_load": (NestedTorchLoad, "nested in it wants to call os.system"),
           "numpy_runstring": (NumpyRunstring, "wants to call numpy.testing._private.utils.runstring")}


# ------------------------------------------------------------------------------------------------
# a world per test: synthetic data, a tiny checkpoint, an output directory with a launcher's files in it
# ------------------------------------------------------------------------------------------------

@dataclass
class World:
    syn: Path
    tmp: Path
    out: Path
    marker: Path
    state: dict = field(default_factory=dict)

    def config(self, name: str) -> str:
        return str(self.syn / "configs" / f"{name}.yaml")

    def media(self) -> str:
        return str(self.syn / "videos_images" / "syn_vid")

    def anno(self, name: str, records: list) -> str:
        path = self.tmp / name
        path.write_text(json.dumps(records))
        return str(path)

    def text(self, name: str, content: str) -> str:
        path = self.tmp / name
        path.write_text(content)
        return str(path)

    def test_records(self, n: int = 2) -> list[dict]:
        return json.loads((self.syn / "anno_downstream" / "syn_ret_test.json").read_text())[:n]

    def broken_video(self) -> str:
        (Path(self.media()) / "broken_clip.mp4").write_text("this is not a video\n")
        return "broken_clip.mp4"

    def checkpoint(self, name: str, **entries) -> str:
        path = self.tmp / name
        torch.save({"model": dict(self.state), **entries}, path)
        return str(path)


@pytest.fixture(scope="module")
def tiny_state(syn_dir):
    """State dict of the ret_syn model (tiny BEiT/BERT), random init."""
    from singularity.config import load_config
    from singularity.models.build import build_model_for_task

    torch.manual_seed(0)
    return build_model_for_task("retrieval", load_config(str(syn_dir / "configs" / "ret_syn.yaml"))).state_dict()


@pytest.fixture
def world(syn_dir, tiny_state, tmp_path):
    out = tmp_path / "out"
    (out / "code").mkdir(parents=True)
    (out / "code" / "snapshot.txt").write_text("code copied by the launcher\n")
    (out / "slurm-17.out").write_text("slurm log of an earlier attempt\n")
    return World(syn=syn_dir, tmp=tmp_path, out=out, marker=tmp_path / "pwned", state=dict(tiny_state))


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def ret(w: World, *extra: str) -> list[str]:
    return [w.config("ret_syn"), f"output_dir={w.out}", "scheduler.epochs=1", *extra]


def evil_checkpoint(w: World, gadget: str) -> str:
    return w.checkpoint(f"evil_{gadget}.pth", config=GADGETS[gadget][0](f"touch {w.marker}"))


def temporal_checkpoint(w: World) -> str:
    w.state["temporal_embeddings"] = torch.randn(1, 4, 1, w.state["temporal_embeddings"].shape[-1])
    return w.checkpoint("ft_syn_singularity_temporal.pth")


def truncated_checkpoint(w: World) -> str:
    data = Path(w.checkpoint("whole.pth")).read_bytes()
    path = w.tmp / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def text_checkpoint(w: World) -> str:
    return w.text("notes.pth", "these are my notes, not a checkpoint\n")


def no_model_checkpoint(w: World) -> str:
    path = w.tmp / "epoch.pth"
    torch.save({"epoch": 3}, path)
    return str(path)


def without(w: World, key: str) -> str:
    del w.state[key]
    return w.checkpoint("partial.pth")


def with_nan(w: World, key: str) -> str:
    w.state[key] = w.state[key].clone()
    w.state[key][0, 0] = float("nan")
    return w.checkpoint("nan.pth")


def retrieval_main(argv):
    from singularity.tasks.retrieval import main
    return main(argv)


def pretrain_main(argv):
    from singularity.tasks.pretrain import main
    return main(argv)


def mc_main(argv):
    from singularity.tasks.retrieval_mc import main
    return main(argv)


def vqa_main(argv):
    from singularity.tasks.vqa import main
    return main(argv)


def convert_main(argv):
    from singularity.convert import main
    return main(argv)


@dataclass
class Case:
    id: str
    main: Callable
    argv: Callable[[World], list[str]]
    expect: list[str]            # substrings of the one error line (file, record, field, message)
    launch: bool = True          # fails before any work: the output directory gains nothing
    forbid: tuple[str, ...] = ()  # substrings the message must not contain


def bad_eval_records(w: World) -> list[dict]:
    good, _ = w.test_records()
    return [good, {**good, "video": w.broken_video()}]


CASES = [
    # config overrides
    Case("override_unknown_key", retrieval_main, lambda w: ret(w, "optimizer.lrr=1e-3"),
         ["ret_syn.yaml", "field 'optimizer.lrr'", "unknown config key", "did you mean 'optimizer.lr'"]),
    Case("override_wrong_type", retrieval_main, lambda w: ret(w, "scheduler.epochs=abc"),
         ["ret_syn.yaml", "field 'scheduler.epochs'", "expected an int", "'abc'"]),
    Case("override_negative_batch", retrieval_main, lambda w: ret(w, "batch_size.video=-4"),
         ["ret_syn.yaml", "field 'batch_size.video'", "must be >= 1, got -4"]),
    Case("override_mapping_as_scalar", retrieval_main, lambda w: ret(w, "batch_size=4"),
         ["ret_syn.yaml", "field 'batch_size'", "expected a mapping"]),
    Case("override_bad_ensemble", retrieval_main, lambda w: ret(w, "evaluate=True", "eval_frame_ensemble=avg"),
         ["ret_syn.yaml", "field 'eval_frame_ensemble'", "concat, mean, max or lse"]),
    Case("override_unknown_test_type", retrieval_main, lambda w: ret(w, "test_types=[syn_tset]"),
         ["ret_syn.yaml", "field 'test_types'", "'syn_tset' is not a test_file entry"]),
    Case("override_bad_sample_type", retrieval_main, lambda w: ret(w, "video_input.sample_type=random"),
         ["ret_syn.yaml", "field 'video_input.sample_type'", "rand, middle or fps<x>"]),
    Case("pretrain_has_no_evaluate_mode", pretrain_main,
         lambda w: [w.config("pretrain_syn"), f"output_dir={w.out}", "evaluate=True"],
         ["field 'evaluate'", "no evaluate mode"]),
    # annotations
    Case("train_record_without_caption", retrieval_main,
         lambda w: ret(w, f"train_file=[{w.anno('nocap.json', [{'video': 'a.mp4'}])},{w.media()},video]"),
         ["nocap.json", "record 0", "field 'caption'"]),
    Case("empty_train_annotations", retrieval_main,
         lambda w: ret(w, f"train_file=[{w.anno('empty_train.json', [])},{w.media()},video]"),
         ["empty_train.json", "annotation list is empty"]),
    Case("empty_test_annotations", retrieval_main,
         lambda w: ret(w, "evaluate=True", f"test_file.syn_test=[{w.anno('empty_test.json', [])},{w.media()},video]"),
         ["empty_test.json", "annotation list is empty"]),
    Case("train_smaller_than_one_batch", retrieval_main,
         lambda w: ret(w, f"train_file=[{w.anno('three.json', w.test_records(3))},{w.media()},video]"),
         ["three.json", "field 'batch_size.video'", "zero iterations"]),
    Case("empty_answer_list", vqa_main,
         lambda w: [w.config("qa_syn"), f"output_dir={w.out}", "evaluate=True",
                    f"answer_list={w.anno('answers.json', [])}"],
         ["answers.json", "field 'answer_list'", "answer list is empty"]),
    Case("answer_list_not_json", vqa_main,
         lambda w: [w.config("qa_syn"), f"output_dir={w.out}", "evaluate=True",
                    "answer_list=" + w.text("answers.txt", "red\nblue\n")],
         ["answers.txt", "field 'answer_list'", "not valid JSON"]),
    # unreadable media during evaluation: an error naming the file, never replaced by another record
    Case("unreadable_video_retrieval", retrieval_main,
         lambda w: ret(w, "evaluate=True", f"test_file.syn_test=[{w.anno('bad_test.json', bad_eval_records(w))},"
                                           f"{w.media()},video]"),
         ["bad_test.json", "record 1", "field 'video'", "broken_clip.mp4", "skip_unreadable_media=True"], launch=False),
    Case("unreadable_videos_training", retrieval_main,
         lambda w: ret(w, "train_file=[" + w.anno("bad_train.json", [{"video": w.broken_video(), "caption": "a red ring"}]
                                                   * 16) + f",{w.media()},video]"),
         ["bad_train.json", "field 'video'", "broken_clip.mp4", "last of 3 records tried"], launch=False),
    Case("unreadable_video_mc", mc_main,
         lambda w: [w.config("mc_syn"), f"output_dir={w.out}", "test_file.mc_test=[" + w.anno("bad_mc.json", [
             {"video": r["video"], "caption": ["a", "b", "c", "d", "e"], "answer": 1} for r in bad_eval_records(w)])
             + f",{w.media()},video]"],
         ["bad_mc.json", "record 1", "field 'video'", "broken_clip.mp4"], launch=False),
    Case("unreadable_video_qa", vqa_main,
         lambda w: [w.config("qa_syn"), f"output_dir={w.out}", "evaluate=True", "test_types=[val]",
                    "test_file.val=[" + w.anno("bad_qa.json", [
                        {"video": r["video"], "question": "what color is the shape", "answer": "red",
                         "question_id": i} for i, r in enumerate(bad_eval_records(w))]) + f",{w.media()},video]"],
         ["bad_qa.json", "record 1", "field 'video'", "broken_clip.mp4"], launch=False),
    # checkpoints given as pretrained_path (read through the restricted unpickler)
    *[Case(f"pretrained_{gadget}", retrieval_main,
           lambda w, g=gadget: ret(w, "evaluate=True", f"pretrained_path={evil_checkpoint(w, g)}"),
           [f"evil_{gadget}.pth", message, "--trust_checkpoint"]) for gadget, (_, message) in GADGETS.items()],
    *[Case(f"convert_{gadget}", convert_main,
           lambda w, g=gadget: ["--input", evil_checkpoint(w, g), "--output", str(w.out / "converted.pth")],
           [f"evil_{gadget}.pth", message]) for gadget, (_, message) in GADGETS.items()],
    Case("pretrained_truncated", retrieval_main,
         lambda w: ret(w, "evaluate=True", f"pretrained_path={truncated_checkpoint(w)}"),
         ["cut.pth", "truncated or corrupt"], forbid=("trust",)),
    Case("pretrained_text_file", retrieval_main,
         lambda w: ret(w, "evaluate=True", f"pretrained_path={text_checkpoint(w)}"),
         ["notes.pth", "not a torch checkpoint"], forbid=("trust",)),
    Case("pretrained_text_file_trusted", retrieval_main,
         lambda w: ret(w, "evaluate=True", "trust_checkpoint=True", f"pretrained_path={text_checkpoint(w)}"),
         ["notes.pth", "not a torch checkpoint"], forbid=("trust",)),
    Case("convert_truncated", convert_main,
         lambda w: ["--input", truncated_checkpoint(w), "--output", str(w.out / "converted.pth")],
         ["cut.pth", "truncated or corrupt"], forbid=("trust",)),
    Case("pretrained_without_model", retrieval_main,
         lambda w: ret(w, "evaluate=True", f"pretrained_path={no_model_checkpoint(w)}"),
         ["epoch.pth", "field 'model'", "no model state dict"]),
    Case("pretrained_missing_key", retrieval_main,
         lambda w: ret(w, "evaluate=True", f"pretrained_path={without(w, 'itm_head.weight')}"),
         ["partial.pth", "field 'pretrained_path'", "1 missing", "itm_head.weight", "allow_partial=True"]),
    Case("pretrained_nan_weight", retrieval_main,
         lambda w: ret(w, "evaluate=True", f"pretrained_path={with_nan(w, 'itm_head.weight')}"),
         ["nan.pth", "field 'model.itm_head.weight'", "NaN"]),
    Case("pretrained_temporal_at_12_frames", retrieval_main,
         lambda w: ret(w, "evaluate=True", "video_input.num_frames_test=12",
                       f"pretrained_path={temporal_checkpoint(w)}"),
         ["ft_syn_singularity_temporal.pth", "field 'video_input.num_frames_test'", "4 learned temporal",
          "resize_learned_tables=True"]),
    Case("pretrained_other_image_res", retrieval_main,
         lambda w: ret(w, "evaluate=True", "image_res=40", f"pretrained_path={w.checkpoint('res32.pth')}"),
         ["res32.pth", "relative_position_bias_table: 52 -> 84 rows", "resize_learned_tables=True"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line(case: Case, world: World, capsys):
    argv = case.argv(world)
    before = snapshot(world.out)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli(case.main, argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and lines and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error: ") for line in lines) == 1
    for part in case.expect:
        assert part in lines[-1], (part, lines[-1])
    for part in case.forbid:
        assert part not in lines[-1], (part, lines[-1])
    after = snapshot(world.out)
    assert {k: after.get(k) for k in before} == before  # nothing already there changed
    if case.launch:
        assert after == before  # a failed launch adds nothing (no config.yaml, no checkpoint)
    assert not world.marker.exists()  # no crafted pickle ran


def test_failed_launch_creates_no_output_dir(world: World, capsys):
    out = world.tmp / "never"
    with pytest.raises(SystemExit):
        run_cli(retrieval_main, [world.config("ret_syn"), f"output_dir={out}", "batch_size.video=-4"])
    with pytest.raises(SystemExit):
        run_cli(retrieval_main, [world.config("ret_syn"), f"output_dir={out}", "evaluate=True",
                                 f"pretrained_path={evil_checkpoint(world, 'os_system')}"])
    assert not out.exists() and not world.marker.exists()


def test_authors_checkpoint_with_omegaconf_config_loads_without_trust(world: World):
    """The released files pickle an OmegaConf DictConfig (spec 6.1): read with the restricted loader, no trust."""
    from singularity.tasks_common import read_checkpoint

    config = OmegaConf.create({"optimizer": {"lr": 1e-5, "opt_betas": [0.9, 0.999]}, "video_input": {"num_frames": 4},
                               "pretrained_path": None})
    path = world.checkpoint("ft_msrvtt_singularity_5m.pth", config=config, epoch=4)
    checkpoint, state = read_checkpoint(path)
    assert checkpoint["config"] == {"optimizer": {"lr": 1e-5, "opt_betas": [0.9, 0.999]},
                                    "video_input": {"num_frames": 4}, "pretrained_path": None}
    assert type(checkpoint["config"]) is dict and checkpoint["epoch"] == 4
    assert set(state) == set(world.state) and all(torch.equal(state[k], world.state[k]) for k in state)


def test_skip_unreadable_counts_in_results(world: World):
    """With skip_unreadable_media=True the broken clip is left out and counted; the good one is evaluated."""
    argv = ret(world, "evaluate=True", "skip_unreadable_media=True",
               f"test_file.syn_test=[{world.anno('bad_test.json', bad_eval_records(world))},{world.media()},video]")
    run_cli(retrieval_main, argv)
    results = json.loads((world.out / "eval_res.json").read_text())
    assert results["syn_test/"]["skipped_unreadable"] == 1 and results["syn_test_emb/"]["skipped_unreadable"] == 1
    assert results["syn_test_emb/"]["img_r1"] == 100.0  # one clip and its caption left


def test_script_failed_launch_removes_its_dir_and_dry_run_creates_nothing(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "torchrun").write_text("#!/usr/bin/env bash\necho 'error: cfg: bad input' >&2\nexit 2\n")
    (fake / "torchrun").chmod(0o755)
    env = dict(os.environ, SL_EXP_DIR=str(tmp_path / "exp"), PATH=f"{fake}:{os.environ['PATH']}", HOSTNAME="h")
    target = tmp_path / "exp" / "ret_msrvtt" / "msrvtt_e1"
    for snapshot_code in ("0", "1"):
        proc = subprocess.run(["bash", str(SCRIPTS / "train_ret.sh"), "e1", "msrvtt", "1", "local"],
                              capture_output=True, text=True, env={**env, "SL_CODE_SNAPSHOT": snapshot_code})
        assert proc.returncode == 2 and not target.exists(), proc.stdout + proc.stderr  # the retry is not blocked
    target.mkdir(parents=True)  # what a failed slurm launch leaves: its logs only
    (target / "slurm123.err").write_text("error\n")
    dry = subprocess.run(["bash", str(SCRIPTS / "train_ret.sh"), "e1", "msrvtt", "1", "local"],
                         capture_output=True, text=True, env={**env, "SL_DRY_RUN": "1"})
    assert dry.returncode == 0 and "torchrun" in dry.stdout
    assert sorted(p.name for p in target.iterdir()) == ["slurm123.err"]
    fresh = tmp_path / "exp" / "ret_msrvtt" / "msrvtt_e2"
    dry = subprocess.run(["bash", str(SCRIPTS / "train_ret.sh"), "e2", "msrvtt", "1", "local"],
                         capture_output=True, text=True, env={**env, "SL_DRY_RUN": "1"})
    assert dry.returncode == 0 and "would create" in dry.stderr and not fresh.exists()
