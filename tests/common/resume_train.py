"""A tiny training loop used by test_checkpoint: trains, checkpoints every K steps, can kill itself."""
from __future__ import annotations

import argparse
import os
import signal

import torch
from safetensors.torch import save_file

from common.checkpoint import CheckpointManager
from common.distributed import seed_everything


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt_dir", required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--save_every", type=int, default=3)
    parser.add_argument("--kill_after", type=int, default=-1, help="SIGKILL itself after this step")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    seed_everything(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                torch.nn.Linear(16, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    manager = CheckpointManager(args.ckpt_dir, keep_last=2)
    start = 0
    if manager.latest() is not None:
        start = manager.load(model=model, optimizer=optimizer, scheduler=scheduler).step
    for step in range(start + 1, args.steps + 1):
        x = torch.randn(32, 8)  # data drawn from the global RNG: resume must restore it
        y = x.sum(dim=1, keepdim=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % args.save_every == 0:
            manager.save(model=model, optimizer=optimizer, scheduler=scheduler, step=step,
                         metrics={"loss": loss.item()})
        if step == args.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)


if __name__ == "__main__":
    main()
