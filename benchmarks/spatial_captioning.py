"""Speed of spatial captioning at the paper's real configuration, random weights: eager fp32 vs the fast paths.

Model: the README spatial_pe transformer (d_model 512, 6+6 layers, d_ff 2048, 8 heads, 2048-d region features,
~50 regions, 12x12 grid vectors, X-Linear cross-attention, COCO vocabulary 9487, 16 words) and the Object Relation
Transformer at the same sizes (box-geometry attention). For every path it measures

  train  XE training steps/s: forward + label loss + backward + element-wise clip + Adam step, at --batch_size
         images x 5 captions (the README's batch is 15 images; the CPU default is smaller to stay under 3 minutes);
  decode captions/s of beam search at the paper's beam size (2, eval.py's default) on --batch_size images
         (no KV cache, as the original: every step re-runs the decoder on the prefix);
  peak   peak memory over the row (CUDA: max allocated; CPU: peak RSS above the row's start, sampled).

Rows: eager fp32 (the baseline: the original's formulas), SDPA, autocast (bf16 on CPU, fp16 + grad scaler on CUDA),
SDPA + autocast, fused Adam, torch.compile (CUDA by default, skip with --no_compile; on CPU only with --compile,
inductor takes minutes there), and ORT eager vs SDPA. A path that cannot run prints its error in its row.

    python benchmarks/spatial_captioning.py [--device cpu|cuda] [--batch_size N] [--steps N] [--no_compile|--compile]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as `python benchmarks/spatial_captioning.py` from a clone
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from common.errors import run_cli  # noqa: E402
from common.threads import add_num_threads_flag, apply_num_threads  # noqa: E402
from benchmarks.speed_tools import PeakMemory  # noqa: E402
from benchmarks.speed_tools import sync as _sync  # noqa: E402
from spatial_captioning import losses, models  # noqa: E402
from spatial_captioning.optim import clip_gradient  # noqa: E402

REAL = dict(vocab_size=9487, seq_length=16, input_encoding_size=512, img_feat_size=2048, num_layers=6, ff_size=2048,
            heads=8, dropout=0.1, num_grids=144, enc_pos_embedding=True, enc_pos_type="gxg", cross_attn="xlinear",
            norm="layer", ff_activation="RELU", unk_index=None)
REGIONS = 50
SEQ_PER_IMG = 5
BEAM = 2


def _inputs(caption_model: str, images: int, rows: int, device: str, gen: torch.Generator) -> tuple:
    feats = torch.randn(images, REGIONS, REAL["img_feat_size"], generator=gen)
    masks = torch.ones(images, REGIONS)
    masks[: images // 2, REGIONS - 10:] = 0  # padded images, as bottom-up's 10-100 regions give
    if caption_model == "spatial_pe":
        boxes = torch.rand(images, REGIONS, REAL["num_grids"], generator=gen)
    else:  # relative [x1, y1, x2, y2] boxes
        xy = torch.rand(images, REGIONS, 2, generator=gen) * 0.6
        boxes = torch.cat([xy, xy + 0.1 + 0.3 * torch.rand(images, REGIONS, 2, generator=gen)], -1)
    rep = rows // images
    labels = torch.randint(1, REAL["vocab_size"] + 1, (rows, REAL["seq_length"] + 2), generator=gen)
    labels[:, 0] = 0
    labels[:, -3:] = 0
    label_masks = (labels > 0).float()
    label_masks[:, :2] = 1
    big = tuple(x.repeat_interleave(rep, 0).to(device) for x in (feats, masks, boxes))
    small = tuple(x.to(device) for x in (feats, masks, boxes))
    return big, small, labels.to(device), label_masks.to(device)


def measure(path: dict, args: argparse.Namespace) -> dict:
    """Train steps/s, decoded captions/s and peak memory of one path."""
    try:
        from spatial_captioning.speed import apply_speed_options, autocast, grad_scaler
    except ImportError:  # the code before the fast paths (before/after timings): only the baseline row runs
        if path["attn"] != "eager" or path["amp"] != "none" or path["compile"]:
            raise
        import contextlib

        def apply_speed_options(model, opt):
            return model

        def autocast(device, amp):
            return contextlib.nullcontext()

        def grad_scaler(device, amp):
            return None

    device = args.device
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    opt = SimpleNamespace(**REAL, caption_model=path["model"], use_grid=path["model"] == "spatial_pe")
    model = models.setup(opt).to(device)
    apply_speed_options(model, SimpleNamespace(attn_impl=path["attn"], compile=path["compile"]))
    amp = path["amp"]
    scaler = grad_scaler(device, amp)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9,
                                 fused=path["fused"] or None)
    crit = losses.xe_criterion(path["model"], REAL["vocab_size"], 0.0)
    rows = args.batch_size * SEQ_PER_IMG
    (feats, masks, boxes), small, labels, label_masks = _inputs(path["model"], args.batch_size, rows, device, gen)

    def step() -> None:
        optimizer.zero_grad()
        with autocast(device, amp):
            loss = crit(model(feats, labels, masks, boxes), labels[:, 1:], label_masks[:, 1:])
        if scaler is None:
            loss.backward()
            clip_gradient(optimizer, 0.1)
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            clip_gradient(optimizer, 0.1)
            scaler.step(optimizer)
            scaler.update()

    def decode() -> None:
        with torch.no_grad(), autocast(device, amp):
            model(*small, opt={"beam_size": BEAM}, mode="sample")

    model.train()
    for _ in range(args.warmup):
        step()
    _sync(device)
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        train_s = (time.perf_counter() - start) / args.steps
        model.eval()
        for _ in range(args.warmup if path["compile"] else 0):  # eager paths need no decoding warm-up
            decode()
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.decode_batches):
            decode()
        _sync(device)
        decode_s = (time.perf_counter() - start) / args.decode_batches
    return {"train": 1.0 / train_s, "decode": args.batch_size / decode_s, "peak": mem.peak}


def paths(device: str, compile_: bool) -> list[dict]:
    """The rows of the table; the first is the baseline."""
    half = "fp16" if device == "cuda" else "bf16"
    rows = [
        dict(name="eager fp32 (baseline)", model="spatial_pe", attn="eager", amp="none", compile=False, fused=False),
        dict(name="SDPA", model="spatial_pe", attn="sdpa", amp="none", compile=False, fused=False),
        dict(name=f"autocast {half}", model="spatial_pe", attn="eager", amp=half, compile=False, fused=False),
        dict(name=f"SDPA + autocast {half}", model="spatial_pe", attn="sdpa", amp=half, compile=False, fused=False),
        dict(name="fused Adam", model="spatial_pe", attn="eager", amp="none", compile=False, fused=True),
    ]
    if device == "cuda":
        rows.append(dict(name=f"SDPA + {half} + fused Adam", model="spatial_pe", attn="sdpa", amp=half,
                         compile=False, fused=True))
    if compile_:
        rows.append(dict(name="torch.compile (+SDPA)", model="spatial_pe", attn="sdpa", amp="none", compile=True,
                         fused=False))
    rows += [dict(name="ORT eager fp32", model="relation_transformer", attn="eager", amp="none", compile=False,
                  fused=False),
             dict(name="ORT SDPA", model="relation_transformer", attn="sdpa", amp="none", compile=False, fused=False),
             dict(name=f"ORT SDPA + autocast {half}", model="relation_transformer", attn="sdpa", amp=half,
                  compile=False, fused=False)]
    return rows


def _fmt_mem(value: float) -> str:
    return "n/a" if value != value else f"{value / 2 ** 20:,.0f} MiB"


def main(argv: Sequence[str] | None = None) -> int:
    """Run every path and print one table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch_size", type=int, default=None,
                   help="images per step (x5 captions); default 15 on CUDA (the README's), 1 on CPU (time limit)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per row (default 2 CPU, 20 CUDA)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (compilation happens here)")
    p.add_argument("--decode_batches", type=int, default=None, help="timed beam-search batches (default 1 CPU, 5 CUDA)")
    p.add_argument("--no_compile", action="store_true", help="skip the torch.compile row (CUDA)")
    p.add_argument("--compile", action="store_true",
                   help="add the torch.compile row on CPU (inductor compiles the 6+6-layer model for minutes there)")
    p.add_argument("--only", default="", help="comma-separated row names to run (default: all)")
    add_num_threads_flag(p)
    args = p.parse_args(argv)
    threads = apply_num_threads(args.num_threads)
    cuda = args.device == "cuda"
    args.batch_size = args.batch_size or (15 if cuda else 1)
    args.steps = args.steps or (20 if cuda else 2)
    args.decode_batches = args.decode_batches or (5 if cuda else 1)
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({threads} threads)"
    print(f"spatial captioning, real configuration (d_model 512, 6+6 layers, d_ff 2048, {REGIONS} regions, "
          f"vocab {REAL['vocab_size']}), random weights")
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch_size} images x {SEQ_PER_IMG} captions "
          f"(train), {args.batch_size} images at beam {BEAM} (decode); {args.steps} timed steps after {args.warmup} "
          "warm-up")
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    results: list[tuple[str, dict | str]] = []
    for path in paths(args.device, (cuda and not args.no_compile) or args.compile):
        if wanted and path["name"] not in wanted:
            continue
        try:
            results.append((path["name"], measure(path, args)))
        except Exception as err:  # a path that is unavailable here prints its error in its row
            results.append((path["name"], f"{type(err).__name__}: {str(err).splitlines()[0][:90]}"))
        print(f"  measured {path['name']}", file=sys.stderr, flush=True)
    base = {"spatial_pe": None, "relation_transformer": None}
    header = f"| {'path':<28} | {'train steps/s':>13} | {'x':>5} | {'decode captions/s':>17} | {'x':>5} | {'peak memory':>11} |"
    print(header)
    print("|" + "|".join("-" * (len(c) + 0) for c in header.split("|")[1:-1]) + "|")
    for row_name, res in results:
        model = "relation_transformer" if row_name.startswith("ORT") else "spatial_pe"
        if isinstance(res, str):
            print(f"| {row_name:<28} | {res}")
            continue
        if base[model] is None:
            base[model] = res
        b = base[model]
        print(f"| {row_name:<28} | {res['train']:>13.3f} | {res['train'] / b['train']:>5.2f} | "
              f"{res['decode']:>17.2f} | {res['decode'] / b['decode']:>5.2f} | {_fmt_mem(res['peak']):>11} |")
    print("x = ratio to the eager fp32 row of the same model (ORT rows: to ORT eager fp32).")
    return 0


if __name__ == "__main__":
    run_cli(main)
