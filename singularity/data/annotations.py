"""Annotation loading (spec 3.3/3.4), text cleaning (3.7) and the datasets of every task (3.8)."""
from __future__ import annotations

import json
import logging
import os
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, default_collate

from common.errors import InputError
from singularity.data.frames import read_frames, read_image

logger = logging.getLogger("singularity")


def pre_text(text: str) -> str:
    """Lowercase, drop ``,.'!?"()*#:;~``, ``-``/``/`` -> space, ``<person>`` -> person, squeeze spaces."""
    text = re.sub(r"([,.'!?\"()*#:;~])", "", text.lower())
    text = text.replace("-", " ").replace("/", " ").replace("<person>", "person")
    text = re.sub(r"\s{2,}", " ", text)
    return text.rstrip("\n").strip(" ")


def spec_media_type(spec) -> str:
    """``video`` iff the data spec has 3 entries and the third is ``video`` (spec 3.2)."""
    return "video" if len(spec) == 3 and spec[2] == "video" else "image"


def _check_str_or_list(value, file, i, field):
    if isinstance(value, str):
        return
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return
    raise InputError(file, f"expected a string or a non-empty list of strings, got {type(value).__name__}",
                     record=i, field=field)


def load_anno(spec, required: tuple[str, ...] = ()) -> list[dict]:
    """Records of ``[anno.json, media_root(, video)]`` with media joined to the root under ``image``.

    Video specs read ``video`` and fall back to ``image`` (pitfall 9.17 F); all other keys are kept.
    """
    if not isinstance(spec, (list, tuple)) or len(spec) not in (2, 3):
        raise InputError(str(spec), "a data spec is [anno.json, media_root] or [anno.json, media_root, video]")
    anno_path, media_root = str(spec[0]), str(spec[1])
    media_type = spec_media_type(spec)
    if not Path(anno_path).is_file():
        raise InputError(anno_path, "annotation file not found")
    try:
        records = json.loads(Path(anno_path).read_text())
    except json.JSONDecodeError as err:
        raise InputError(anno_path, f"not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(records, list):
        raise InputError(anno_path, f"expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise InputError(anno_path, "the annotation list is empty (nothing to train or evaluate on)")
    keys = ("video", "image") if media_type == "video" else ("image", "video")
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InputError(anno_path, "record is not a JSON object", record=i)
        key = next((k for k in keys if k in rec), None)
        if key is None:
            raise InputError(anno_path, f"missing media key (one of {list(keys)})", record=i, field=keys[0])
        _check_str_or_list(rec[key], anno_path, i, key)
        for field in required:
            if field not in rec:
                raise InputError(anno_path, "missing required key", record=i, field=field)
        rec = dict(rec)
        media = rec.pop(key)
        rec["image"] = ([os.path.join(media_root, m) for m in media] if isinstance(media, list)
                        else os.path.join(media_root, media))
        rec["_source"] = (anno_path, i)
        out.append(rec)
    return out


def load_media(path: str, media_type: str, num_frames: int, sample: str, reader: str, cache_size: int = 0) -> torch.Tensor:
    """uint8 (T, 3, H, W) clip (video) or (1, 3, H, W) image."""
    if media_type == "video":
        return read_frames(path, num_frames, sample=sample, reader=reader, cache_size=cache_size)[0]
    return read_image(path)


@dataclass
class Unreadable:
    """An evaluation item whose media could not be decoded (returned instead of the item, raised in the main
    process by ``checked_batches`` so that DataLoader workers do not turn it into a traceback)."""

    path: str
    file: str
    record: int | None
    field: str
    error: str
    hint: str = ("pass skip_unreadable_media=True to skip unreadable items and count them in the results file")

    def as_error(self) -> InputError:
        return InputError(self.file, f"cannot read {self.path} ({self.error}); {self.hint}",
                          record=self.record, field=self.field)


class UnreadableBatch(list):
    """A batch holding at least one ``Unreadable`` item."""


def media_collate(inner=None):
    """Collate that passes failures on: ``UnreadableBatch`` when an item failed, else ``inner`` (default_collate)."""
    inner = inner or default_collate

    def collate(batch):
        failed = [item for item in batch if isinstance(item, Unreadable)]
        return UnreadableBatch(failed) if failed else inner(batch)
    return collate


def checked_batches(loader):
    """Iterate a loader; an unreadable item is a one-line ``InputError`` raised here, in the main process (a
    DataLoader worker would turn it into a traceback); evaluation never replaces it (issue 11)."""
    for batch in loader:
        if isinstance(batch, UnreadableBatch):
            raise batch[0].as_error()
        yield batch


class _MediaMixin:
    media_type = "image"
    num_frames = 1
    sample = "rand"
    reader = "av"
    num_tries = 1
    transform = None
    cache_size = 0  # video_input.cache_decoded: decoded videos kept in memory (small synthetic sets)
    skipped: list[str] = []  # unreadable items dropped with skip_unreadable_media=True

    def source_of(self, index: int) -> tuple[str, int | None]:
        """(annotation file, record number) of item ``index``."""
        return "annotation", None

    def load(self, index: int, path: str):
        """Transformed media; train datasets retry a random other record (num_tries, spec 3.5), eval datasets
        return an ``Unreadable`` (the original raised; nothing is substituted)."""
        for attempt in range(self.num_tries):
            try:
                clip = load_media(path, self.media_type, self.num_frames, self.sample, self.reader, self.cache_size)
                return self.transform(clip), index
            except Exception as err:  # decoding errors of any library
                text = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
                if self.num_tries == 1:
                    file, record = self.source_of(index)
                    return Unreadable(path, file, record, self.media_type, text), index
                if attempt + 1 >= self.num_tries:
                    file, record = self.source_of(index)
                    return Unreadable(path, file, record, self.media_type, text,
                                      hint=f"the last of {self.num_tries} records tried in a row (training retries "
                                           "random other records, spec 3.5)"), index
                # training keeps the original's resample-on-error (spec 3.5), logged
                logger.warning("failed to read %s (%s); training on a random other record instead", path, text)
                index = random.randrange(len(self))
                path = self.media_path(index)
        raise RuntimeError("unreachable")

    def unreadable_items(self) -> list[Unreadable]:
        """Probe every item's media in this process (``skip_unreadable_media``); the ones that fail."""
        failed = []
        for index in range(len(self)):
            out, _ = self.load(index, self.media_path(index))
            if isinstance(out, Unreadable):
                failed.append(out)
        return failed


class ImageTextTrainDataset(_MediaMixin, Dataset):
    """Pre-training / retrieval train pairs: item = (media (T,3,H,W), caption, match_id)."""

    def __init__(self, specs, transform, video_cfg: dict | None = None, has_multi_vision_gt: bool = False,
                 is_paragraph_retrieval: bool = False, num_tries: int = 3):
        specs = [specs] if isinstance(specs[0], str) else list(specs)
        types = {spec_media_type(s) for s in specs}
        if len(types) != 1:
            raise InputError(str(specs), "one dataset must have a single media type")
        self.media_type = types.pop()
        video_cfg = video_cfg or {}
        self.num_frames = int(video_cfg.get("num_frames", 1))
        self.sample = str(video_cfg.get("sample_type", "rand"))
        self.reader = str(video_cfg.get("reader", "av"))
        self.cache_size = int(video_cfg.get("cache_decoded", 0) or 0)
        self.transform, self.num_tries = transform, num_tries
        self.anno: list[dict] = []
        for spec in specs:
            for rec in load_anno(spec, required=("caption",)):
                _check_str_or_list(rec["caption"], rec["_source"][0], rec["_source"][1], "caption")
                captions = rec["caption"] if isinstance(rec["caption"], list) else [rec["caption"]]
                medias = rec["image"] if isinstance(rec["image"], list) else [rec["image"]]
                if is_paragraph_retrieval:
                    captions = [" ".join(captions)]
                for media in medias:  # lists are exploded into pairs (pitfall 9.17 F)
                    for cap in captions:
                        self.anno.append({"image": media, "caption": cap, "_source": rec["_source"]})
        ids: dict[str, int] = {}
        for rec in self.anno:
            key = rec["caption"] if has_multi_vision_gt else os.path.basename(rec["image"])
            rec["match_id"] = ids.setdefault(key, len(ids))

    def __len__(self) -> int:
        return len(self.anno)

    def media_path(self, index: int) -> str:
        return self.anno[index]["image"]

    def source_of(self, index: int) -> tuple[str, int | None]:
        return self.anno[index]["_source"]

    def __getitem__(self, index: int):
        media, index = self.load(index, self.media_path(index))
        if isinstance(media, Unreadable):
            return media
        rec = self.anno[index]
        return media, pre_text(rec["caption"]), rec["match_id"]


class RetrievalEvalDataset(_MediaMixin, Dataset):
    """Eval set: ``text``, ``image``, ``txt2img``, ``img2txt``; item = (media, index)."""

    def __init__(self, spec, transform, video_cfg: dict | None = None, has_multi_vision_gt: bool = False,
                 is_paragraph_retrieval: bool = False):
        self.media_type = spec_media_type(spec)
        video_cfg = video_cfg or {}
        self.num_frames = int(video_cfg.get("num_frames_test", 4))
        self.sample = str(video_cfg.get("sample_type_test", "middle"))
        self.reader = str(video_cfg.get("reader", "av"))
        self.cache_size = int(video_cfg.get("cache_decoded", 0) or 0)
        self.transform = transform
        self.has_multi_vision_gt = has_multi_vision_gt
        self.is_paragraph_retrieval = is_paragraph_retrieval
        self.records = load_anno(spec, required=("caption",))
        for rec in self.records:
            file, i = rec["_source"]
            _check_str_or_list(rec["caption"], file, i, "caption")
            if has_multi_vision_gt and not isinstance(rec["caption"], str):
                raise InputError(file, "multi-vision-GT records have one caption string", record=i, field="caption")
            if not has_multi_vision_gt and isinstance(rec["image"], list):
                raise InputError(file, "a list of media needs has_multi_vision_gt=True", record=i, field="video")
        self._index()

    def _index(self) -> None:
        """``text``, ``image``, ``txt2img``, ``img2txt`` (and each image's record) from ``self.records``."""
        self.text, self.image, self.txt2img, self.img2txt, self.image_source = [], [], {}, {}, []
        for rec in self.records:
            if self.has_multi_vision_gt:
                tid = len(self.text)
                self.text.append(pre_text(rec["caption"]))
                self.txt2img[tid] = []
                for media in rec["image"] if isinstance(rec["image"], list) else [rec["image"]]:
                    iid = len(self.image)
                    self.image.append(media)
                    self.image_source.append(rec["_source"])
                    self.txt2img[tid].append(iid)
                    self.img2txt[iid] = tid
                continue
            iid = len(self.image)
            self.image.append(rec["image"])
            self.image_source.append(rec["_source"])
            captions = rec["caption"] if isinstance(rec["caption"], list) else [rec["caption"]]
            if self.is_paragraph_retrieval:
                captions = [" ".join(captions)]
            self.img2txt[iid] = []
            for cap in captions:
                tid = len(self.text)
                self.text.append(pre_text(cap))
                self.txt2img[tid] = iid
                self.img2txt[iid].append(tid)

    def drop_media(self, paths: set[str]) -> None:
        """Remove unreadable media, and the texts left without a ground-truth item (``skip_unreadable_media``)."""
        kept = []
        for rec in self.records:
            if isinstance(rec["image"], list):
                media = [m for m in rec["image"] if m not in paths]
                if media:
                    kept.append({**rec, "image": media})
            elif rec["image"] not in paths:
                kept.append(rec)
        self.records = kept
        self._index()

    def source_of(self, index: int) -> tuple[str, int | None]:
        return self.image_source[index]

    def __len__(self) -> int:
        return len(self.image)

    def media_path(self, index: int) -> str:
        return self.image[index]

    def __getitem__(self, index: int):
        media, index = self.load(index, self.media_path(index))
        return media if isinstance(media, Unreadable) else (media, index)


class MultipleChoiceDataset(_MediaMixin, Dataset):
    """MSRVTT-MC: item = (media, [5 cleaned options], answer int, raw record)."""

    def __init__(self, spec, transform, video_cfg: dict | None = None):
        self.media_type = spec_media_type(spec)
        video_cfg = video_cfg or {}
        self.num_frames = int(video_cfg.get("num_frames_test", 12))
        self.sample = str(video_cfg.get("sample_type_test", "middle"))
        self.reader = str(video_cfg.get("reader", "av"))
        self.cache_size = int(video_cfg.get("cache_decoded", 0) or 0)
        self.transform = transform
        self.anno = load_anno(spec, required=("caption", "answer"))
        for rec in self.anno:
            file, i = rec["_source"]
            if not (isinstance(rec["caption"], list) and len(rec["caption"]) >= 2
                    and all(isinstance(c, str) for c in rec["caption"])):
                raise InputError(file, "expected a list of option strings", record=i, field="caption")
            if not isinstance(rec["answer"], int) or not 0 <= rec["answer"] < len(rec["caption"]):
                raise InputError(file, "expected the int index of the correct option", record=i, field="answer")

    def __len__(self) -> int:
        return len(self.anno)

    def media_path(self, index: int) -> str:
        return self.anno[index]["image"]

    def source_of(self, index: int) -> tuple[str, int | None]:
        return self.anno[index]["_source"]

    def drop_media(self, paths: set[str]) -> None:
        """Remove the records whose media is unreadable (``skip_unreadable_media``)."""
        self.anno = [rec for rec in self.anno if rec["image"] not in paths]

    def __getitem__(self, index: int):
        media, index = self.load(index, self.media_path(index))
        if isinstance(media, Unreadable):
            return media
        rec = self.anno[index]
        raw = {k: v for k, v in rec.items() if k != "_source"}
        return media, [pre_text(c) for c in rec["caption"]], rec["answer"], raw


def answer_weights(answer, eos: str = "[SEP]") -> tuple[list[str], list[float]]:
    """Distinct answers suffixed `` [SEP]`` and weights count/total (single string -> weight 1)."""
    answers = answer if isinstance(answer, list) else [answer]
    counts = Counter(answers)
    total = len(answers)
    return [f"{a} {eos}" for a in counts], [c / total for c in counts.values()]


class QADataset(_MediaMixin, Dataset):
    """QA train item = (media, question, answers, weights); eval item = (media, question, question_id)."""

    def __init__(self, specs, transform, video_cfg: dict | None = None, train: bool = True, eos: str = "[SEP]",
                 num_tries: int | None = None):
        specs = [specs] if isinstance(specs[0], str) else list(specs)
        types = {spec_media_type(s) for s in specs}
        if len(types) != 1:
            raise InputError(str(specs), "one QA dataset must have a single media type")
        self.media_type = types.pop()
        video_cfg = video_cfg or {}
        self.num_frames = int(video_cfg.get("num_frames" if train else "num_frames_test", 1))
        self.sample = str(video_cfg.get("sample_type" if train else "sample_type_test", "rand"))
        self.reader = str(video_cfg.get("reader", "av"))
        self.cache_size = int(video_cfg.get("cache_decoded", 0) or 0)
        self.transform, self.train, self.eos = transform, train, eos
        self.num_tries = num_tries if num_tries is not None else (3 if train else 1)  # spec 9.27 K
        required = ("question", "answer") if train else ("question", "question_id")
        self.anno = []
        for spec in specs:
            for rec in load_anno(spec, required=required):
                file, i = rec["_source"]
                if not isinstance(rec["question"], str):
                    raise InputError(file, "expected a string", record=i, field="question")
                if "answer" in rec:
                    _check_str_or_list(rec["answer"], file, i, "answer")
                self.anno.append(rec)

    def __len__(self) -> int:
        return len(self.anno)

    def media_path(self, index: int) -> str:
        return self.anno[index]["image"]

    def source_of(self, index: int) -> tuple[str, int | None]:
        return self.anno[index]["_source"]

    def drop_media(self, paths: set[str]) -> None:
        """Remove the questions whose media is unreadable (``skip_unreadable_media``)."""
        self.anno = [rec for rec in self.anno if rec["image"] not in paths]

    def __getitem__(self, index: int):
        media, index = self.load(index, self.media_path(index))
        if isinstance(media, Unreadable):
            return media
        rec = self.anno[index]
        question = pre_text(rec["question"])
        if self.train:
            answers, weights = answer_weights(rec["answer"], self.eos)
            return media, question, answers, weights
        return media, question, rec["question_id"]


def qa_collate(batch):
    """(media stacked, questions, answers flattened, weights FloatTensor, n per question)."""
    media, questions, answers, weights, n = [], [], [], [], []
    for m, q, a, w in batch:
        media.append(m)
        questions.append(q)
        answers += a
        weights += w
        n.append(len(a))
    return torch.stack(media), questions, answers, torch.tensor(weights, dtype=torch.float), n


def mc_collate(batch):
    """(media stacked, option lists, answers LongTensor, raw records)."""
    media, options, answers, raws = zip(*batch)
    return torch.stack(media), list(options), torch.tensor(answers, dtype=torch.long), list(raws)
