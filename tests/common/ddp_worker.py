"""Run under torchrun by test_distributed: checks gather/reduce, sharding and DDP parameter sync."""
from __future__ import annotations

import json
import os
import sys

import torch

from common import distributed as D


def main(out_prefix: str) -> None:
    info = D.init_distributed(device="cpu")
    assert info.distributed and info.backend == "gloo", info
    D.seed_everything(1234, rank_aware=False)
    model = torch.nn.Linear(6, 1)
    ddp = D.wrap_model(model, info)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    seed = D.seed_everything(7)  # rank-aware: each rank draws different data
    for _ in range(5):
        x = torch.randn(4, 6)
        loss = (ddp(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    sampler = D.make_sampler(list(range(10)), shuffle=True, seed=3)
    sampler.set_epoch(1)
    result = {
        "rank": D.get_rank(), "world": D.get_world_size(), "seed": seed,
        "gathered": D.all_gather_object({"rank": info.rank, "sq": info.rank ** 2}),
        "mean_float": D.all_reduce_mean(float(info.rank + 1)),
        "mean_tensor": D.all_reduce_mean(torch.tensor([info.rank * 2.0, 4.0])).tolist(),
        "params": [p.detach().flatten().tolist() for p in model.parameters()],
        "shard": list(iter(sampler)),
    }
    D.barrier()
    with open(f"{out_prefix}.{info.rank}.json", "w") as handle:
        json.dump(result, handle)
    D.cleanup()
    # Seen once on a loaded 2-core machine: gloo's background threads aborted during interpreter teardown
    # ("terminate called without an active exception", exit -6) after everything above had finished. The
    # results are written and checked by the test; leave without running C++ static destructors.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
