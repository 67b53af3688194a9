"""Retrieval evaluation (ITC top-k, ITM re-rank, frame ensembles; spec 5.6), MC (5.7) and QA metrics (5.8)."""
from __future__ import annotations

import logging
import re

import numpy as np
import torch

from common.distributed import get_rank, get_world_size, is_distributed, progress
from singularity.data.annotations import checked_batches
from singularity.models.config_paths import cfg_get
from singularity.models.vqa import aggregate_frames

logger = logging.getLogger("singularity")


@torch.no_grad()
def extract_text_feats(model, texts: list[str], tokenizer, max_len: int, device, chunk: int = 256):
    """(text hidden (Nt, Lt, d), attention mask (Nt, Lt)) in chunks of 256."""
    feats, atts = [], []
    for i in range(0, len(texts), chunk):
        tok = tokenizer(texts[i:i + chunk], max_len)
        tok = {k: v.to(device) for k, v in tok.items()}
        hidden, _ = model.encode_text(tok)
        feats.append(hidden)
        atts.append(tok["attention_mask"])
    return torch.cat(feats), torch.cat(atts)


@torch.no_grad()
def extract_vision_feats(model, loader, device, ensemble: str, offload: bool, autocast):
    """Visual memories (Ni, 1, T*L, d) for ``concat`` or (Ni, T, L, d) for late fusion, and pooled (Ni, T, d)."""
    feats, pooled_all = [], []
    for media, _ in progress(checked_batches(loader), total=len(loader), desc="vision features", leave=False):
        media = media.to(device, non_blocking=True)
        with autocast():
            if ensemble == "concat":
                tokens, pooled = model.encode_image(media)
                tokens = tokens.unsqueeze(1)
            else:
                tokens, pooled = model._encode_image(media)
        store = "cpu" if offload else device
        feats.append(tokens.to(store))
        pooled_all.append(pooled.to(store))
    return torch.cat(feats), torch.cat(pooled_all)


def itm_scores(model, text_feat, text_att, image_feat, device, ensemble: str) -> torch.Tensor:
    """ITM logit[:, 1] for aligned (text, image-memory) rows; late fusion aggregates per-frame logits."""
    image_feat = image_feat.to(device)
    if ensemble == "concat":
        return model.itm_logits(text_feat, text_att, image_feat[:, 0])[:, 1]
    per_frame = torch.stack([model.itm_logits(text_feat, text_att, image_feat[:, t])[:, 1]
                             for t in range(image_feat.shape[1])], 1)
    return aggregate_frames(per_frame, ensemble)


@torch.no_grad()
def rerank(model, sim: torch.Tensor, queries, k: int, rows: int, text_feats, text_atts, image_feats, device,
           ensemble: str, autocast, fill: torch.dtype = torch.float32, queries_are_images: bool = True) -> torch.Tensor:
    """ITM scores of each query's top-k candidates by ``sim`` (rows = queries); -100 elsewhere (spec 5.6 step 4).

    ``rows`` = (query, candidate) pairs per ITM forward: 0 runs one query's k candidates per forward, as the
    original; larger values batch the top-k of several queries into one forward (same scores up to float
    rounding, far fewer kernel launches for small k or large GPUs).
    """
    n_query, n_cand = sim.shape
    out = torch.full((n_query, n_cand), -100.0, dtype=fill, device=device)
    queries = list(queries)
    if not queries:
        return out
    kk = min(k, n_cand)
    query_ids = torch.as_tensor(queries, dtype=torch.long, device=sim.device)
    top = sim[query_ids].topk(kk, dim=1).indices  # (Q, kk)
    pair_query = query_ids.repeat_interleave(kk).cpu()
    pair_cand = top.reshape(-1).cpu()
    chunk = kk if rows <= 0 else max(1, rows)
    bar = progress(total=len(pair_query), desc="re-rank i2t" if queries_are_images else "re-rank t2i", leave=False)
    for start in range(0, len(pair_query), chunk):
        q, c = pair_query[start:start + chunk], pair_cand[start:start + chunk]
        text_idx, image_idx = (c, q) if queries_are_images else (q, c)
        image_idx = image_idx if image_feats.device.type == "cpu" else image_idx.to(image_feats.device)
        text_idx = text_idx.to(text_feats.device)
        with autocast():
            score = itm_scores(model, text_feats[text_idx], text_atts[text_idx], image_feats[image_idx], device,
                               ensemble)
        out[q.to(device), c.to(device)] = score.to(fill)
        bar.update(len(q))
    bar.close()
    return out


@torch.no_grad()
def evaluation(model, loader, tokenizer, device, config, autocast, media_type: str = "video"):
    """Score matrices: (i2t re-ranked, t2i re-ranked, i2t ITC, t2i ITC) as numpy arrays (spec 5.6)."""
    ensemble = str(cfg_get(config, "eval_frame_ensemble", "concat"))
    if ensemble != "concat" and int(cfg_get(config, "video_input.num_frames", 1)) != 1:
        raise ValueError("eval_frame_ensemble mean/max/lse needs video_input.num_frames == 1 (spec 4.6)")
    if cfg_get(config, "eval_x_only", False):
        raise ValueError("eval_x_only=True is not supported (it crashed in the original, pitfall 9.18)")
    model.eval()
    max_len = cfg_get(config, "max_txt_l", 32)
    if not isinstance(max_len, int):
        max_len = int(max_len[media_type])  # pre-training: per-media dict (pitfall 9.23 K)
    texts = loader.dataset.text
    text_feats, text_atts = extract_text_feats(model, texts, tokenizer, max_len, device)
    image_feats, pooled = extract_vision_feats(model, loader, device, ensemble,
                                               bool(cfg_get(config, "eval_offload", False)), autocast)
    with autocast():
        i2t, _ = model.get_sim(pooled.to(device).float(), text_feats[:, 0].float(), 1.0)
    i2t = i2t.float()
    t2i = i2t.t()
    n_img, n_txt = i2t.shape
    k = int(cfg_get(config, "k_test", 128))
    fill = torch.float16 if cfg_get(config, "fp16", False) and device.type == "cuda" else torch.float32
    rows = int(cfg_get(config, "itm_batch_size", 0))
    world, rank = get_world_size(), get_rank()
    step = n_img // world + 1
    i2t_x = rerank(model, i2t, range(rank * step, min(n_img, (rank + 1) * step)), k, rows, text_feats, text_atts,
                   image_feats, device, ensemble, autocast, fill, queries_are_images=True)
    step = n_txt // world + 1
    t2i_x = rerank(model, t2i, range(rank * step, min(n_txt, (rank + 1) * step)), k, rows, text_feats, text_atts,
                   image_feats, device, ensemble, autocast, fill, queries_are_images=False)
    if is_distributed():
        # offsets of -100 per non-owned row are uniform per row: rankings unaffected (spec 5.6)
        torch.distributed.all_reduce(i2t_x)
        torch.distributed.all_reduce(t2i_x)
    return (i2t_x.float().cpu().numpy(), t2i_x.float().cpu().numpy(), i2t.cpu().numpy(), t2i.cpu().numpy())


def itm_eval(scores_i2t: np.ndarray, scores_t2i: np.ndarray, txt2img: dict, img2txt: dict) -> dict[str, float]:
    """R@1/5/10 both directions with multi-GT (best GT rank), percent rounded to 2 decimals (spec 5.6)."""
    ranks = np.zeros(scores_i2t.shape[0])
    for i, score in enumerate(scores_i2t):
        inds = np.argsort(score)[::-1]
        gt = img2txt[i] if isinstance(img2txt[i], list) else [img2txt[i]]
        ranks[i] = min(np.where(inds == g)[0][0] for g in gt)
    tr1, tr5, tr10 = (100.0 * np.mean(ranks < k) for k in (1, 5, 10))
    ranks_t = np.zeros(scores_t2i.shape[0])
    for j, score in enumerate(scores_t2i):
        inds = np.argsort(score)[::-1]
        gt = txt2img[j] if isinstance(txt2img[j], list) else [txt2img[j]]
        ranks_t[j] = min(np.where(inds == g)[0][0] for g in gt)
    ir1, ir5, ir10 = (100.0 * np.mean(ranks_t < k) for k in (1, 5, 10))
    tr_mean, ir_mean = (tr1 + tr5 + tr10) / 3, (ir1 + ir5 + ir10) / 3
    res = {"txt_r1": tr1, "txt_r5": tr5, "txt_r10": tr10, "txt_r_mean": tr_mean,
           "img_r1": ir1, "img_r5": ir5, "img_r10": ir10, "img_r_mean": ir_mean, "r_mean": (tr_mean + ir_mean) / 2}
    return {k: round(float(v), 2) for k, v in res.items()}


@torch.no_grad()
def evaluate_mc(model, loader, tokenizer, device, config, autocast) -> tuple[float, list[dict]]:
    """Multiple choice by argmax ITM logit over the options; (accuracy %, per-video predictions) (spec 5.7)."""
    model.eval()
    ensemble = str(cfg_get(config, "eval_frame_ensemble", "concat"))
    max_len = int(cfg_get(config, "max_txt_l", 32)) if isinstance(cfg_get(config, "max_txt_l", 32), int) else 32
    predictions, correct = [], 0
    for media, options, answers, raws in progress(checked_batches(loader), total=len(loader), desc="MC", leave=False):
        media = media.to(device)
        n_opt = len(options[0])
        flat = [o for opts in options for o in opts]
        tok = {k: v.to(device) for k, v in tokenizer(flat, max_len).items()}
        with autocast():
            hidden, _ = model.encode_text(tok)
            if ensemble == "concat":
                tokens, _ = model.encode_image(media)
                mem = tokens.repeat_interleave(n_opt, 0).unsqueeze(1)
            else:
                tokens, _ = model._encode_image(media)
                mem = tokens.repeat_interleave(n_opt, 0)
            frame_scores = None
            if ensemble != "concat":
                frame_scores = torch.stack([model.itm_logits(hidden, tok["attention_mask"], mem[:, t])[:, 1]
                                            for t in range(mem.shape[1])], 1).view(len(options), n_opt, -1)
            scores = itm_scores(model, hidden, tok["attention_mask"], mem, device, ensemble).view(len(options), n_opt)
        pred = scores.float().argmax(1).cpu()
        correct += int((pred == answers).sum())
        for b, raw in enumerate(raws):
            item = {"video": raw["image"], "options": raw["caption"], "answer": int(answers[b]),
                    "pred_ans_ensemble": int(pred[b]), "pred_scores_ensemble": scores[b].float().cpu().numpy()}
            if frame_scores is not None:
                fs = frame_scores[b].float().cpu().numpy().T
                item["pred_scores_frame"], item["pred_ans_frame"] = fs, fs.argmax(1)
            predictions.append(item)
    return round(100.0 * correct / max(1, len(predictions)), 2), predictions


def qa_exact_match(predictions: list[dict], anno: list[dict]) -> dict[str, float]:
    """msrvtt/anet accuracy: exact string match per question_id, missing = wrong (spec 5.8)."""
    pred = {p["question_id"]: p["answer"] for p in predictions}
    hits = [pred.get(rec["question_id"]) == rec["answer"] for rec in anno]
    return {"overall": round(100.0 * float(np.mean(hits)) if hits else 0.0, 2)}


# --- VQA v2 accuracy (port of the official VQAEval normalisation) ------------------------------------
_CONTRACTIONS = {"aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
                 "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't", "hasnt": "hasn't",
                 "havent": "haven't", "hed": "he'd", "hes": "he's", "im": "i'm", "ive": "i've", "isnt": "isn't",
                 "itd": "it'd", "itll": "it'll", "lets": "let's", "shouldnt": "shouldn't", "thats": "that's",
                 "theres": "there's", "theyre": "they're", "theyve": "they've", "wasnt": "wasn't", "werent": "weren't",
                 "whats": "what's", "wheres": "where's", "whos": "who's", "wont": "won't", "wouldnt": "wouldn't",
                 "youre": "you're", "youve": "you've"}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _process_punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or re.search(_COMMA_STRIP, text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, re.UNICODE)


def _process_digit_article(text: str) -> str:
    words = []
    for word in text.lower().split():
        word = _NUMBERS.setdefault(word, word)
        if word not in _ARTICLES:
            words.append(word)
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def vqa_accuracy(predictions: list[dict], anno: list[dict]) -> dict[str, float]:
    """VQA v2 accuracy: mean over 10 leave-one-out subsets of min(1, #matches/3), overall + per answer type."""
    pred = {p["question_id"]: p["answer"] for p in predictions}
    per_type: dict[str, list[float]] = {}
    overall = []
    for rec in anno:
        res = pred.get(rec["question_id"], "").replace("\n", " ").replace("\t", " ").strip()
        gts = [a.replace("\n", " ").replace("\t", " ").strip() for a in rec["answer"]]
        res = _process_digit_article(_process_punctuation(res))
        if len(set(gts)) > 1:
            gts = [_process_punctuation(a) for a in gts]
        accs = []
        for i in range(len(gts)):
            others = gts[:i] + gts[i + 1:]
            accs.append(min(1.0, sum(1 for a in others if a == res) / 3.0))
        acc = float(np.mean(accs)) if accs else 0.0
        overall.append(acc)
        per_type.setdefault(rec.get("answer_type", "other"), []).append(acc)
    out = {t: round(100.0 * float(np.mean(v)), 2) for t, v in per_type.items()}
    out["overall"] = round(100.0 * float(np.mean(overall)) if overall else 0.0, 2)
    return out
