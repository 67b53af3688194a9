"""Caption preprocessing (prepro_labels / prepro_ngrams, spec 2.1-2.2) and token-id <-> text helpers."""
from __future__ import annotations

import json
import os
import pickle
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from common.errors import InputError

NGRAM_N = 4


def load_karpathy(path: str | os.PathLike) -> dict:
    """Read dataset_coco.json and check the fields the scripts use (spec 3.1)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found (the Karpathy split json, dataset_coco.json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(path, "expected an object with an 'images' list", field="images")
    for i, img in enumerate(data["images"]):
        for key in ("split", "cocoid", "sentences"):
            if key not in img:
                raise InputError(path, f"image entry lacks '{key}'", record=i, field=key)
        for j, sent in enumerate(img["sentences"]):
            if not isinstance(sent, dict) or not isinstance(sent.get("tokens"), list):
                raise InputError(path, f"sentence {j} has no 'tokens' list", record=i, field="sentences")
    return data


def build_vocab(images: list[dict], count_thr: int, verbose: bool = True) -> list[str]:
    """Words with count > threshold in first-occurrence order, plus 'UNK' last if anything was dropped (spec 2.1)."""
    counts: Counter = Counter()
    for img in images:
        for sent in img["sentences"]:
            counts.update(sent["tokens"])
    if verbose:
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:20]
        print("top words and their counts:")
        print("\n".join(map(str, [(c, w) for w, c in top])))
    total_words = sum(counts.values())
    bad = [w for w, n in counts.items() if n <= count_thr]
    vocab = [w for w, n in counts.items() if n > count_thr]
    bad_count = sum(counts[w] for w in bad)
    if verbose:
        print(f"total words: {total_words}")
        print(f"number of bad words: {len(bad)}/{len(counts)} = {len(bad) * 100.0 / max(len(counts), 1):.2f}%")
        print(f"number of words in vocab would be {len(vocab)}")
        print(f"number of UNKs: {bad_count}/{total_words} = {bad_count * 100.0 / max(total_words, 1):.2f}%")
        lengths = Counter(len(s["tokens"]) for img in images for s in img["sentences"])
        max_len = max(lengths) if lengths else 0
        print(f"max length sentence in raw data: {max_len}")
        print("sentence length distribution (count, number of words):")
        total = sum(lengths.values())
        for i in range(max_len + 1):
            print(f"{i:2d}: {lengths.get(i, 0):10d}   {lengths.get(i, 0) * 100.0 / max(total, 1):f}%")
    if bad_count > 0:
        if verbose:
            print("inserting the special UNK token")
        vocab.append("UNK")
    return vocab


def encode_captions(images: list[dict], max_length: int, wtoi: dict[str, int]) -> dict[str, np.ndarray]:
    """Label arrays of spec 3.3: labels (M, T) uint32, 1-based inclusive start/end per image, lengths."""
    rows, starts, ends, lengths = [], [], [], []
    counter = 1
    unk = wtoi.get("UNK")
    for i, img in enumerate(images):
        n = len(img["sentences"])
        if n == 0:
            raise InputError("dataset_coco.json", "image has no sentences", record=i, field="sentences")
        for sent in img["sentences"]:
            ids = [wtoi.get(w, unk) for w in sent["tokens"][:max_length]]
            if any(x is None for x in ids):
                raise InputError("dataset_coco.json", "word missing from the vocabulary", record=i, field="tokens")
            row = np.zeros(max_length, dtype=np.uint32)
            row[: len(ids)] = ids
            rows.append(row)
            lengths.append(len(ids))
        starts.append(counter)
        ends.append(counter + n - 1)
        counter += n
    labels = np.stack(rows) if rows else np.zeros((0, max_length), dtype=np.uint32)
    if (np.asarray(lengths) <= 0).any():
        raise InputError("dataset_coco.json", "a caption has no tokens", field="tokens")
    return {"labels": labels, "label_start_ix": np.asarray(starts, dtype=np.uint32),
            "label_end_ix": np.asarray(ends, dtype=np.uint32), "label_length": np.asarray(lengths, dtype=np.uint32)}


def prepro_labels(input_json: str, output_json: str, output_h5: str, max_length: int = 16,
                  word_count_threshold: int = 5, images_root: str = "", verbose: bool = True) -> dict:
    """Write <output_json> (vocab + image list) and <output_h5>_label.h5; return the json content."""
    images = load_karpathy(input_json)["images"]
    vocab = build_vocab(images, word_count_threshold, verbose)
    itow = {i + 1: w for i, w in enumerate(vocab)}
    wtoi = {w: i + 1 for i, w in enumerate(vocab)}
    arrays = encode_captions(images, max_length, wtoi)
    h5_path = f"{output_h5}_label.h5"
    for path in (output_json, h5_path):
        if Path(path).exists():
            raise InputError(path, "already exists; remove it first (results are never overwritten silently)")
    Path(h5_path).parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(h5_path, "w") as f:
        for key, arr in arrays.items():
            f.create_dataset(key, dtype="uint32", data=arr)
    if verbose:
        print(f"encoded captions to array of size {arrays['labels'].shape}")
    out = {"ix_to_word": {str(k): v for k, v in itow.items()}, "images": []}
    for img in images:
        entry = {"split": img["split"], "file_path": os.path.join(img.get("filepath", ""), img.get("filename", "")),
                 "id": img["cocoid"]}
        if images_root:
            from PIL import Image  # only needed when image sizes are recorded

            with Image.open(os.path.join(images_root, img["filepath"], img["filename"])) as im:
                entry["width"], entry["height"] = im.size
        elif "width" in img and "height" in img:
            entry["width"], entry["height"] = img["width"], img["height"]
        out["images"].append(entry)
    Path(output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(output_json).write_text(json.dumps(out))
    if verbose:
        print(f"wrote {output_json}")
    return out


def precook(words: list[str], n: int = NGRAM_N) -> Counter:
    """Counts of every 1..n-gram (tuples of strings) of a token list."""
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i: i + k])] += 1
    return counts


def document_frequency(refs_per_image: Iterable[list[list[str]]]) -> defaultdict:
    """For every n-gram, the number of images whose reference set contains it."""
    df: defaultdict = defaultdict(float)
    for refs in refs_per_image:
        for ngram in set(ng for ref in refs for ng in precook(ref)):
            df[ngram] += 1
    return df


def prepro_ngrams(input_json: str, dict_json: str, output_pkl: str, split: str = "all",
                  verbose: bool = True) -> dict[str, Any]:
    """Write <output_pkl>-words.p and <output_pkl>-idxs.p (spec 2.2, 3.4); full-length refs + '<eos>' (spec 9.15)."""
    images = load_karpathy(input_json)["images"]
    itow = load_json_vocab(dict_json)
    wtoi = {w: str(i) for i, w in itow.items()}
    wtoi["<eos>"] = "0"
    splits = {"train": {"train", "restval"}, "val": {"val"}, "test": {"test"}, "all": None}
    if split not in splits:
        raise InputError(input_json, f"--split must be one of {sorted(splits)}, got {split!r}", field="split")
    words_refs, idx_refs = [], []
    for img in images:
        if splits[split] is not None and img["split"] not in splits[split]:
            continue
        words, idxs = [], []
        for sent in img["sentences"]:
            toks = [w if w in wtoi else "UNK" for w in sent["tokens"]] + ["<eos>"]
            if "UNK" in toks and "UNK" not in wtoi:
                raise InputError(dict_json, "a reference word is missing from the vocabulary and it has no UNK",
                                 field="ix_to_word")
            words.append(toks)
            idxs.append([wtoi[w] for w in toks])
        words_refs.append(words)
        idx_refs.append(idxs)
    ref_len = len(idx_refs)
    if verbose:
        print(f"total imgs: {ref_len}")
    results = {}
    for suffix, refs in (("words", words_refs), ("idxs", idx_refs)):
        path = f"{output_pkl}-{suffix}.p"
        if Path(path).exists():
            raise InputError(path, "already exists; remove it first (results are never overwritten silently)")
        payload = {"document_frequency": document_frequency(refs), "ref_len": ref_len}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        results[suffix] = payload
    return results


def load_json_vocab(path: str | os.PathLike) -> dict[int, str]:
    """ix_to_word of a cocotalk.json with int keys."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found (run scripts/prepro_labels.py first)")
    info = json.loads(path.read_text())
    if "ix_to_word" not in info:
        raise InputError(path, "has no 'ix_to_word' (expected the prepro_labels output)", field="ix_to_word")
    return {int(k): v for k, v in info["ix_to_word"].items()}


def decode_sequence(ix_to_word: dict[str, str], seq: Any) -> list[str]:
    """Token ids (N, T) -> captions, words joined by spaces up to the first 0."""
    out = []
    for row in np.asarray(seq).tolist():
        words = []
        for ix in row:
            if ix == 0:
                break
            words.append(ix_to_word[str(ix)])
        out.append(" ".join(words))
    return out


def reward_string(row: Any) -> str:
    """Token ids -> the CIDEr-D string: ids up to AND including the first 0 (spec 4.7)."""
    out = []
    for ix in np.asarray(row).tolist():
        out.append(str(ix))
        if ix == 0:
            break
    return " ".join(out)


def write_coco_annotations(dataset_json: str, out_path: str, splits: tuple[str, ...] = ("val", "test")) -> dict:
    """COCO captions annotation file (spec 3.7) from the raw sentences of the chosen splits (for synthetic data)."""
    images = load_karpathy(dataset_json)["images"]
    ann = {"info": {"description": "generated from " + os.path.basename(dataset_json)}, "licenses": [],
           "type": "captions", "images": [], "annotations": []}
    next_id = 1
    for img in images:
        if img["split"] not in splits:
            continue
        ann["images"].append({"id": img["cocoid"], "file_name": img.get("filename", "")})
        for sent in img["sentences"]:
            raw = sent.get("raw") or " ".join(sent["tokens"])
            ann["annotations"].append({"image_id": img["cocoid"], "id": sent.get("sentid", next_id), "caption": raw})
            next_id += 1
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps(ann))
    return ann
