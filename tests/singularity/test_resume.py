"""Kill-and-resume: resuming from an epoch checkpoint ends bit-identical to the uninterrupted run."""
import torch


def test_resume_is_bit_identical(syn_dir, tiny_config, tmp_path):
    from singularity.tasks.pretrain import run_pretrain

    full = tmp_path / "full"
    run_pretrain(tiny_config(syn_dir, "pretrain_syn", f"output_dir={full}", "scheduler.epochs=2"))
    resumed = tmp_path / "resumed"
    # the run "killed" after epoch 0 restarts from its ckpt_00.pth
    run_pretrain(tiny_config(syn_dir, "pretrain_syn", f"output_dir={resumed}", "scheduler.epochs=2", "resume=True",
                             f"pretrained_path={full / 'ckpt_00.pth'}"))
    a = torch.load(full / "ckpt_01.pth", weights_only=True)
    b = torch.load(resumed / "ckpt_01.pth", weights_only=True)
    assert a["global_step"] == b["global_step"] == 32
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
