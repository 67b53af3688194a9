"""Speed of CLIP4IDC at the paper's real configuration, random weights: eager fp32 vs the fast paths.

Model: CLIP ViT-B/32 (224 px, 12 vision blocks of width 768, 9 of them per image before the pair is joined),
the 12-layer CLIP text tower and the UniVL decoder-base (3 + 3 BERT layers of width 512, vocabulary 49408),
max_words 32 and --freeze_layer_num 0, as the original's CLEVR scripts. For every path it measures

  caption train    stage-2 steps/s: CLEVR change + distractor pairs (one stacked pass), caption CE, backward,
                   clip_grad_norm_, BertAdam (the original's optimizer), at --batch_size pairs per step
                   (the original's caption_clevr.sh: 16 per GPU; the CPU default is smaller, see the header);
  retrieval train  stage-1 steps/s: symmetric InfoNCE of pairs and captions, same optimizer, --retrieval_batch
                   pairs (64 per GPU in retrieve_clevr.sh);
  retrieval        pairs/s of evaluation: pair encoder + text encoder, no grad;
  greedy / beam 3  captions/s of decoding 32 words (greedy is the original's decoding; random weights never
                   emit EOT early, so every caption runs all 32 steps);
  peak             peak memory of the row above the two models' weights (CUDA: max allocated; CPU: sampled peak
                   RSS above the row's start).

Rows: "eager fp32" is the baseline (the original's arithmetic: eager softmax attention, BertAdam's per-tensor
loop, decoding that re-runs the decoder over the whole prefix at every step); then SDPA; SDPA + multi-tensor
BertAdam + KV-cached decoding (this code's default); autocast (bf16 on CPU, fp16 + grad scaler on CUDA); and
torch.compile (on CUDA by default; on CPU only with --compile, where inductor takes minutes to compile).
A path that cannot run prints its error in its row.

    python benchmarks/clip4idc.py [--device cpu|cuda] [--batch_size N] [--steps N] [--no_compile | --compile]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# This file is named like the package: drop its own folder from the path so `clip4idc` is the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(REPO) not in sys.path:  # runnable as `python benchmarks/clip4idc.py` from a clone
    sys.path.append(str(REPO))

import torch  # noqa: E402

from common.errors import run_cli  # noqa: E402
from common.threads import add_num_threads_flag, apply_num_threads  # noqa: E402
from benchmarks.speed_tools import PeakMemory  # noqa: E402
from benchmarks.speed_tools import sync as _sync  # noqa: E402

MAX_WORDS = 32
BEAM = 3
AS_IS = "code defaults"


def _captions(batch: int, gen: torch.Generator, device: str) -> tuple[torch.Tensor, ...]:
    """Decoder inputs/masks/targets of random captions of 8..30 words, laid out as the loaders do."""
    from clip4idc.tokenizer import EOT_ID, SOT_ID

    words = torch.randint(1, 49000, (batch, MAX_WORDS - 1), generator=gen)
    lengths = torch.randint(8, MAX_WORDS - 1, (batch,), generator=gen)
    pos = torch.arange(MAX_WORDS)[None]
    in_ids = torch.cat([torch.full((batch, 1), SOT_ID), words], 1) * (pos <= lengths[:, None])
    out_ids = torch.cat([words, torch.zeros(batch, 1, dtype=torch.long)], 1) * (pos < lengths[:, None])
    out_ids[torch.arange(batch), lengths] = EOT_ID
    dec_mask = (pos <= lengths[:, None]).long()
    text = in_ids.clone()
    text[torch.arange(batch), lengths] = EOT_ID
    return tuple(t.to(device) for t in (in_ids, dec_mask, out_ids, text))


_MODELS: dict[str, torch.nn.Module] = {}


def build(stage: str, path: dict, device: str) -> torch.nn.Module:
    """The real-size model of `stage` (built once, shared by the rows: the timings do not depend on the weights),
    frozen as --freeze_layer_num 0, set to the path's attention (and compiled in place for the compile rows,
    which come last)."""
    from clip4idc.models import build_model, load_clip_config, load_decoder_config
    from clip4idc.optim import freeze_layers

    if stage not in _MODELS:
        torch.manual_seed(0)
        decoder = load_decoder_config("decoder-base") if stage == "caption" else None
        _MODELS[stage] = build_model(load_clip_config("ViT-B/32", intra_layers=9), decoder, stage)
        freeze_layers(_MODELS[stage], 0, stage, "clevr")
        _MODELS[stage].to(device)
    model = _MODELS[stage]
    if path["attn"] != "sdpa" or path["compile"] or getattr(model, "_bench_attn", "sdpa") != "sdpa":  # the code before issue 15 had SDPA only and no switch
        from clip4idc.speed import compile_model, set_attn_implementation

        set_attn_implementation(model, path["attn"])
        model._bench_attn = path["attn"]
        if path["compile"] and not getattr(model, "_bench_compiled", False):
            model._bench_compiled = True
            compile_model(model)
    return model


def _optimizer(model, stage: str, foreach: bool | None):
    from clip4idc.optim import build_optimizer

    extra = {} if foreach is None else {"foreach": foreach}
    return build_optimizer(model, stage, 1e-4, 1e-3, 1000, 0.1, **extra)


def _autocast(device: str, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def _timed(fn, repeats: int, warmup: int, device: str) -> float:
    """Seconds per call of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def measure(path: dict, args: argparse.Namespace) -> dict:
    """Caption/retrieval train steps/s, retrieval pairs/s, greedy and beam captions/s, peak memory of one path."""
    from clip4idc.decoding import beam_decode, greedy_decode

    device, amp = args.device, path["amp"]
    gen = torch.Generator().manual_seed(0)
    res = {}
    model = build("caption", path, device)
    retrieval_model = build("retrieval", path, device)
    with PeakMemory(device) as mem:
        optimizer = _optimizer(model, "caption", path["foreach"])
        scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
        b = args.batch_size
        bef, aft, no_aft = (torch.randn(b, 3, 224, 224, generator=gen).to(device) for _ in range(3))
        in_ids, dec_mask, out_ids, _ = _captions(b, gen, device)
        no_in, no_mask, no_out, _ = _captions(b, gen, device)

        def train_step(m, opt, loss_fn) -> None:
            m.train()
            with _autocast(device, amp):
                loss = loss_fn()
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad()
            m.clip.clamp_logit_scale()

        caption_loss = lambda: model(bef, aft, in_ids=in_ids, dec_mask=dec_mask, out_ids=out_ids,  # noqa: E731
                                     no_aft=no_aft, no_in_ids=no_in, no_dec_mask=no_mask, no_out_ids=no_out)
        res["caption"] = 1 / _timed(lambda: train_step(model, optimizer, caption_loss), args.steps, args.warmup,
                                    device)
        model.eval()
        db = args.decode_batch
        cache = {"use_cache": path["cache"]} if path["cache"] is not None else {}

        def greedy() -> None:
            with torch.no_grad(), _autocast(device, amp):
                greedy_decode(model, bef[:db], aft[:db], MAX_WORDS, **cache)

        def beam() -> None:
            with torch.no_grad(), _autocast(device, amp):
                beam_decode(model, bef[:db], aft[:db], MAX_WORDS, BEAM, **cache)

        warm = args.warmup if path["compile"] else 0
        res["greedy"] = db / _timed(greedy, args.decode_repeats, warm, device)
        res["beam"] = db / _timed(beam, args.decode_repeats, warm, device)
        del optimizer
        model = retrieval_model
        optimizer = _optimizer(model, "retrieval", path["foreach"])
        rb = args.retrieval_batch
        rbef, raft = (torch.randn(rb, 3, 224, 224, generator=gen).to(device) for _ in range(2))
        text = _captions(rb, gen, device)[3]
        retrieval_loss = lambda: model(rbef, raft, text_ids=text)  # noqa: E731
        res["retrieval"] = 1 / _timed(lambda: train_step(model, optimizer, retrieval_loss), args.steps, args.warmup,
                                      device)
        model.eval()

        def encode() -> None:
            with torch.no_grad(), _autocast(device, amp):
                model.encode_pair(rbef, raft)
                model.encode_text(text)

        res["pairs"] = rb / _timed(encode, args.decode_repeats, warm, device)
    res["peak"] = mem.peak
    return res


def paths(device: str, compile_: bool) -> list[dict]:
    """The rows of the table; the first is the baseline. cache/foreach None = the code's own default."""
    half = "fp16" if device == "cuda" else "bf16"
    fast = dict(attn="sdpa", foreach=True, cache=True, compile=False)
    rows = [
        dict(name="eager fp32 (baseline)", attn="eager", foreach=False, cache=False, compile=False, amp="none"),
        dict(name="SDPA", attn="sdpa", foreach=False, cache=False, compile=False, amp="none"),
        dict(name="SDPA+foreach+KV (default)", amp="none", **fast),
        dict(name=f"default + autocast {half}", amp=half, **fast),
    ]
    # Selectable with --only: whatever the installed code does by default (used to time the code before issue 15).
    rows.append(dict(name=AS_IS, attn="sdpa", foreach=None, cache=None, compile=False, amp="none"))
    if compile_:
        rows.append(dict(name="default + torch.compile", amp="none", **dict(fast, compile=True)))
        if device == "cuda":
            rows.append(dict(name=f"default + {half} + compile", amp=half, **dict(fast, compile=True)))
    return rows


def _fmt(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run every path and print one table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch_size", type=int, default=None,
                   help="caption pairs per step (each with its distractor pair); default 16 on CUDA (the original's "
                        "caption_clevr.sh), 1 on CPU (time limit)")
    p.add_argument("--retrieval_batch", type=int, default=None,
                   help="retrieval pairs per step; default 64 on CUDA (retrieve_clevr.sh: 128 over 2 GPUs), 2 on CPU")
    p.add_argument("--decode_batch", type=int, default=None, help="pairs decoded at once (default 64 CUDA, 2 CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per row (default 1 CPU, 20 CUDA)")
    p.add_argument("--decode_repeats", type=int, default=None, help="timed decoding batches (default 1 CPU, 5 CUDA)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (compilation happens here)")
    p.add_argument("--no_compile", action="store_true", help="skip the torch.compile rows (CUDA)")
    p.add_argument("--compile", action="store_true",
                   help="add the torch.compile row on CPU (inductor compiles ViT-B/32 + decoder for minutes there)")
    p.add_argument("--only", default="", help="comma-separated row names to run (default: all)")
    add_num_threads_flag(p)
    args = p.parse_args(argv)
    threads = apply_num_threads(args.num_threads)
    cuda = args.device == "cuda"
    # As the training scripts (random weights otherwise hit denormal slow paths). glibc's keep_freed_memory (the
    # caption script's CPU setting) is left off: with it the RSS would not show a row's peak.
    torch.set_flush_denormal(True)
    args.batch_size = args.batch_size or (16 if cuda else 1)
    args.retrieval_batch = args.retrieval_batch or (64 if cuda else 2)
    args.decode_batch = args.decode_batch or (64 if cuda else 2)
    args.steps = args.steps or (20 if cuda else 1)
    args.decode_repeats = args.decode_repeats or (5 if cuda else 1)
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({threads} threads)"
    print("CLIP4IDC, real configuration (ViT-B/32 pair encoder with 9 per-image blocks, 12-layer text tower, "
          "decoder-base, max_words 32), random weights")
    print(f"device: {name}; torch {torch.__version__}; caption batch {args.batch_size} pairs + {args.batch_size} "
          f"distractors, retrieval batch {args.retrieval_batch}, decoding batch {args.decode_batch} (beam {BEAM}); "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    results: list[tuple[str, dict | str]] = []
    for path in paths(args.device, (cuda and not args.no_compile) or args.compile):
        if (wanted and path["name"] not in wanted) or (path["name"] == AS_IS and AS_IS not in wanted):
            continue
        try:
            results.append((path["name"], measure(path, args)))
        except Exception as err:  # a path that is unavailable here prints its error in its row
            results.append((path["name"], f"{type(err).__name__}: {str(err).splitlines()[0][:100]}"))
        print(f"  measured {path['name']}", file=sys.stderr, flush=True)
    if not cuda and not args.compile and not wanted:
        results.append(("default + torch.compile", "not run on CPU (pass --compile; inductor takes minutes here)"))
    cols = [("caption", "caption train steps/s"), ("retrieval", "retrieval train steps/s"),
            ("pairs", "retrieval pairs/s"), ("greedy", "greedy captions/s"), ("beam", f"beam-{BEAM} captions/s")]
    header = f"| {'path':<27} | " + " | ".join(f"{title} (x)" for _, title in cols) + " | peak memory |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    base = next((res for _, res in results if isinstance(res, dict)), None)
    for row_name, res in results:
        if isinstance(res, str):
            print(f"| {row_name:<27} | {res} |")
            continue
        cells = []
        for key, title in cols:
            ratio = res[key] / base[key] if base else float("nan")
            cells.append(f"{_fmt(res[key]) + f' ({ratio:.2f})':>{len(title) + 4}}")
        peak = "n/a" if res["peak"] != res["peak"] else f"{res['peak'] / 2 ** 20:,.0f} MiB"
        print(f"| {row_name:<27} | " + " | ".join(cells) + f" | {peak:>11} |")
    return 0


if __name__ == "__main__":
    run_cli(main)
