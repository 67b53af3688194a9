"""VisualCOMET data: annotations, VCR metadata, feature pickles, person-tag rewriting, sequence layout, datasets.

Formats and layout follow spec sections 3 and 4.2-4.4. Malformed input raises ``InputError`` naming the file,
record and field.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from dataclasses import dataclass
from functools import lru_cache
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from common.errors import InputError
from common.safe_pickle import load_pickle
from visualcomet.tokenization import EOT, NUM_PERSON_TAGS, RELATION_TOKENS, VisualCometTokenizer

log = logging.getLogger("visualcomet.data")

RELATIONS = ["intent", "before", "after"]
NUM_MAX_BOXES = 15
MAX_IMAGE = NUM_MAX_BOXES + 2
# Fallback segment lengths of the original generation/rank loaders (spec 4.2).
DEFAULT_MAX_EVENT, DEFAULT_MAX_PLACE, DEFAULT_MAX_INFERENCE = 39, 22, 23
IGNORE_INDEX = -100  # the original used -1 (transformers 2.4.1); 5.x losses ignore -100 (pitfall 22)
COCO_CLASSES = ["__background__"] + (
    "person bicycle car motorcycle airplane bus train truck boat trafficlight firehydrant stopsign parkingmeter bench "
    "bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee skis "
    "snowboard sportsball kite baseballbat baseballglove skateboard surfboard tennisracket bottle wineglass cup fork "
    "knife spoon bowl banana apple sandwich orange broccoli carrot hotdog pizza donut cake chair couch pottedplant bed "
    "diningtable toilet tv laptop mouse remote keyboard cellphone microwave oven toaster sink refrigerator book clock "
    "vase scissors teddybear hairdrier toothbrush"
).split()
CLASS_INDEX = {name: i for i, name in enumerate(COCO_CLASSES)}


# ---------------------------------------------------------------------------------------------------- text rewriting
def map_numbers(sent: str, mapping: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """Rewrite person numbers into <|detN|> tags exactly like the original ``map_numbers`` (spec 3.2, pitfall 3 K)."""
    mapping = {} if mapping is None else mapping
    s = sent.replace(",", " , ").replace("'", " '").replace(".", " .").replace("?", " ?")
    out = []
    for tok in s.split():
        if tok.isdigit():
            mapping[tok] = "<|det%d|>" % int(tok)
            out.append(mapping[tok])
        else:
            out.append(tok)
    text = " ".join(out).strip().replace("'", " '").replace(" .", ".")
    return text, mapping


def replace_names(text: str, name2person: dict[str, str]) -> str:
    """Turn <|detN|> tags back into person numbers; leftover tag fragments are deleted (spec 4.1)."""
    for name, person in name2person.items():
        text = text.replace(name, person)
    return text.replace("<|det", "").replace("|>", "")


def image_id(img_fn: str) -> str:
    """Feature-pickle id of an image: the basename of ``img_fn`` without its last extension."""
    base = img_fn.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


# ---------------------------------------------------------------------------------------------------- annotations
def resolve_data_dir(data_dir: str | os.PathLike) -> Path:
    """Accept a plain directory or (as the original's ``os.path.dirname``) a file inside it (pitfall 18 F)."""
    path = Path(data_dir)
    if path.is_dir():
        return path
    if path.parent.is_dir() and str(data_dir) and not str(data_dir).endswith("/"):
        return path.parent
    raise InputError(data_dir, "annotation directory not found")


def load_annotations(path: str | os.PathLike, split: str | None = None) -> list[dict[str, Any]]:
    """Read and validate a ``{split}_annots.json`` event list (spec 3.1)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "annotation file not found")
    try:
        annots = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON: {err}") from None
    if not isinstance(annots, list):
        raise InputError(path, "expected a JSON list of event records")
    for i, rec in enumerate(annots):
        if not isinstance(rec, dict):
            raise InputError(path, "expected an object", record=i)
        for field in ("img_fn", "metadata_fn", "event", "place"):
            if not isinstance(rec.get(field), str):
                raise InputError(path, "missing or not a string", record=i, field=field)
        if "movie" in rec and not isinstance(rec["movie"], str):
            raise InputError(path, "not a string", record=i, field="movie")
        for rel in RELATIONS:
            if rel in rec and not (isinstance(rec[rel], list) and all(isinstance(s, str) for s in rec[rel])):
                raise InputError(path, "must be a list of strings", record=i, field=rel)
        if "split" not in rec and split is not None:
            rec["split"] = split  # the original crashed in run_generation without it (spec 8)
    return annots


def split_files(data_dir: Path) -> dict[str, Path]:
    """The three annotation files; all must exist, as in the original."""
    files = {s: data_dir / f"{s}_annots.json" for s in ("train", "val", "test")}
    for f in files.values():
        if not f.is_file():
            raise InputError(f, "annotation file not found (train/val/test_annots.json must all exist)")
    return files


def finetune_records(annots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (annotation, relation, inference sentence) (``read_and_parse_finetune_json``)."""
    records = []
    for idx, ann in enumerate(annots):
        base = {k: v for k, v in ann.items() if k not in RELATIONS}
        event_name, event_map = map_numbers(ann["event"])
        for rel in RELATIONS:
            for sent in ann.get(rel, []) or []:
                inf_name, mapping = map_numbers(sent, dict(event_map))
                rec = dict(base, event_idx=idx, inference_relation=rel, inference_text=sent, event_name=event_name,
                           inference_text_name=inf_name, person2name=mapping,
                           name2person={v: k for k, v in mapping.items()})
                records.append(rec)
    return records


def generation_records(annots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (annotation, relation) for all three relations (``read_and_parse_generation_json``).

    The person map includes the ids of all ground-truth inferences of the relation: on val this leaks GT person ids
    into the visual input (pitfall 7, K).
    """
    records = []
    for idx, ann in enumerate(annots):
        base = {k: v for k, v in ann.items() if k not in RELATIONS}
        event_name, event_map = map_numbers(ann["event"])
        for rel in RELATIONS:
            mapping = dict(event_map)
            rec = dict(base, event_idx=idx, inference_relation=rel, event_name=event_name)
            if ann.get(rel):
                names = []
                for sent in ann[rel]:
                    name, mapping = map_numbers(sent, mapping)
                    names.append(name)
                rec["inference_text"] = list(ann[rel])
                rec["inference_text_name"] = names
            rec["person2name"] = mapping
            rec["name2person"] = {v: k for k, v in mapping.items()}
            records.append(rec)
    return records


# ---------------------------------------------------------------------------------------------------- sequence layout
@dataclass(frozen=True)
class Layout:
    """Segment lengths of the flat sequence (spec 4.2): event at 17, place at 17+E, inference at 17+E+P."""

    max_event: int
    max_place: int
    max_inference: int
    max_seq_len: int

    @property
    def event_start(self) -> int:
        """Position of <|b_ev|>."""
        return MAX_IMAGE

    @property
    def place_start(self) -> int:
        """Position of <|b_pl|>."""
        return MAX_IMAGE + self.max_event

    @property
    def inference_start(self) -> int:
        """Position of the relation token."""
        return MAX_IMAGE + self.max_event + self.max_place


def segment_texts(record: dict[str, Any], generation: bool = False) -> list[str]:
    """The four segment strings (image, event, place, inference) of one record."""
    rel_tok = RELATION_TOKENS[record["inference_relation"]]
    parts = [
        " ".join(["<|b_img|>"] + [EOT] * NUM_MAX_BOXES + ["<|e_img|>"]),
        " ".join(["<|b_ev|>", record["event_name"], "<|e_ev|>"]),
        " ".join(["<|b_pl|>", record["place"], "<|e_pl|>"]),
    ]
    parts.append(rel_tok if generation else " ".join([rel_tok, record["inference_text_name"], "<|e_in|>"]))
    return parts


def segment_lengths(records: list[dict[str, Any]], tokenizer: VisualCometTokenizer) -> tuple[int, int, int]:
    """max_event, max_place, max_inference over (train) records, boundary tokens included."""
    e = p = i = 0
    for rec in records:
        _, ev, pl, inf = (len(tokenizer.encode(t)) for t in segment_texts(rec))
        e, p, i = max(e, ev), max(p, pl), max(i, inf)
    return e, p, i


def combine_and_pad(segments: list[list[int]], layout: Layout, tokenizer: VisualCometTokenizer,
                    pad_inference: bool = True) -> list[int]:
    """``_combine_and_pad_tokens``: truncate/pad segments 1-3, pad segment 4, pad or cut the whole to max_seq_len."""
    eot = tokenizer.eot_id
    maxes = [MAX_IMAGE, layout.max_event, layout.max_place]
    out: list[int] = []
    for seg, m in zip(segments[:3], maxes):
        if len(seg) > m:
            seg = seg[: m - 1] + [seg[-1]]
        out += seg + [eot] * (m - len(seg))
    inf = list(segments[3])
    if pad_inference:
        inf += [eot] * (layout.max_inference - len(inf))
    out += inf
    if len(out) > layout.max_seq_len:
        out = out[: layout.max_seq_len - 1] + [tokenizer.convert_tokens_to_ids("<|e_in|>")]
    elif pad_inference:
        out += [eot] * (layout.max_seq_len - len(out))
    return out


def blank_text(ids: list[int], tokenizer: VisualCometTokenizer) -> list[int]:
    """``--no_text``: every token from <|b_ev|> to <|e_pl|> inclusive becomes <|endoftext|> (positions kept)."""
    b_ev, e_pl = tokenizer.convert_tokens_to_ids(["<|b_ev|>", "<|e_pl|>"])
    start, end = ids.index(b_ev), ids.index(e_pl)
    return ids[:start] + [tokenizer.eot_id] * (end - start + 1) + ids[end + 1:]


def make_labels(ids: list[int], tokenizer: VisualCometTokenizer, mode: str = "inference") -> list[int]:
    """LM labels: inference tokens and <|e_in|> (+ event/place tokens in mode ``all``); the rest ignored (spec 4.3)."""
    labels = [IGNORE_INDEX] * len(ids)
    rel_ids = set(tokenizer.convert_tokens_to_ids(list(RELATION_TOKENS.values())))
    e_in = tokenizer.convert_tokens_to_ids("<|e_in|>")
    start = next(i for i, t in enumerate(ids) if t in rel_ids)
    end = ids.index(e_in, start)
    spans = [(start + 1, end)]
    if mode == "all":
        for b, e in (("<|b_ev|>", "<|e_ev|>"), ("<|b_pl|>", "<|e_pl|>")):
            b_id, e_id = tokenizer.convert_tokens_to_ids([b, e])
            spans.append((ids.index(b_id) + 1, ids.index(e_id)))
    for a, b in spans:
        labels[a: b + 1] = ids[a: b + 1]
    return labels


def encode_record(record: dict[str, Any], tokenizer: VisualCometTokenizer, layout: Layout, mode: str = "inference",
                  include_text: bool = True, generation: bool = False) -> tuple[list[int], list[int] | None]:
    """Token ids (and labels unless ``generation``) of one record; generation prompts end after the relation token."""
    if mode not in ("inference", "all"):
        raise ValueError(f"mode must be 'inference' or 'all', got {mode!r}")
    if mode == "all" and not include_text:
        raise ValueError("--mode all needs the event and place text; it cannot be combined with --no_text (pitfall 20)")
    segments = [tokenizer.encode(t) for t in segment_texts(record, generation)]
    if generation:
        ids = combine_and_pad(segments, layout, tokenizer, pad_inference=False)
        ids = ids[: layout.inference_start + 1]
    else:
        ids = combine_and_pad(segments, layout, tokenizer)
    if not include_text:
        ids = blank_text(ids, tokenizer)
    return ids, (None if generation else make_labels(ids, tokenizer, mode))


# ---------------------------------------------------------------------------------------------------- visual input
@lru_cache(maxsize=8192)
def load_metadata(path: str) -> dict[str, Any]:
    """Read and validate a VCR metadata JSON (spec 3.3); box coordinates must satisfy 0 <= x1 < x2, 0 <= y1 < y2."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "VCR metadata file not found (set --vcr_images_dir or VCR_IMAGES_DIR)")
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(p, f"not valid JSON: {err}") from None
    for field in ("boxes", "names", "width", "height"):
        if field not in meta:
            raise InputError(p, "missing", field=field)
    if len(meta["boxes"]) != len(meta["names"]):
        raise InputError(p, f"{len(meta['boxes'])} boxes but {len(meta['names'])} names", field="boxes")
    for j, name in enumerate(meta["names"]):
        if name not in CLASS_INDEX:
            raise InputError(p, f"unknown COCO class {name!r}", record=j, field="names")
    for j, box in enumerate(meta["boxes"]):
        if len(box) < 4:
            raise InputError(p, "a box needs x1, y1, x2, y2[, score]", record=j, field="boxes")
        x1, y1, x2, y2 = box[:4]
        if not (0 <= x1 < x2):
            raise InputError(p, f"invalid box x range {x1}..{x2}", record=j, field="boxes")
        if not (0 <= y1 < y2):
            raise InputError(p, f"invalid box y range {y1}..{y2}", record=j, field="boxes")
    return meta


def check_features(img: Any, objs: Any, source: Any) -> tuple[np.ndarray, np.ndarray]:
    """Float32 (D,) image and (N, D) object features, refusing non-float, empty, mis-shaped or non-finite values."""
    out = []
    for field, value, ndim in (("image_features", img, 1), ("object_features", objs, 2)):
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            raise InputError(source, f"expected floating-point features, got dtype {arr.dtype}", field=field)
        if arr.ndim != ndim or arr.shape[-1] == 0:
            want = "(D,)" if ndim == 1 else "(N, D)"
            raise InputError(source, f"shape {arr.shape} is not {want} with D > 0", field=field)
        if not np.isfinite(arr).all():
            raise InputError(source, f"{int((~np.isfinite(arr)).sum())} non-finite values (NaN/inf)", field=field)
        out.append(arr.astype(np.float32, copy=False))
    if out[1].shape[1] != out[0].shape[0]:
        raise InputError(source, f"width {out[1].shape[1]} differs from image_features' {out[0].shape[0]}",
                         field="object_features")
    return out[0], out[1]


@lru_cache(maxsize=1024)
def load_features(path: str, trust: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(image_features (D,), object_features (N, D)) float32 from a feature pickle (spec 3.5).

    The pickle is read with the restricted unpickler of ``common.safe_pickle`` (numpy arrays and containers only);
    ``trust`` (``--trust_checkpoint``) allows full unpickling.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "feature pickle not found (set --vcr_features_dir or VCR_FEATURES_DIR)")
    obj = load_pickle(p, trust=trust)
    if not isinstance(obj, dict):
        raise InputError(p, "expected a dict with image_features and object_features")
    for field in ("image_features", "object_features"):
        if field not in obj:
            raise InputError(p, "missing", field=field)
    return check_features(obj["image_features"], obj["object_features"], p)


def make_mask(size: int, box: list[float], polygons: list) -> np.ndarray:
    """14x14 float mask of an object's polygons inside its box (unused by the model; pitfall 23)."""
    from matplotlib import path as mpath

    x1, y1, x2, y2 = box[:4]
    xs = x1 + (np.arange(size) + 0.5) * (x2 - x1) / size
    ys = y1 + (np.arange(size) + 0.5) * (y2 - y1) / size
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    mask = np.zeros(size * size, dtype=bool)
    for poly in polygons:
        if len(poly) >= 3:
            mask |= mpath.Path(np.asarray(poly, dtype=np.float64)).contains_points(grid)
    return mask.reshape(size, size).astype(np.float32)


def select_detections(person2name: dict[str, str], names: list[str], use_all_dets: bool = False) -> list[int]:
    """0-based object indices used as visual tokens: mentioned people, else all persons, or all objects."""
    if use_all_dets:
        return list(range(len(names)))
    dets = sorted({int(tag) - 1 for tag in person2name if 0 <= int(tag) - 1 < len(names)})
    if not dets:
        dets = [j for j, n in enumerate(names) if n == "person"]
    return dets


def visual_inputs(record: dict[str, Any], tokenizer: VisualCometTokenizer, images_dir: str | os.PathLike,
                  features_dir: str | os.PathLike, use_all_dets: bool = False, with_masks: bool = False,
                  trust: bool = False, feature_dim: int | None = None) -> dict[str, torch.Tensor]:
    """Per-example visual tensors of spec 4.4 (image first with <|det0|>, then the selected detections, 15 slots).

    ``feature_dim`` (the model's ``config.feature_dim``) is checked against the pickle's feature width.
    """
    meta = load_metadata(str(Path(images_dir) / record["metadata_fn"]))
    feat_file = Path(features_dir) / f"{image_id(record['img_fn'])}.pkl"
    img_feat, obj_feats = load_features(str(feat_file), trust)
    if feature_dim is not None and img_feat.shape[0] != feature_dim:
        raise InputError(feat_file, f"feature width {img_feat.shape[0]} but the model expects {feature_dim} "
                                    "(config feature_dim)", field="image_features")
    if obj_feats.shape[0] != len(meta["names"]):
        raise InputError(feat_file, f"{obj_feats.shape[0]} object feature rows but {len(meta['names'])} metadata "
                                    "objects", field="object_features")
    return visual_tensors(record, tokenizer, meta, img_feat, obj_feats, use_all_dets, with_masks,
                          source=Path(images_dir) / record["metadata_fn"])


def visual_tensors(record: dict[str, Any], tokenizer: VisualCometTokenizer, meta: dict[str, Any],
                   img_feat: np.ndarray, obj_feats: np.ndarray, use_all_dets: bool = False, with_masks: bool = False,
                   source: Any = "image") -> dict[str, torch.Tensor]:
    """Visual tensors from already loaded metadata and features (also used for in-the-wild images)."""
    names = meta["names"]
    w, h = float(meta["width"]), float(meta["height"])
    dets = select_detections(record.get("person2name", {}), names, use_all_dets)
    if not dets:
        raise InputError(source, "no object to use as a visual token (no mentioned person and no 'person' object)",
                         field="names")
    feats = [img_feat] + [obj_feats[j] for j in dets]
    boxes = [[0.0, 0.0, w, h]] + [list(map(float, meta["boxes"][j][:4])) for j in dets]
    objects = [0] + [CLASS_INDEX[names[j]] for j in dets]
    det0 = tokenizer.convert_tokens_to_ids("<|det0|>")
    # Non-person objects get person id 0, i.e. wte[0] is added (pitfall 6, K).
    person_ids = [det0] + [tokenizer.convert_tokens_to_ids(f"<|det{j + 1}|>") if names[j] == "person" else 0
                           for j in dets]
    n = min(len(feats), NUM_MAX_BOXES)
    dim = img_feat.shape[0]
    out = {
        "img_feats": torch.zeros(NUM_MAX_BOXES, dim),
        "boxes": torch.zeros(NUM_MAX_BOXES, 4),
        "boxes_mask": torch.zeros(NUM_MAX_BOXES, dtype=torch.long),
        "objects": torch.zeros(NUM_MAX_BOXES, dtype=torch.long),
        "person_ids": torch.zeros(NUM_MAX_BOXES, dtype=torch.long),
        "subject_ids": torch.zeros(NUM_MAX_BOXES, dtype=torch.long),
    }
    out["img_feats"][:n] = torch.from_numpy(np.stack(feats[:n]))
    b = torch.tensor(boxes[:n], dtype=torch.float32)
    b[:, 2].clamp_(max=w)
    b[:, 3].clamp_(max=h)
    out["boxes"][:n] = b
    out["boxes_mask"][:n] = 1
    out["objects"][:n] = torch.tensor(objects[:n])
    out["person_ids"][:n] = torch.tensor(person_ids[:n])
    if with_masks:
        segms = meta.get("segms", [[]] * len(names))
        masks = [np.ones((14, 14), np.float32)] + [make_mask(14, meta["boxes"][j], segms[j]) for j in dets]
        out["segments"] = torch.zeros(NUM_MAX_BOXES, 14, 14)
        out["segments"][:n] = torch.from_numpy(np.stack(masks[:n]))
    return out


# ---------------------------------------------------------------------------------------------------- datasets
@dataclass
class DataPaths:
    """Where annotations, VCR metadata and feature pickles live (config.py constants made options, spec 2.1)."""

    data_dir: Path
    images_dir: Path
    features_dir: Path
    trust: bool = False  # --trust_checkpoint: full unpickling of feature pickles and dataset caches

    @classmethod
    def resolve(cls, data_dir: str, images_dir: str | None = None, features_dir: str | None = None,
                trust: bool = False) -> "DataPaths":
        """Options first, then VCR_IMAGES_DIR / VCR_FEATURES_DIR, then <data_dir>/vcr1images and <data_dir>/features."""
        d = resolve_data_dir(data_dir)
        images = images_dir or os.environ.get("VCR_IMAGES_DIR") or str(d / "vcr1images")
        feats = features_dir or os.environ.get("VCR_FEATURES_DIR") or str(d / "features")
        return cls(d, Path(images), Path(feats), trust)


def tokenizer_fingerprint(tokenizer: VisualCometTokenizer) -> str:
    """Short hash of the vocabulary and merges (part of every cache key, pitfall 18)."""
    h = hashlib.sha1(json.dumps([sorted(tokenizer.encoder.items()), tokenizer.merges]).encode())
    return h.hexdigest()[:10]


def cache_path(cache_dir: Path, kind: str, settings: dict[str, Any], files: list[Path], postfix: str | None) -> Path:
    """Cache file named like the original, plus a hash of every setting and input file that changes it."""
    stat = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = hashlib.sha1(json.dumps([settings, stat], sort_keys=True, default=str).encode()).hexdigest()[:10]
    name = (f"cached_lm_max_seq_len_{settings['max_seq_len']}_mode_{settings['mode']}_include_text_"
            f"{str(settings['include_text']).lower()}" + (f"_{postfix}" if postfix else "") + f"{kind}_{key}")
    return cache_dir / name


def cached(path: Path, build: Callable[[], Any], overwrite: bool = False, trust: bool = False) -> Any:
    """Load ``path`` if present (and not ``overwrite``) with the restricted unpickler, else build and pickle it."""
    if path.is_file() and not overwrite:
        return load_pickle(path, trust=trust)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)  # --cache_dir is created (pitfall 19)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(value, f)
    os.replace(tmp, path)
    return value


class VCGDataset(Dataset):
    """Tokenised records of one split with their per-item visual tensors (``VCGDataset`` + ``VCGLoader``)."""

    def __init__(self, records: list[dict[str, Any]], examples: list[list[int]], labels: list[list[int]] | None,
                 tokenizer: VisualCometTokenizer, paths: DataPaths, include_image: bool = True,
                 use_all_dets: bool = False, feature_dim: int | None = None):
        self.records, self.examples, self.labels = records, examples, labels
        self.tokenizer, self.paths = tokenizer, paths
        self.include_image, self.use_all_dets, self.feature_dim = include_image, use_all_dets, feature_dim

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"input_ids": torch.tensor(self.examples[i], dtype=torch.long), "index": torch.tensor(i)}
        if self.labels is not None:
            item["labels"] = torch.tensor(self.labels[i], dtype=torch.long)
        if self.include_image:
            item.update(visual_inputs(self.records[i], self.tokenizer, self.paths.images_dir, self.paths.features_dir,
                                      self.use_all_dets, trust=self.paths.trust, feature_dim=self.feature_dim))
        return item


def build_finetune_data(paths: DataPaths, tokenizer: VisualCometTokenizer, max_seq_len: int, mode: str = "inference",
                        include_text: bool = True, cache_dir: str | None = None, cache_postfix: str | None = None,
                        overwrite_cache: bool = False, splits: tuple[str, ...] = ("train", "val"),
                        layout: Layout | None = None) -> tuple[Layout, dict[str, tuple]]:
    """Tokenise the train/val per-inference records (cached); segment lengths come from train unless given."""
    if mode == "all" and not include_text:
        raise InputError(paths.data_dir, "--mode all cannot be combined with --no_text (pitfall 20)")
    files = split_files(paths.data_dir)
    settings = {"max_seq_len": max_seq_len, "mode": mode, "include_text": include_text,
                "tokenizer": tokenizer_fingerprint(tokenizer), "splits": list(splits),
                "layout": None if layout is None else [layout.max_event, layout.max_place, layout.max_inference]}
    path = cache_path(Path(cache_dir) if cache_dir else paths.data_dir, "", settings, [files[s] for s in files],
                      cache_postfix)

    def build():
        high = sum(1 for f in files.values() for ann in load_annotations(f) for tok in
                   " ".join([ann["event"]] + [x for r in RELATIONS for x in ann.get(r) or []]).split()
                   if tok.isdigit() and int(tok) >= NUM_PERSON_TAGS)
        if high:  # spec 8, issue #3: such ids become plain text, not person tags
            log.warning("%d person numbers >= %d in the annotations are not person tags (BPE-split as text)",
                        high, NUM_PERSON_TAGS)
        need_train = layout is None or "train" in splits
        train_records = finetune_records(load_annotations(files["train"], "train")) if need_train else []
        if need_train and not train_records:
            raise InputError(files["train"], "no inference sentences to train on (empty annotation list or no "
                                             "intent/before/after entries)")
        lay = layout
        if lay is None:
            e, p, i = segment_lengths(train_records, tokenizer)
            lay = Layout(e, p, i, max_seq_len)
        data = {}
        for s in splits:
            recs = train_records if s == "train" else finetune_records(load_annotations(files[s], s))
            if not recs:
                raise InputError(files[s], "no inference sentences to train or evaluate on (empty annotation list "
                                           "or no intent/before/after entries)")
            enc = [encode_record(r, tokenizer, lay, mode, include_text) for r in recs]
            data[s] = ([e for e, _ in enc], [lab for _, lab in enc], recs)
        return {"num_max_boxes": NUM_MAX_BOXES, "max_image": MAX_IMAGE, "max_event": lay.max_event,
                "max_place": lay.max_place, "max_inference": lay.max_inference, "max_seq_len": max_seq_len,
                "data": data}

    cache = cached(path, build, overwrite_cache, paths.trust)
    check_cache(path, cache, splits, labelled=True)
    lay = Layout(cache["max_event"], cache["max_place"], cache["max_inference"], max_seq_len)
    return lay, cache["data"]


def build_generation_data(paths: DataPaths, tokenizer: VisualCometTokenizer, layout: Layout, split: str,
                          include_text: bool = True, cache_dir: str | None = None, cache_postfix: str | None = None,
                          overwrite_cache: bool = False) -> tuple[list[list[int]], list[dict[str, Any]]]:
    """Generation prompts (cut after the relation token) and records for ``split`` (cache keyed by E/P/I too)."""
    files = split_files(paths.data_dir)
    settings = {"max_seq_len": layout.max_seq_len, "mode": "inference", "include_text": include_text,
                "tokenizer": tokenizer_fingerprint(tokenizer), "split": split,
                "layout": [layout.max_event, layout.max_place, layout.max_inference]}
    path = cache_path(Path(cache_dir) if cache_dir else paths.data_dir, "_generation", settings, [files[split]],
                      cache_postfix)

    def build() -> tuple[list[list[int]], list[dict[str, Any]]]:
        """Encode the prompts (runs only on a cache miss)."""
        recs = generation_records(load_annotations(files[split], split))
        if not recs:
            raise InputError(files[split], "no annotations to generate for (empty list)")
        return [encode_record(r, tokenizer, layout, include_text=include_text, generation=True)[0] for r in recs], recs

    cache = cached(path, build, overwrite_cache, paths.trust)
    check_cache(path, {"data": {split: cache}}, (split,), labelled=False)
    return cache


def check_cache(path: Path, cache: Any, splits: tuple[str, ...], labelled: bool) -> None:
    """A dataset cache read back must hold, per split, equally long lists of examples (, labels) and records."""
    header = ("max_event", "max_place", "max_inference") if labelled else ()
    if not isinstance(cache, dict) or not isinstance(cache.get("data"), dict) or any(
            not isinstance(cache.get(k), int) for k in header):
        raise InputError(path, "not a dataset cache of this version; rerun with --overwrite_cache")
    for split in splits:
        entry = cache["data"].get(split)
        width = 3 if labelled else 2
        if not (isinstance(entry, (tuple, list)) and len(entry) == width and all(isinstance(x, list) for x in entry)
                and len({len(x) for x in entry}) == 1 and entry[0]):
            raise InputError(path, "not a dataset cache of this version (or an empty one); rerun with "
                                   "--overwrite_cache", field=split)


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack per-example tensors into a batch."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
