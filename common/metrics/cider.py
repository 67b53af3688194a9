"""CIDEr-D, vectorised: coco-caption's ``Cider`` and ruotianluo/cider's ``CiderD`` (the SCST reward).

Both are the same formula (n = 1..4, sigma = 6): for each order, tf-idf vectors
``tf(g) * (ref_len - log(max(1, df(g))))``; similarity with a reference = clipped dot product
``sum_g min(h_g, r_g) * r_g / (|h| |r|)`` (no division when a norm is 0) times the Gaussian length penalty
``exp(-(len_h - len_r)^2 / (2 sigma^2))`` where a sentence's "length" is its number of BIGRAMS (the
original's ``if n == 1`` quirk, kept); score = 10 * mean over orders of the sum over references / #refs.

Document frequencies come either from the references being scored ("corpus" mode: one count per scored
candidate whose reference set contains the n-gram, ``ref_len = log(#candidates)``; this is coco-caption's
CIDEr), or from a precomputed training-corpus pickle (``coco-train-idxs.p``,
``ref_len = log(pickle["ref_len"])``).
"""
from __future__ import annotations

import os
import pickle
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.metrics.ngrams import NgramTable, build_table, joined_sentences

__all__ = ["CiderD", "cider_scores", "document_frequency"]


def document_frequency(references: Sequence[Sequence[str]], n: int = 4) -> defaultdict:
    """{ngram tuple: number of reference sets containing it} (prepro_ngrams.py semantics)."""
    df: defaultdict = defaultdict(float)
    for refs in references:
        grams = set()
        for ref in refs:
            words = ref.split()
            for k in range(1, n + 1):
                for i in range(len(words) - k + 1):
                    grams.add(tuple(words[i:i + k]))
        for g in grams:
            df[g] += 1
    return df


def cider_scores(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    group: np.ndarray | Sequence[int] | None = None,
    df: Mapping | None = None,
    ref_len: float | None = None,
    n: int = 4,
    sigma: float = 6.0,
    table: NgramTable | None = None,
) -> np.ndarray:
    """Per-candidate CIDEr-D. Candidate i is scored against ``references[group[i]]`` (group defaults to i).

    ``df=None`` means corpus mode (coco-caption); otherwise ``df`` maps n-gram tuples to document counts and
    ``ref_len`` is the already-logged reference length.
    """
    nc = len(candidates)
    group = np.arange(nc, dtype=np.int64) if group is None else np.asarray(group, dtype=np.int64)
    if len(group) != nc:
        raise ValueError(f"{nc} candidates but {len(group)} group indices")
    ng = len(references)
    if nc and (group.min() < 0 or group.max() >= ng):
        raise ValueError("a candidate points to a reference set that does not exist")
    nref = np.fromiter((len(r) for r in references), dtype=np.int64, count=ng)
    if nc and nref[group].min() < 1:
        raise ValueError("every candidate needs at least one reference")
    if nc == 0:
        return np.zeros(0, dtype=np.float64)
    if table is None:
        table = build_table(joined_sentences(candidates, references), n)
    ref_group = np.repeat(np.arange(ng, dtype=np.int64), nref)
    ref_start = np.concatenate([[0], np.cumsum(nref)[:-1]]).astype(np.int64)  # first ref of each group
    ns = len(table.lengths)
    if df is None:
        ref_len = float(np.log(float(nc)))
        cands_per_group = np.bincount(group, minlength=ng).astype(np.float64)

    # all (candidate, reference) pairs
    pair_counts = nref[group]
    pair_offset = np.concatenate([[0], np.cumsum(pair_counts)[:-1]]).astype(np.int64)
    n_pairs = int(pair_counts.sum())
    pair_cand = np.repeat(np.arange(nc, dtype=np.int64), pair_counts)
    pair_local = np.arange(n_pairs, dtype=np.int64) - np.repeat(pair_offset, pair_counts)
    pair_ref = ref_start[group][pair_cand] + pair_local  # index among the reference sentences

    lengths = table.lengths
    bigrams = np.maximum(lengths - 1, 0).astype(np.float64)  # the "length" of the original (bigram count)
    delta = bigrams[pair_cand] - bigrams[nc + pair_ref]
    penalty = np.e ** (-(delta**2) / (2 * sigma**2))

    per_order = []
    for k in range(n):
        o = table.orders[k]
        is_cand = o.sent < nc
        # reference entries keyed (gram, group): already sorted, since entries are sorted by gram then
        # sentence and the group grows with the sentence index
        r_sent = o.sent[~is_cand] - nc
        r_gram = o.gram[~is_cand]
        rkey = r_gram * ng + ref_group[r_sent]
        if df is None:
            first = np.concatenate([[True], rkey[1:] != rkey[:-1]]) if len(rkey) else np.zeros(0, bool)
            gkey = rkey[first]
            dfk = np.bincount(gkey // ng, weights=cands_per_group[gkey % ng], minlength=o.n_grams)
        else:
            get = df.get
            dfk = np.fromiter(
                (get(table.gram_tuple(k + 1, i), 0.0) for i in range(o.n_grams)), dtype=np.float64, count=o.n_grams
            )
        idf = ref_len - np.log(np.maximum(1.0, dfk))
        vec = o.count.astype(np.float64) * idf[o.gram]
        norm = np.sqrt(np.bincount(o.sent, weights=vec * vec, minlength=ns))

        r_vec = vec[~is_cand]
        c_sent = o.sent[is_cand]
        ckey = o.gram[is_cand] * ng + group[c_sent]
        c_vec = vec[is_cand]
        lo = np.searchsorted(rkey, ckey, "left")
        hi = np.searchsorted(rkey, ckey, "right")
        cnt = hi - lo
        m = int(cnt.sum())
        e_c = np.repeat(np.arange(len(ckey), dtype=np.int64), cnt)
        e_r = np.arange(m, dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(lo, cnt)
        vh, vr = c_vec[e_c], r_vec[e_r]
        contrib = np.minimum(vh, vr) * vr
        cand_of = c_sent[e_c]
        pair = pair_offset[cand_of] + (r_sent[e_r] - ref_start[group[cand_of]])
        val = np.bincount(pair, weights=contrib, minlength=n_pairs).astype(np.float64)
        nh, nr = norm[pair_cand], norm[nc + pair_ref]
        ok = (nh != 0) & (nr != 0)
        val[ok] /= nh[ok] * nr[ok]
        val *= penalty
        per_order.append(np.bincount(pair_cand, weights=val, minlength=nc))
    total = np.mean(np.stack(per_order, axis=1), axis=1)
    return total / nref[group] * 10.0


class CiderD:
    """CIDEr-D for SCST rewards and evaluation (ruotianluo/cider ``CiderD`` semantics, vectorised).

    Inputs are already tokenised, space-separated strings (e.g. token ids with the EOS ``0``).
    """

    def __init__(
        self,
        df: Mapping | str | os.PathLike | None = None,
        ref_len: float | None = None,
        n: int = 4,
        sigma: float = 6.0,
        trust: bool = False,
    ):
        """``df``: None or "corpus" (df from the scored references), a mapping (with ``ref_len``, already
        logged), or a pickle path / name as in the original ``CiderD(n=4, sigma=6.0, df=cached_tokens)``."""
        self.n = n
        self.sigma = sigma
        if isinstance(df, (str, os.PathLike)) and str(df) != "corpus":
            loaded = CiderD.from_pickle(df, n=n, sigma=sigma, trust=trust)
            df, ref_len = loaded.df, loaded.ref_len
        elif isinstance(df, str):
            df = None
        self.df = df
        self.ref_len = ref_len  # already logged
        if df is not None and ref_len is None:
            raise ValueError("a precomputed document frequency needs its ref_len")

    @classmethod
    def from_pickle(cls, path: str | os.PathLike, n: int = 4, sigma: float = 6.0,
                    trust: bool = False) -> "CiderD":
        """Load a ``coco-train-idxs.p``-style pickle: a full path, or a name resolved as ``data/<name>.p``.

        Read with ``common.safe_pickle``'s allow-list; ``trust`` allows full unpickling."""
        p = Path(path)
        if not p.is_file():
            alt = Path("data") / f"{path}.p"
            if alt.is_file():
                p = alt
            else:
                raise InputError(path, f"document-frequency pickle not found (also tried {alt})")
        from common.safe_pickle import load_pickle  # torch is imported only when a df file is read

        # latin1 as the original's loader: the released df pickles come from Python 2
        data = load_pickle(p, trust=trust, encoding="latin1")
        if not isinstance(data, dict) or "document_frequency" not in data or "ref_len" not in data:
            raise InputError(p, "expected a dict with 'document_frequency' and 'ref_len'")
        df = data["document_frequency"]
        if not isinstance(df, Mapping):
            raise InputError(p, "'document_frequency' is not a mapping", field="document_frequency")
        return cls(df=df, ref_len=float(np.log(float(data["ref_len"]))), n=n, sigma=sigma)

    @classmethod
    def from_references(cls, references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0) -> "CiderD":
        """Document frequencies from a list of per-image reference lists (prepro_ngrams.py semantics)."""
        df = document_frequency(references, n)
        return cls(df=df, ref_len=float(np.log(float(len(references)))), n=n, sigma=sigma)

    def save_pickle(self, path: str | os.PathLike, n_images: int) -> None:
        """Write the df in the original format (defaultdict(float), ref_len = #images, protocol 2)."""
        df = self.df if isinstance(self.df, defaultdict) else defaultdict(float, self.df or {})
        with open(path, "wb") as f:
            pickle.dump({"document_frequency": df, "ref_len": n_images}, f, protocol=2)

    def compute_score(
        self,
        candidates: Sequence[str],
        references: Sequence[Sequence[str]],
        image_index: Sequence[int] | np.ndarray | None = None,
    ) -> tuple[float, np.ndarray]:
        """(mean, per-candidate scores). Candidate i uses ``references[image_index[i]]`` (default: ``references[i]``).

        Without a precomputed df (``CiderD()``), document frequencies come from these references, one count
        per candidate (ruotianluo's ``df='corpus'``).
        """
        scores = cider_scores(candidates, references, image_index, self.df, self.ref_len, self.n, self.sigma)
        return float(np.mean(scores)) if len(scores) else 0.0, scores
