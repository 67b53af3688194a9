"""Set abstraction speed at the paper's size: SAM 1-2-3-4 on 2048-d features, 391 nodes (Moments), random weights.

``python benchmarks/set_abstraction.py`` prints ONE table: the fp32-eager baseline of this code against each
fast path it has (fused optimizer, bf16 autocast (fp16 on CUDA), torch.compile), with ratios to the
baseline. Training step = forward + MSE/CE losses + backward + gradient clipping + optimizer step, as
``experiment.AbstractionEmbedding.step``; inference = the forward of evaluation (sets/s). On CPU the
batch is 64 sets of 4 (stated in the table; the paper's is 256, used on CUDA). Peak memory: CUDA's
max_memory_allocated, on CPU the process's peak RSS (monotonic, so it only grows down the table).
Channels-last does not apply (no convolutions in the SAM); there is no attention (SDPA n/a).
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.threads import add_num_threads_flag, apply_num_threads  # noqa: E402
from set_abstraction.model import build_model  # noqa: E402

SET_SIZE = 4
SUBSETS = 2**SET_SIZE - 1


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_optimizer(params, fused: bool) -> torch.optim.Optimizer:
    """The paper's Adam(lr 1e-4, weight decay 5e-4 as L2)."""
    return torch.optim.Adam(params, lr=1e-4, weight_decay=5e-4, **({"fused": True} if fused else {}))


def run_path(name: str, device: torch.device, batch: int, steps: int, amp: str | None, compile_model: bool,
             fused: bool, config: str) -> dict:
    torch.manual_seed(0)
    model = build_model(config).to(device)
    forward = torch.compile(model) if compile_model else model
    optimizer = make_optimizer(model.parameters(), fused)
    x = torch.rand(batch, SET_SIZE, model.in_features, device=device)
    embed_t = torch.randn(batch, SUBSETS, model.embedding_dim, device=device)
    labels = torch.randint(0, model.num_nodes, (batch, SUBSETS), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def train_step():
        with autocast():
            embed, logits = forward(x)
        loss = F.mse_loss(embed.float(), embed_t) + F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 20)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    @torch.no_grad()
    def infer_step():
        with autocast():
            forward(x)

    def timed(fn, n):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / n

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    compile_start = time.perf_counter()
    train_step(), train_step()  # warm-up (and compilation)
    model.eval()
    infer_step(), infer_step()
    warmup = time.perf_counter() - compile_start
    model.train()
    train = timed(train_step, steps)
    model.eval()
    infer = timed(infer_step, steps * 2)
    return {"path": name, "train_steps_s": 1 / train, "infer_sets_s": batch / infer, "peak_mb": peak_memory_mb(device),
            "warmup_s": warmup}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/set_abstraction.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch_size", type=int, default=None, help="sets per step (default: 64 on CPU, 256 on CUDA)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per path (default: 3 on CPU, 50 on CUDA)")
    p.add_argument("--config", default="moments", help="model sizes (moments: the paper's; tiny for a smoke run)")
    p.add_argument("--skip_compile", action="store_true", help="leave out the torch.compile rows (slow on CPU)")
    p.add_argument("--only", nargs="*", default=None, help="run only these paths (names as in the table)")
    add_num_threads_flag(p)
    args = p.parse_args(argv)
    threads = apply_num_threads(args.num_threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch_size or (256 if cuda else 64)
    steps = args.steps or (50 if cuda else 3)
    low = "fp16" if cuda else "bf16"
    paths = [  # name, amp, compile, fused
        ("fp32 eager (baseline)", None, False, False),
        ("fused Adam", None, False, True),
        (f"{low} autocast", low, False, False),
        (f"{low} autocast + fused Adam", low, False, True),
        ("torch.compile", None, True, False),
        (f"torch.compile + {low} + fused Adam", low, True, True),
    ]
    if args.skip_compile:
        paths = [q for q in paths if not q[2]]
    if args.only:
        paths = [q for q in paths if q[0] in args.only]
    rows = []
    for name, amp, comp, fused in paths:
        try:
            rows.append(run_path(name, device, batch, steps, amp, comp, fused, args.config))
        except Exception as err:  # a path unavailable here: say why in its row, keep the table
            rows.append({"path": name, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:70]}"})
    base = rows[0] if "error" not in rows[0] and rows[0]["path"].startswith("fp32 eager") else None
    name_dev = torch.cuda.get_device_name(device) if cuda else cpu_name()
    sizes = build_model(args.config)
    print(f"set_abstraction SAM ({args.config}: {sizes.in_features}-d, {sizes.num_nodes} nodes, scales "
          f"{'-'.join(map(str, sizes.scales))}, sets of {SET_SIZE}), batch {batch} sets, "
          f"{steps} timed steps; device {device.type} ({name_dev}), {threads} CPU thread(s); torch {torch.__version__}")
    header = f"{'path':<36} {'train steps/s':>13} {'x':>6} {'infer sets/s':>13} {'x':>6} {'peak MB':>9} {'warm-up s':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['path']:<36} unavailable: {r['error']}")
            continue
        tx = r["train_steps_s"] / base["train_steps_s"] if base else float("nan")
        ix = r["infer_sets_s"] / base["infer_sets_s"] if base else float("nan")
        print(f"{r['path']:<36} {r['train_steps_s']:>13.3f} {tx:>6.2f} {r['infer_sets_s']:>13.1f} {ix:>6.2f} "
              f"{r['peak_mb']:>9.0f} {r['warmup_s']:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
