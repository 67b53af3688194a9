"""Text search over a folder of your own videos (and images) with a Singularity retrieval checkpoint (issue 14).

Index once, then query as often as you like::

    python -m singularity.search --videos DIR --index clips.npz --pretrained_path ckpt.pth
    python -m singularity.search --index clips.npz --query "someone pouring coffee" [--topk 10] [--k_rerank 20]

Indexing embeds every video/image under DIR (recursively) with the checkpoint's vision encoder:
``video_input.num_frames_test`` frames sampled as evaluation samples them (``sample_type_test``, frame-indexed
decoding), the pooled per-frame features the ITC head reads. It is resumable: the index is saved as it grows
(every ``--save_every`` seconds and on Ctrl-C), and a second run with the same arguments embeds only the files
that are new or changed. The index records the checkpoint's SHA-256 and the frame settings, and refuses to be
extended or queried with another checkpoint or other frame settings. A file that cannot be read is reported,
recorded and skipped; the others are indexed.

A query is ranked exactly as the retrieval evaluation ranks texts to videos (``evaluation.evaluation``): ITC
similarity (mean over frames of the cosine similarities) for every clip, then the ``--k_rerank`` best re-scored
with the ITM head on their visual tokens (re-encoded from the files, the same frames); the re-ranked ones come
first by ITM score, the rest follow by ITC. It prints a table and writes a PNG of the top clips' frames.

The model config is the one stored in the checkpoint (this code's checkpoints and the released ones carry it),
or ``--config YAML`` (a path or a bundled name such as ``ret_msrvtt.yaml``); ``key=value`` overrides follow.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the monorepo importable (absolute imports only)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from omegaconf import OmegaConf

from common.checkpoint import atomic_write_bytes
from common.errors import InputError, run_cli
from common.safe_pickle import add_trust_flag
from singularity.data.annotations import pre_text
from singularity.data.frames import IMAGE_SUFFIXES, VIDEO_READERS, VIDEO_SUFFIXES, read_clip, read_image
from singularity.data.transforms import EvalTransform
from singularity.models.config_paths import cfg_get

INDEX_VERSION = 1
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES


# ------------------------------------------------------------------------------------------------
# model from a checkpoint (shared with singularity.ask)
# ------------------------------------------------------------------------------------------------

def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in 16 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_config(checkpoint: dict, ckpt_path: str, config_path: str | None, overrides: list[str]):
    """The checkpoint's own config, or ``config_path``, with ``key=value`` overrides applied."""
    from singularity.config import OPTIONAL_KEYS, convert_types, load_config, parse_overrides

    overrides = parse_overrides(overrides)
    if config_path:
        return load_config(config_path, overrides, require_env=False)
    stored = checkpoint.get("config")
    if not isinstance(stored, dict) or not stored:
        raise InputError(ckpt_path, "the checkpoint carries no model config: pass --config <YAML> (e.g. "
                                    "ret_msrvtt.yaml for a retrieval checkpoint, qa_msrvtt.yaml for QA)",
                         field="config")
    base = OmegaConf.create(stored)
    for token in overrides:
        key = token.split("=", 1)[0]
        if OmegaConf.select(base, key, default="<missing>") == "<missing>" and key not in OPTIONAL_KEYS:
            raise InputError("command line", f"unknown config key {key!r} (not in the checkpoint's config)",
                             field=key)
    return convert_types(OmegaConf.merge(base, OmegaConf.from_dotlist(overrides)))


def load_model(task: str, ckpt_path: str, config_path: str | None, overrides: list[str], trust: bool,
               device: torch.device):
    """(model in eval mode, config, tokenizer) for ``task`` (``retrieval`` or ``vqa``) from a checkpoint."""
    from singularity.models.tokenizer import TextTokenizer
    from singularity.tasks_common import (apply_inferred_architecture, build_model_for_task, check_test_frames,
                                          load_pretrained, read_checkpoint)

    checkpoint, state = read_checkpoint(ckpt_path, trust=trust, field="--pretrained_path")
    config = model_config(checkpoint, ckpt_path, config_path, overrides)
    apply_inferred_architecture(config, state)
    check_test_frames(config)
    model = build_model_for_task(task, config)
    load_pretrained(model, state, allow_partial=False, source=str(ckpt_path),
                    resize_tables=bool(cfg_get(config, "resize_learned_tables", False)))
    tokenizer = TextTokenizer(str(cfg_get(config, "text_encoder")))
    if hasattr(model, "set_special_tokens"):
        model.set_special_tokens(tokenizer)
    return model.to(device).eval(), config, tokenizer


def frame_settings(config) -> dict:
    """What decides the frames and pixels a clip is embedded from."""
    reader = str(cfg_get(config, "video_input.reader", "av"))
    if reader not in VIDEO_READERS:
        raise InputError("config", f"must be one of {VIDEO_READERS}, got {reader!r}", field="video_input.reader")
    return {"num_frames": int(cfg_get(config, "video_input.num_frames_test", 4)),
            "sample_type": str(cfg_get(config, "video_input.sample_type_test", "middle")),
            "image_res": int(cfg_get(config, "image_res", 224)), "reader": reader}


def load_media(path: Path, settings: dict, allow_short: bool, transform) -> torch.Tensor:
    """Transformed (T, 3, res, res) clip of a video, (1, 3, res, res) of an image; ``InputError`` when unreadable."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            raw = read_image(str(path))
        except Exception as err:  # noqa: BLE001 - PIL raises many types for broken files
            raise InputError(path, f"does not decode as an image ({str(err).splitlines()[0][:200]})",
                             field="image") from None
    else:
        n = settings["num_frames"]
        clip = read_clip(path, n, settings["sample_type"], reader=settings["reader"],
                         min_frames=0 if allow_short or not settings["sample_type"] in ("rand", "middle") else n)
        raw = torch.from_numpy(np.ascontiguousarray(clip.frames)).permute(0, 3, 1, 2)
    return transform(raw)


def max_text_len(config, media_type: str = "video") -> int:
    value = cfg_get(config, "max_txt_l", 32)
    return int(value) if isinstance(value, int) else int(value[media_type])


def truncation_note(tokenizer, text: str, max_len: int, what: str = "query") -> str | None:
    """A one-line note when ``text`` has more word pieces than the text encoder takes (it is truncated)."""
    pieces = tokenizer.tok.tokenize(text)
    if len(pieces) + 1 <= max_len:
        return None
    kept = tokenizer.tok.convert_tokens_to_string(pieces[:max_len - 1])
    return (f"warning: {what}: {len(pieces)} word pieces, the text encoder takes {max_len - 1} after [CLS] "
            f"(max_txt_l={max_len}): truncated to {kept!r}")


# ------------------------------------------------------------------------------------------------
# the index
# ------------------------------------------------------------------------------------------------

@dataclass
class Index:
    """Embedded media of one folder: relative paths, size/mtime, frame counts and pooled features."""

    meta: dict
    paths: list[str] = field(default_factory=list)
    stats: list[tuple[int, int]] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    pooled: list[np.ndarray] = field(default_factory=list)  # (T, d) each
    failed: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # path -> (size, mtime, reason)

    def save(self, path: Path) -> None:
        """Atomic write (a crash leaves the previous version)."""
        import io

        width = self.meta["width"]
        t = self.meta["frames"]["num_frames"]
        pooled = np.zeros((len(self.paths), t, width), np.float32)
        for i, p in enumerate(self.pooled):
            pooled[i, :len(p)] = p
        buf = io.BytesIO()
        failed = sorted(self.failed)
        np.savez(buf, meta=np.array(json.dumps(self.meta)), paths=np.array(self.paths, dtype=str),
                 stats=np.array(self.stats, dtype=np.int64).reshape(-1, 2), nframes=np.array(self.frames, np.int64),
                 pooled=pooled, failed_paths=np.array(failed, dtype=str),
                 failed_stats=np.array([self.failed[p][:2] for p in failed], dtype=np.int64).reshape(-1, 2),
                 failed_reasons=np.array([self.failed[p][2] for p in failed], dtype=str))
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> "Index":
        """Read and check an index written by ``save``."""
        if not path.is_file():
            raise InputError(path, "index not found (build it with --videos DIR --pretrained_path CKPT)",
                             field="--index")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as err:  # noqa: BLE001 - zip/npy errors of every kind
            raise InputError(path, f"not a search index ({str(err).splitlines()[0][:200]})", field="--index") from None
        needed = ("meta", "paths", "stats", "nframes", "pooled", "failed_paths", "failed_stats", "failed_reasons")
        missing = [k for k in needed if k not in arrays]
        if missing:
            raise InputError(path, f"not a search index (no {', '.join(missing)})", field="--index")
        try:
            meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError:
            raise InputError(path, "not a search index (unreadable meta)", field="meta") from None
        if not isinstance(meta, dict) or meta.get("version") != INDEX_VERSION:
            raise InputError(path, f"index version {meta.get('version') if isinstance(meta, dict) else None}, "
                                   f"this code reads {INDEX_VERSION}", field="meta.version")
        n = len(arrays["paths"])
        pooled = arrays["pooled"]
        t = meta["frames"]["num_frames"]
        if pooled.shape != (n, t, meta["width"]) or arrays["stats"].shape != (n, 2) or arrays["nframes"].shape != (n,):
            raise InputError(path, f"inconsistent arrays for {n} entries (pooled {pooled.shape})", field="pooled")
        if pooled.dtype != np.float32 or not np.isfinite(pooled).all():
            raise InputError(path, "pooled features must be finite float32", field="pooled")
        frames = arrays["nframes"].tolist()
        if any(f < 1 or f > t for f in frames):
            raise InputError(path, f"frame counts outside 1..{t}", field="nframes")
        index = cls(meta, [str(p) for p in arrays["paths"]], [tuple(s) for s in arrays["stats"].tolist()], frames,
                    [pooled[i, :f] for i, f in enumerate(frames)])
        for p, s, r in zip(arrays["failed_paths"], arrays["failed_stats"].tolist(), arrays["failed_reasons"]):
            index.failed[str(p)] = (s[0], s[1], str(r))
        return index


def list_media(root: Path) -> list[Path]:
    """Video and image files under ``root`` (recursive, sorted)."""
    if not root.is_dir():
        raise InputError(root, "not a directory", field="--videos")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
    if not files:
        raise InputError(root, f"no video or image files under it ({', '.join(sorted(MEDIA_SUFFIXES))})",
                         field="--videos")
    return files


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return int(st.st_size), int(st.st_mtime_ns)


def check_same_build(index_path: Path, meta: dict, ckpt_hash: str, settings: dict, ckpt_path: str) -> None:
    """Refuse to mix checkpoints or frame settings in one index."""
    if meta["checkpoint_sha256"] != ckpt_hash:
        raise InputError(index_path, f"built with checkpoint {meta['checkpoint']} (sha256 "
                                     f"{meta['checkpoint_sha256'][:12]}), not {ckpt_path} (sha256 {ckpt_hash[:12]}): "
                                     "use another --index for another checkpoint", field="checkpoint_sha256")
    if meta["frames"] != settings:
        raise InputError(index_path, f"built with frame settings {meta['frames']}, not {settings}: use another "
                                     "--index", field="frames")


class _MediaSet(torch.utils.data.Dataset):
    """Items: (position, clip tensor or the one-line reason it could not be read)."""

    def __init__(self, files, settings, allow_short, transform):
        self.files, self.settings, self.allow_short, self.transform = files, settings, allow_short, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        try:
            return i, load_media(self.files[i], self.settings, self.allow_short, self.transform)
        except InputError as err:
            return i, err.message
        except Exception as err:  # noqa: BLE001 - any decoder's failure on one file must not stop the others
            return i, (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


@torch.no_grad()
def build_index(args, device: torch.device) -> Index:
    """Embed every new or changed file under ``--videos`` into ``--index`` (resumable)."""
    from tqdm import tqdm

    root, index_path = Path(args.videos).resolve(), Path(args.index)
    files = list_media(root)
    if not Path(args.pretrained_path).is_file():
        raise InputError(args.pretrained_path, "checkpoint file not found", field="--pretrained_path")
    ckpt_hash = file_sha256(args.pretrained_path)
    existing = Index.load(index_path) if index_path.exists() else None
    if existing is not None:
        check_same_build(index_path, existing.meta, ckpt_hash, existing.meta["frames"], args.pretrained_path)
    model, config, _ = load_model("retrieval", args.pretrained_path, args.config, args.overrides,
                                  args.trust_checkpoint, device)
    settings = frame_settings(config)
    ensemble = str(cfg_get(config, "eval_frame_ensemble", "concat"))
    meta = {"version": INDEX_VERSION, "checkpoint": str(Path(args.pretrained_path).resolve()),
            "checkpoint_sha256": ckpt_hash, "config": args.config, "overrides": list(args.overrides),
            "frames": settings, "ensemble": ensemble, "root": str(root), "allow_short": bool(args.allow_short),
            "width": int(model.vision_width)}
    if existing is not None:
        index = existing
        check_same_build(index_path, index.meta, ckpt_hash, settings, args.pretrained_path)
        if index.meta["root"] != str(root):
            raise InputError(index_path, f"indexes {index.meta['root']}, not {root}: use another --index",
                             field="root")
        if index.meta["ensemble"] != ensemble:
            raise InputError(index_path, f"built with eval_frame_ensemble={index.meta['ensemble']}, not {ensemble}: "
                                         "use another --index", field="ensemble")
    else:
        index = Index(meta)
    index.meta.update({k: meta[k] for k in ("config", "overrides", "ensemble", "allow_short")})
    present = {str(p.relative_to(root)): p for p in files}
    done = {p: s for p, s in zip(index.paths, index.stats)}
    keep = [i for i, p in enumerate(index.paths) if p in present and done[p] == _stat(present[p])]
    if len(keep) < len(index.paths):
        print(f"{len(index.paths) - len(keep)} indexed file(s) changed or removed: re-embedding / dropping them",
              file=sys.stderr)
        index.paths, index.stats = [index.paths[i] for i in keep], [index.stats[i] for i in keep]
        index.frames, index.pooled = [index.frames[i] for i in keep], [index.pooled[i] for i in keep]
    index.failed = {p: v for p, v in index.failed.items() if p in present and v[:2] == _stat(present[p])}
    indexed = set(index.paths)
    todo = [p for rel, p in present.items() if rel not in indexed and rel not in index.failed]
    if len(present) - len(todo):
        print(f"resuming {index_path}: {len(present) - len(todo)} of {len(present)} files already done "
              f"({len(index.failed)} unreadable)", file=sys.stderr)
    transform = EvalTransform(settings["image_res"])
    loader = torch.utils.data.DataLoader(_MediaSet(todo, settings, args.allow_short, transform),
                                         batch_size=args.batch_size, num_workers=args.num_workers,
                                         collate_fn=list)
    last_save = time.monotonic()
    interrupted = False
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM)
    if main_thread:
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # a killed run saves like Ctrl-C
    try:
        with tqdm(total=len(todo), desc="indexing", unit="file", disable=args.quiet) as bar:
            for batch in loader:
                _embed_batch(model, batch, todo, root, index, device, ensemble, bar)
                if time.monotonic() - last_save >= args.save_every:
                    index.save(index_path)
                    last_save = time.monotonic()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if index.paths or index.failed:
        index.save(index_path)
    if interrupted:
        print(f"interrupted: {index_path} holds {len(index.paths)} of {len(present)} files; run the same command "
              "again to continue", file=sys.stderr)
        raise SystemExit(130)
    if not index.paths:
        raise InputError(root, f"none of the {len(present)} files could be read (reasons in {index_path})",
                         field="--videos")
    print(f"index {index_path}: {len(index.paths)} files embedded, {len(index.failed)} unreadable", file=sys.stderr)
    return index


def _embed_batch(model, batch, todo, root, index, device, ensemble, bar) -> None:
    """Embed the readable items of one loader batch (grouped by frame count), record the others."""
    groups: dict[int, list[tuple[int, torch.Tensor]]] = {}
    for i, item in batch:
        rel = str(todo[i].relative_to(root))
        if isinstance(item, str):
            index.failed[rel] = (*_stat(todo[i]), item)
            tqdm_write(bar, f"skipped {todo[i]}: {item}")
        else:
            groups.setdefault(item.shape[0], []).append((i, item))
    for items in groups.values():
        media = torch.stack([m for _, m in items]).to(device)
        if ensemble == "concat":
            _, pooled = model.encode_image(media)
        else:
            _, pooled = model._encode_image(media)
        for (i, _), p in zip(items, pooled.float().cpu().numpy()):
            if not np.isfinite(p).all():
                rel = str(todo[i].relative_to(root))
                index.failed[rel] = (*_stat(todo[i]), "non-finite features")
                tqdm_write(bar, f"skipped {todo[i]}: non-finite features")
                continue
            index.paths.append(str(todo[i].relative_to(root)))
            index.stats.append(_stat(todo[i]))
            index.frames.append(p.shape[0])
            index.pooled.append(p)
    bar.update(len(batch))


def tqdm_write(bar, text: str) -> None:
    """A line on stderr that does not break the progress bar."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr) if not bar.disable else print(text, file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# querying
# ------------------------------------------------------------------------------------------------

@dataclass
class Hit:
    """One ranked result."""

    rank: int
    path: str
    itc: float
    itm: float | None  # None: beyond the re-ranked top k


@torch.no_grad()
def rank_query(model, tokenizer, config, index: Index, query: str, k_rerank: int, allow_short: bool,
               device: torch.device) -> tuple[list[Hit], np.ndarray]:
    """All clips ranked for ``query`` as ``evaluation.evaluation`` ranks t2i (ITC, then ITM on the top k).

    Returns the hits and the evaluation's re-ranked score row (-100 outside the top k).
    """
    from singularity.evaluation import extract_text_feats, itm_scores

    ensemble = index.meta["ensemble"]
    text_feat, text_att = extract_text_feats(model, [query], tokenizer, max_text_len(config), device)
    n = len(index.paths)
    itc = torch.empty(n)
    by_frames: dict[int, list[int]] = {}
    for i, f in enumerate(index.frames):
        by_frames.setdefault(f, []).append(i)
    for ids in by_frames.values():
        pooled = torch.from_numpy(np.stack([index.pooled[i] for i in ids])).to(device)
        sim, _ = model.get_sim(pooled.float(), text_feat[:, 0].float(), 1.0)
        itc[ids] = sim[:, 0].float().cpu()
    kk = min(k_rerank, n)
    top = itc.topk(kk).indices
    reranked = torch.full((n,), -100.0)
    settings, root = index.meta["frames"], Path(index.meta["root"])
    transform = EvalTransform(settings["image_res"])
    media = {int(i): load_media(root / index.paths[int(i)], settings, allow_short, transform) for i in top}
    groups: dict[int, list[int]] = {}
    for i in top.tolist():
        groups.setdefault(media[i].shape[0], []).append(i)
    for ids in groups.values():
        clips = torch.stack([media[i] for i in ids]).to(device)
        if ensemble == "concat":
            tokens, _ = model.encode_image(clips)
            tokens = tokens.unsqueeze(1)
        else:
            tokens, _ = model._encode_image(clips)
        score = itm_scores(model, text_feat.repeat(len(ids), 1, 1), text_att.repeat(len(ids), 1), tokens, device,
                           ensemble)
        reranked[ids] = score.float().cpu()
    in_top = set(top.tolist())
    order = sorted(range(n), key=lambda i: (i not in in_top, -float(reranked[i]) if i in in_top else -float(itc[i])))
    hits = [Hit(r + 1, index.paths[i], float(itc[i]), float(reranked[i]) if i in in_top else None)
            for r, i in enumerate(order)]
    return hits, reranked.numpy()


def print_table(query: str, hits: list[Hit], root: str) -> None:
    print(f'query: "{query}"  ({root})')
    print(f"{'rank':>4}  {'ITM':>8}  {'ITC':>7}  file")
    for h in hits:
        itm = f"{h.itm:8.3f}" if h.itm is not None else f"{'-':>8}"
        print(f"{h.rank:>4}  {itm}  {h.itc:7.3f}  {h.path}")


def plot_hits(path: Path, query: str, hits: list[Hit], index: Index, frames: int = 4) -> Path:
    """A grid: one panel per hit with a strip of its frames, rank, file and scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root, settings = Path(index.meta["root"]), index.meta["frames"]
    cols = min(5, len(hits))
    rows = (len(hits) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 1.7 * rows + 0.7), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, hit in zip(axes.flat, hits):
        file = root / hit.path
        if file.suffix.lower() in IMAGE_SUFFIXES:
            strip = read_image(str(file))[0].permute(1, 2, 0).numpy()
        else:
            clip = read_clip(file, min(frames, settings["num_frames"]), "middle", reader=settings["reader"])
            strip = np.concatenate(list(clip.frames), axis=1)
        ax.imshow(strip, interpolation="nearest")
        score = f"ITM {hit.itm:.2f}  ITC {hit.itc:.2f}" if hit.itm is not None else f"ITC {hit.itc:.2f}"
        ax.set_title(f"#{hit.rank} {Path(hit.path).name[:28]}\n{score}", fontsize=7)
    fig.suptitle(f'"{query[:90]}": top {len(hits)} of {len(index.paths)}', fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def query_index(args, device: torch.device) -> list[Hit]:
    """Rank the indexed clips for ``--query``; print the table, write the PNG."""
    index_path = Path(args.index)
    index = Index.load(index_path)
    if not index.paths:
        raise InputError(index_path, "the index holds no embedded file", field="paths")
    query = args.query.strip()
    if not query:
        raise InputError("--query", "empty query")
    ckpt = args.pretrained_path or index.meta["checkpoint"]
    if not Path(ckpt).is_file():
        raise InputError(ckpt, "checkpoint of the index not found: pass --pretrained_path", field="--pretrained_path")
    ckpt_hash = file_sha256(ckpt)
    check_same_build(index_path, index.meta, ckpt_hash, index.meta["frames"], ckpt)
    config_path = args.config if args.config else index.meta.get("config")
    overrides = list(args.overrides) or list(index.meta.get("overrides", []))
    model, config, tokenizer = load_model("retrieval", ckpt, config_path, overrides, args.trust_checkpoint, device)
    check_same_build(index_path, index.meta, ckpt_hash, frame_settings(config), ckpt)
    text = pre_text(query)
    note = truncation_note(tokenizer, text, max_text_len(config))
    if note:
        print(note, file=sys.stderr)
    hits, _ = rank_query(model, tokenizer, config, index, text, args.k_rerank,
                         bool(index.meta.get("allow_short", False)), device)
    top = hits[:args.topk]
    print_table(query, top, index.meta["root"])
    png = Path(args.png) if args.png else index_path.with_name(
        f"{index_path.stem}_{re.sub(r'[^a-z0-9]+', '_', text)[:40].strip('_') or 'query'}.png")
    plot_hits(png, query, top, index)
    print(f"wrote {png}")
    return hits


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="the index file (.npz) to build / extend / query")
    parser.add_argument("--videos", help="folder of videos/images to index (recursive)")
    parser.add_argument("--pretrained_path", help="retrieval checkpoint (indexing: required; query: defaults to the "
                                                  "one the index records, whose SHA-256 must match)")
    parser.add_argument("--config", help="model config YAML (default: the config stored in the checkpoint)")
    parser.add_argument("--query", help="text to search for")
    parser.add_argument("--topk", type=int, default=10, help="results shown and drawn (10)")
    parser.add_argument("--k_rerank", type=int, default=20, help="ITC top k re-ranked with ITM (20)")
    parser.add_argument("--png", help="PNG of the top results (default: next to the index, named after the query)")
    parser.add_argument("--batch_size", type=int, default=16, help="files embedded per forward pass (16)")
    parser.add_argument("--num_workers", type=int, default=0, help="decoding processes (0 = in this process)")
    parser.add_argument("--save_every", type=float, default=30.0, help="seconds between index saves while indexing")
    parser.add_argument("--allow_short", action="store_true",
                        help="index videos with fewer frames than num_frames_test by repeating the last frame (the "
                             "sampler's padding); default: such a video is reported and skipped")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_trust_flag(parser)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. video_input.num_frames_test=8)")
    return parser


def main(argv=None) -> int:
    """CLI entry (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if not args.videos and args.query is None:
        raise InputError("command line", "pass --videos DIR (to index) and/or --query TEXT (to search)")
    for name in ("topk", "k_rerank", "batch_size"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name}", "must be >= 1")
    device = torch.device(args.device)
    if args.videos:
        if not args.pretrained_path:
            raise InputError("--pretrained_path", "indexing needs the retrieval checkpoint")
        build_index(args, device)
    if args.query is not None:
        query_index(args, device)
    return 0


if __name__ == "__main__":
    run_cli(main)
