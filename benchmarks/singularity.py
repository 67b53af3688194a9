"""Speed of Singularity at the paper's real configuration, random weights: eager fp32 vs the fast paths.

Model: the retrieval model of ``configs/ret_msrvtt.yaml`` -- BEiT-base/16 at 224 px (12 layers, width 768,
relative position bias) + BERT-base (12 layers, fusion from layer 9: 9 text layers, 3 layers with cross-attention
to the visual tokens), embed_dim 256, ``max_txt_l`` 32. For every path it measures

  train  training steps/s: forward (ITC + ITM with hard negatives) + backward + AdamW step (lr 1e-5, wd 0.02),
          on --batch_size 1-frame clips (the paper trains on 1 frame; its per-GPU batch is 32 videos, the CPU
         default is 2, 1 timed step after 1 warm-up, to stay under 3 minutes);
  pairs  retrieval pairs/s: ITM re-ranking of each query's top-k candidates (spec 5.6 step 4, the part of the
         evaluation that grows with k), --queries videos x --k texts, video memory of --eval_frames frames
         (the paper evaluates 4 frames, k_test 128; CPU defaults: 1 frame, k 16, 2 queries);
  peak   peak memory of the row (each row runs in a process of its own: CUDA max allocated; CPU peak RSS of
         that process, the ~1 GB of imported libraries included).

Rows: eager fp32 (the baseline: the original's attention formula, one query's top-k per ITM forward, for-each
AdamW), SDPA (this code's default), autocast (bf16 on CPU; fp16 + grad scaler on CUDA, as the original's
``fp16=True``), batched ITM re-ranking (``itm_batch_size``, several queries' top-k per forward), fused AdamW
(``optimizer.fused``; this code's default on CPU and CUDA), all of these together, and torch.compile (on CUDA by default, skip with
--no_compile; on CPU only with --compile: inductor takes minutes there). A path that cannot run prints its error in
its row.

    python benchmarks/singularity.py [--device cpu|cuda] [--batch_size N] [--k K] [--no_compile|--compile]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as `python benchmarks/singularity.py` from a clone
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from common.errors import run_cli  # noqa: E402
from common.threads import add_num_threads_flag, apply_num_threads  # noqa: E402
from singularity.models.build import build_model_for_task  # noqa: E402
from singularity.optim import create_optimizer  # noqa: E402

REAL = {"vit_name_or_pretrained_path": "microsoft/beit-base-patch16-224-pt22k-ft22k", "vit_type": "beit",
        "bert_config": "configs/config_bert.json", "image_res": 224, "embed_dim": 256, "temp": 0.07,
        "itm_hard_neg": True, "video_input": {"num_frames": 1},
        "optimizer": {"opt": "adamW", "lr": 1e-5, "weight_decay": 0.02, "opt_betas": [0.9, 0.999]}}
TEXT_LEN = 32
VOCAB = 30522


def _peak_memory(device: str) -> float:
    """Bytes: CUDA max allocated since the row started, else this process's peak RSS (Linux: ru_maxrss in KiB)."""
    if device == "cuda":
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated())
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _text(n: int, gen: torch.Generator, device: str) -> dict[str, torch.Tensor]:
    """Random token ids with [CLS] first and lengths 8..32 (padded), as captions give."""
    ids = torch.randint(1000, VOCAB, (n, TEXT_LEN), generator=gen)
    lengths = torch.randint(8, TEXT_LEN + 1, (n,), generator=gen)
    mask = (torch.arange(TEXT_LEN)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    ids[:, 0] = 101
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _autocast(device: str, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def build(path: dict, device: str):
    """The real-size retrieval model and its optimizer for ``path`` (random weights, seed 0)."""
    config = OmegaConf.create({**REAL, "attn_implementation": path["attn"], "itm_batch_size": path["rows"]})
    config.optimizer.fused = bool(path["fused"])
    torch.manual_seed(0)
    model = build_model_for_task("retrieval", config).to(device)
    if path["compile"]:
        from singularity.engine import compile_model

        compile_model(model, "inductor")
    return model, create_optimizer(model, config), config


def measure(path: dict, args: argparse.Namespace) -> dict:
    """Training steps/s, ITM re-ranking pairs/s and peak memory of one path."""
    device, amp = args.device, path["amp"]
    torch.set_flush_denormal(True)  # as the task scripts (engine.setup_runtime)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    model, optimizer, config = build(path, device)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 1, 3, 224, 224, generator=gen).to(device)
    text = _text(args.batch_size, gen, device)
    idx = torch.arange(args.batch_size, device=device)

    def step() -> None:
        optimizer.zero_grad()
        with _autocast(device, amp):
            loss = sum(model(images, text, idx).values())
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    result = {}
    if not args.skip_train:
        model.train()
        for _ in range(args.warmup):
            step()
        _sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            step()
        _sync(device)
        result["train"] = args.steps / (time.perf_counter() - start)
        result["train_cpu_s"] = (time.process_time() - cpu) / args.steps
    if not args.train_only:
        result["pairs"] = _rerank_rate(model, path, args, gen)
    result["peak"] = _peak_memory(device)
    return result


@torch.no_grad()
def _rerank_rate(model, path: dict, args: argparse.Namespace, gen: torch.Generator) -> float:
    """Pairs/s of ``singularity.evaluation.rerank`` over --queries videos x --k texts."""
    from singularity.evaluation import rerank

    device, amp = args.device, path["amp"]
    model.eval()
    n_txt = max(args.k, 2 * args.k)
    with _autocast(device, amp):
        clips = torch.randn(args.queries, args.eval_frames, 3, 224, 224, generator=gen).to(device)
        memory, _ = model.encode_image(clips)
        tok = _text(n_txt, gen, device)
        text_feats, _ = model.encode_text(tok)
    memory = memory.unsqueeze(1)  # (Q, 1, T*L, d): the ``concat`` layout of the evaluation
    sim = torch.randn(args.queries, n_txt, generator=gen).to(device)
    rows = path["rows"]

    def run() -> torch.Tensor:
        return rerank(model, sim, range(args.queries), args.k, rows, text_feats, tok["attention_mask"], memory,
                      torch.device(device), "concat", lambda: _autocast(device, amp))

    for _ in range(args.warmup):
        run()
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.rerank_repeats):
        run()
    _sync(device)
    return args.queries * args.k * args.rerank_repeats / (time.perf_counter() - start)


def paths(device: str, compile_: bool) -> list[dict]:
    """The rows of the table; the first is the baseline."""
    half = "fp16" if device == "cuda" else "bf16"
    batched = "batched"
    rows = [
        dict(name="eager fp32 (baseline)", attn="eager", amp="none", rows=0, fused=False, compile=False),
        dict(name="SDPA", attn="sdpa", amp="none", rows=0, fused=False, compile=False),
        dict(name=f"SDPA + autocast {half}", attn="sdpa", amp=half, rows=0, fused=False, compile=False),
        dict(name="SDPA + batched ITM re-rank", attn="sdpa", amp="none", rows=batched, fused=False, compile=False,
             train=False),
        dict(name="SDPA + fused AdamW", attn="sdpa", amp="none", rows=0, fused=True, compile=False, infer=False),
        dict(name=f"SDPA + {half} + batched + fused", attn="sdpa", amp=half, rows=batched, fused=True,
             compile=False),
    ]
    if compile_:
        rows.append(dict(name=f"SDPA + {half} + batched + fused + compile", attn="sdpa", amp=half, rows=batched,
                         fused=True, compile=True))
    return rows


def _fmt(value: float | None, base: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:.3g}{unit}"
    if base:
        text += f" ({value / base:.2f}x)"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Print the speed table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch_size", type=int, default=None, help="training clips per step (CPU 2, CUDA 32: "
                                                                      "ret_msrvtt.yaml's per-GPU batch)")
    parser.add_argument("--k", type=int, default=None, help="ITM candidates per query (CPU 16, CUDA 128 = k_test)")
    parser.add_argument("--queries", type=int, default=None, help="re-ranked query videos (CPU 2, CUDA 16)")
    parser.add_argument("--eval_frames", type=int, default=None, help="frames of an evaluation video (CPU 1, CUDA 4)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (CPU 1, CUDA 10)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps / re-rank runs before timing (1)")
    parser.add_argument("--rerank_repeats", type=int, default=1, help="timed re-rank runs (1)")
    parser.add_argument("--only", nargs="*", default=None, help="names of the rows to run (default: all)")
    parser.add_argument("--train_only", action="store_true", help="skip the re-ranking column")
    parser.add_argument("--skip_train", action="store_true", help="skip the training column")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--compile", dest="compile", action="store_true", default=None,
                       help="add the torch.compile row (default on CUDA only)")
    group.add_argument("--no_compile", dest="compile", action="store_false", help="skip the torch.compile row")
    add_num_threads_flag(parser)
    parser.add_argument("--row", type=int, default=None, help=argparse.SUPPRESS)  # internal: one row per process
    args = parser.parse_args(argv)
    parser_row = args.row
    threads = args.num_threads_used = apply_num_threads(args.num_threads)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    defaults = {"batch_size": 32 if cuda else 2, "k": 128 if cuda else 16, "queries": 16 if cuda else 2,
                "eval_frames": 4 if cuda else 1, "steps": 10 if cuda else 1}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    compile_ = cuda if args.compile is None else args.compile
    if parser_row is not None:
        return _row_main(parser_row, args, compile_)
    device_name = torch.cuda.get_device_name() if cuda else f"CPU, {threads} thread(s)"
    print(f"Singularity retrieval model, BEiT-base/16 224px + BERT-base (fusion from layer 9), random weights; "
          f"device {device_name}; torch {torch.__version__}")
    print(f"train: batch {args.batch_size} 1-frame clips x {TEXT_LEN} tokens, ITC + ITM + AdamW, {args.steps} timed "
          f"steps after {args.warmup}; re-rank: {args.queries} videos x top-{args.k} texts, {args.eval_frames} "
          f"frame(s) per video")
    header = (f"| {'path':44s} | {'train steps/s':>16s} | {'CPU s/step':>10s} | {'retrieval pairs/s':>18s} | "
              f"{'peak memory':>11s} |")
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.strip("|").split("|")) + "|", flush=True)
    base = None
    for index, path in enumerate(paths(args.device, compile_)):
        if args.only and path["name"] not in args.only:
            continue
        res = _run_row(index, argv, args)
        if "error" in res:
            print(f"| {path['name']:44s} | error: {res['error'][:120]}", flush=True)
            continue
        if base is None:
            base = res
        cpu = f"{res['train_cpu_s']:.1f}" if "train_cpu_s" in res else "-"
        print(f"| {path['name']:44s} | {_fmt(res.get('train'), base.get('train')):>16s} | {cpu:>10s} | "
              f"{_fmt(res.get('pairs'), base.get('pairs')):>18s} | {res['peak'] / 2 ** 20:>7.0f} MiB |", flush=True)
    return 0


def _run_row(index: int, argv: Sequence[str] | None, args: argparse.Namespace) -> dict:
    """Run row ``index`` in a fresh process (its own peak memory); its result dict, or ``{"error": ...}``."""
    import json
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv),
           "--num_threads", str(args.num_threads_used), "--row", str(index)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"error": tail}
    return json.loads(lines[-1])


def _row_main(index: int, args: argparse.Namespace, compile_: bool) -> int:
    """Child process: measure one row, print its result as one JSON line (errors as ``{"error": ...}``)."""
    import json

    path = paths(args.device, compile_)[index]
    if path["rows"] == "batched":
        path["rows"] = args.queries * args.k
    args.skip_train = args.skip_train or not path.get("train", True)
    args.train_only = args.train_only or not path.get("infer", True)
    try:
        res = measure(path, args)
    except Exception as err:  # a path this machine cannot run: its error in its row, the table goes on
        res = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
