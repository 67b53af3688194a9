"""Speed of VisualCOMET at the paper's configuration: GPT-2 small (12 x 768, vocabulary 50317) + 2048-d RoI features.

``python benchmarks/visualcomet.py`` prints ONE table with random weights: the fp32 baseline of this code (eager
attention, transformers 2.4.1's AdamW updated parameter by parameter) against each fast path it has:

  training (forward + backward + clip + optimizer, max_seq_len 128, 4 boxes per example):
    SDPA attention (the default), the multi-tensor 2.4.1 AdamW (the default), torch's fused AdamW (``--adamw torch``;
    fused kernels on CUDA), bf16 autocast (``--bf16``; CPU and CUDA), fp16 autocast + GradScaler (``--fp16``, CUDA),
    torch.compile (``--compile``);
  decoding (prompt of 79 tokens, 20 new tokens): nucleus sampling top-p 0.9 x 5 samples (the paper's setting) without
    a KV cache (how the original decoded) and with it, in fp32 eager / SDPA / autocast; beam search with 5 beams
    (``--do_sample 0``), the per-prompt reference against the batched search.

Each row: steps/s (or captions/s = sequences returned per second) and its ratio to the baseline row of its kind,
and the peak memory (CUDA: max allocated; CPU: peak resident-set growth over the row's start). Batch sizes: the
paper's 64 per GPU on CUDA; on CPU 1 (the largest that keeps the whole table under 3 minutes on 2 cores), stated
in the header. torch.compile runs by default on CUDA only (``--compile on`` adds it on CPU, where inductor needs
minutes to compile GPT-2); a path that fails prints its error in its row.

    python benchmarks/visualcomet.py [--device cpu|cuda] [--batch_size N] [--steps N] [--compile auto|on|off]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as `python benchmarks/visualcomet.py` from a clone
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

PROMPT_LEN = 17 + 39 + 22 + 1  # image slot + event + place + relation token (generation layout)
SEQ_LEN = 128
NEW_TOKENS = 20
NUM_SAMPLES = 5
NUM_BEAMS = 5


class PeakMemory:
    """Peak memory of a block: CUDA max allocated, or the growth of the CPU resident set sampled every 5 ms."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb = device, 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return self
        self._start, self._peak, self._stop = self._rss(), 0, threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.005):
                self._peak = max(self._peak, self._rss())
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2 ** 20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(0, max(self._peak, self._rss()) - self._start) / 2 ** 20


def build_model(device: torch.device, attn: str) -> torch.nn.Module:
    from visualcomet.model import VisualCometLMHead, make_config

    torch.manual_seed(0)
    model = VisualCometLMHead(make_config())  # the released model's sizes
    model.set_attn_implementation(attn)
    return model.to(device)


def random_batch(batch: int, length: int, device: torch.device, labelled: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(batch, 15, dtype=torch.long)
    mask[:, :4] = 1
    out = {"input_ids": torch.randint(0, 50257, (batch, length), generator=g),
           "img_feats": torch.randn(batch, 15, 2048, generator=g), "boxes_mask": mask,
           "person_ids": torch.randint(50257, 50317, (batch, 15), generator=g),
           "subject_ids": torch.zeros(batch, 15, dtype=torch.long)}
    if labelled:
        labels = out["input_ids"].clone()
        labels[:, :PROMPT_LEN] = -100
        out["labels"] = labels
    return {k: v.to(device) for k, v in out.items()}


def amp(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def optimizer(kind: str, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    from visualcomet.optim import OriginalAdamW

    params = [p for p in model.parameters() if p.requires_grad]
    if kind == "torch_fused":
        return torch.optim.AdamW(params, lr=5e-5, eps=1e-8, fused=True)
    try:
        return OriginalAdamW(params, lr=5e-5, eps=1e-8, foreach=kind == "foreach")
    except TypeError:  # the code before issue 15 had only the loop
        if kind == "foreach":
            raise
        return OriginalAdamW(params, lr=5e-5, eps=1e-8)


def timed(fn: Callable[[], object], device: torch.device, warmup: int, steps: int) -> float:
    """Median seconds of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def train_row(device: torch.device, batch: int, warmup: int, steps: int, attn: str, opt_kind: str,
              dtype: torch.dtype | None, compile_model: bool) -> tuple[float, float]:
    model = build_model(device, attn).train()
    opt = optimizer(opt_kind, model, device)
    scaler = torch.amp.GradScaler("cuda") if dtype is torch.float16 else None
    forward = torch.compile(model) if compile_model else model
    data = random_batch(batch, SEQ_LEN, device)

    def step() -> None:
        with amp(device, dtype):
            loss = forward(**data)["loss"]
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    with PeakMemory(device) as mem:
        seconds = timed(step, device, warmup, steps)
    return 1.0 / seconds, mem.peak_mb


def sample_row(device: torch.device, prompts: int, warmup: int, steps: int, attn: str, dtype: torch.dtype | None,
               use_cache: bool) -> tuple[float, float]:
    from visualcomet.generation import sample_sequence

    model = build_model(device, attn).eval()
    data = random_batch(prompts, PROMPT_LEN, device, labelled=False)
    visual = {k: v for k, v in data.items() if k != "input_ids"}

    def run() -> None:
        with amp(device, dtype):
            sample_sequence(model, data["input_ids"], visual, NEW_TOKENS, NUM_SAMPLES, top_p=0.9, use_cache=use_cache)

    with PeakMemory(device) as mem:
        seconds = timed(run, device, warmup, steps)
    return prompts * NUM_SAMPLES / seconds, mem.peak_mb


def beam_row(device: torch.device, prompts: int, warmup: int, steps: int, batched: bool,
             dtype: torch.dtype | None) -> tuple[float, float]:
    from visualcomet import generation

    model = build_model(device, "sdpa").eval()
    data = random_batch(prompts, PROMPT_LEN, device, labelled=False)
    visual = {k: v for k, v in data.items() if k != "input_ids"}

    def run() -> None:
        with amp(device, dtype), torch.no_grad():
            if batched:
                generation.beam_search_batch(model, data["input_ids"], visual, NUM_BEAMS, NEW_TOKENS, 50258)
            else:
                for i in range(prompts):
                    generation.beam_search_original(model, data["input_ids"][i],
                                                    {k: v[i:i + 1] for k, v in visual.items()}, NUM_BEAMS,
                                                    NEW_TOKENS, 50258)

    with PeakMemory(device) as mem:
        seconds = timed(run, device, warmup, steps)
    return prompts * NUM_BEAMS / seconds, mem.peak_mb


def main(argv: Sequence[str] | None = None) -> int:
    from common.threads import add_num_threads_flag, apply_num_threads

    p = argparse.ArgumentParser(prog="python benchmarks/visualcomet.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch_size", type=int, default=None, help="training batch (default: 64 on CUDA, 1 on CPU)")
    p.add_argument("--prompts", type=int, default=None, help="decoding prompts per call (default: 64 CUDA, 2 CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed calls per row (default: 10 CUDA, 2 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default: 3 CUDA, 1 CPU)")
    p.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                   help="torch.compile rows: auto = on CUDA only (inductor needs minutes on a small CPU)")
    p.add_argument("--only", nargs="*", default=None, help="run only the rows whose name contains one of these")
    add_num_threads_flag(p)
    args = p.parse_args(argv)
    threads = apply_num_threads(args.num_threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch_size or (64 if cuda else 1)
    prompts = args.prompts or (64 if cuda else 2)
    steps = args.steps or (10 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    compile_rows = args.compile == "on" or (args.compile == "auto" and cuda)
    half = torch.float16 if cuda else torch.bfloat16
    half_name = "fp16" if cuda else "bf16"

    train_rows = [
        ("train fp32 eager, 2.4.1 AdamW loop" + ("" if cuda else " (CPU default)"),
         dict(attn="eager", opt_kind="loop", dtype=None, compile_model=False)),
        ("train SDPA", dict(attn="sdpa", opt_kind="loop", dtype=None, compile_model=False)),
        ("train SDPA + foreach 2.4.1 AdamW" + (" (CUDA default)" if cuda else ""),
         dict(attn="sdpa", opt_kind="foreach", dtype=None, compile_model=False)),
        ("train SDPA + torch fused AdamW", dict(attn="sdpa", opt_kind="torch_fused", dtype=None, compile_model=False)),
        (f"train SDPA + foreach + {half_name} autocast",
         dict(attn="sdpa", opt_kind="foreach", dtype=half, compile_model=False)),
    ]
    if cuda:
        train_rows.append(("train SDPA + foreach + bf16 autocast",
                           dict(attn="sdpa", opt_kind="foreach", dtype=torch.bfloat16, compile_model=False)))
    train_rows.append(("train SDPA + foreach + torch.compile",
                       dict(attn="sdpa", opt_kind="foreach", dtype=None, compile_model=True)))
    decode_rows = [
        ("sample fp32 eager + KV cache", lambda: sample_row(device, prompts, warmup, steps, "eager", None, True)),
        ("sample fp32 eager, no cache (original)",
         lambda: sample_row(device, prompts, warmup, steps, "eager", None, False)),
        ("sample SDPA + KV cache (default)", lambda: sample_row(device, prompts, warmup, steps, "sdpa", None, True)),
        (f"sample SDPA + KV cache + {half_name}",
         lambda: sample_row(device, prompts, warmup, steps, "sdpa", half, True)),
        ("beam5 per-prompt reference", lambda: beam_row(device, prompts, warmup, steps, False, None)),
        ("beam5 batched (default)", lambda: beam_row(device, prompts, warmup, steps, True, None)),
        (f"beam5 batched + {half_name}", lambda: beam_row(device, prompts, warmup, steps, True, half)),
    ]
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {threads} threads"
    print(f"VisualCOMET, GPT-2 small + 2048-d features, random weights | device: {name} | torch {torch.__version__}")
    print(f"training: batch {batch} x {SEQ_LEN} tokens{' (paper: 64 per GPU)' if not cuda else ' (paper per-GPU)'}; "
          f"decoding: {prompts} prompts x {PROMPT_LEN} tokens, {NEW_TOKENS} new tokens, top-p 0.9 x {NUM_SAMPLES} "
          f"samples / {NUM_BEAMS} beams; median of {steps} after {warmup} warm-up")
    header = f"{'path':<44} {'steps/s | captions/s':>20} {'x base':>7} {'peak MB':>9}"
    print(header)
    print("-" * len(header))
    base: dict[str, float] = {}
    wanted = (lambda n: any(o in n for o in args.only)) if args.only else (lambda n: True)
    rows: list[tuple[str, Callable[[], tuple[float, float]]]] = [
        (n, (lambda kw=kw: train_row(device, batch, warmup, steps, **kw))) for n, kw in train_rows] + decode_rows
    for row, run in rows:
        if not wanted(row):
            continue
        kind = row.split()[0]
        if "torch.compile" in row and not compile_rows:
            print(f"{row:<44} skipped on CPU (pass --compile on)")
            continue
        try:
            rate, peak = run()
        except Exception as err:  # an unavailable path prints its reason and the table goes on
            print(f"{row:<44} unavailable: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
            continue
        base.setdefault(kind, rate)  # the first row of each kind is its baseline
        print(f"{row:<44} {rate:>20.3f} {rate / base[kind]:>7.2f} {peak:>9.0f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(main, sys.argv[1:])
