"""Datasets and loaders for each task from the config (spec 3.2, 3.8)."""
from __future__ import annotations

import logging

from common.errors import InputError
from singularity.data.annotations import (ImageTextTrainDataset, MultipleChoiceDataset, QADataset,
                                          RetrievalEvalDataset, media_collate, mc_collate, qa_collate,
                                          spec_media_type)
from singularity.data.transforms import EvalTransform, TrainTransform
from singularity.engine import MetaLoader, build_loader
from singularity.models.config_paths import cfg_get


logger = logging.getLogger("singularity")


def as_spec_list(value) -> list:
    """One spec or a list of specs -> list of specs."""
    value = list(value)
    return [list(value)] if value and isinstance(value[0], str) else [list(v) for v in value]


def _video_cfg(config) -> dict:
    return dict(cfg_get(config, "video_input", {}) or {})


def _check_train_loader(loader, specs, media_type: str, config) -> None:
    """A training set smaller than one batch would train zero iterations (drop_last): an error (issue 11)."""
    if len(loader) == 0:
        files = ", ".join(str(s[0]) for s in specs)
        raise InputError(files, f"{len(loader.dataset)} training records, fewer than one batch of "
                                f"{cfg_get(config, f'batch_size.{media_type}')} per process: training would run "
                                "zero iterations", field=f"batch_size.{media_type}")


def skip_unreadable(dataset, name: str, config) -> None:
    """With ``skip_unreadable_media=True``: probe every item, drop the unreadable ones, remember them.

    ``dataset.skipped`` lists their paths; the tasks write the count into the results file. Without the flag
    an unreadable item stops the evaluation with a one-line error (``checked_batches``).
    """
    dataset.skipped = []
    if not cfg_get(config, "skip_unreadable_media", False):
        return
    failed = dataset.unreadable_items()
    if failed:
        dataset.drop_media({f.path for f in failed})
        dataset.skipped = [f.path for f in failed]
        logger.warning("%s: skipping %d unreadable item(s) (skip_unreadable_media=True): %s", name, len(failed),
                       "; ".join(f"{f.path} ({f.error})" for f in failed[:5]))
    if len(dataset) == 0:
        raise InputError(failed[0].file if failed else name, f"all {len(failed)} items of {name} are unreadable",
                         field="skip_unreadable_media")


def train_meta_loader(config, multi_vision_gt: bool = False, paragraph: bool = False) -> MetaLoader:
    """One ``ImageTextTrainDataset`` per media type present in ``train_file``, interleaved."""
    specs = as_spec_list(cfg_get(config, "train_file"))
    transform = TrainTransform(int(cfg_get(config, "image_res", 224)))
    loaders = {}
    for media_type in ("image", "video"):
        group = [s for s in specs if spec_media_type(s) == media_type]
        if not group:
            continue
        dataset = ImageTextTrainDataset(group, transform, _video_cfg(config), multi_vision_gt, paragraph)
        loaders[media_type] = build_loader(dataset, int(cfg_get(config, f"batch_size.{media_type}")),
                                           int(cfg_get(config, "num_workers", 0)), train=True,
                                           seed=int(cfg_get(config, "seed", 42)), collate_fn=media_collate())
        _check_train_loader(loaders[media_type], group, media_type, config)
    return MetaLoader(loaders, seed=int(cfg_get(config, "seed", 42)))


def retrieval_eval_loaders(config, names) -> dict:
    """``{name: loader}`` over ``test_file[name]`` (no distributed sampler: every rank encodes all, 9.24 K)."""
    transform = EvalTransform(int(cfg_get(config, "image_res", 224)))
    out = {}
    for name in names:
        spec = list(cfg_get(config, "test_file")[name])
        dataset = RetrievalEvalDataset(spec, transform, _video_cfg(config),
                                       bool(cfg_get(config, "has_multi_vision_gt", False)),
                                       bool(cfg_get(config, "is_paragraph_retrieval", False)))
        skip_unreadable(dataset, name, config)
        media_type = spec_media_type(spec)
        out[name] = build_loader(dataset, int(cfg_get(config, f"batch_size_test.{media_type}")),
                                 int(cfg_get(config, "num_workers", 0)), train=False, collate_fn=media_collate())
    return out


def mc_loader(config, name: str):
    """Loader over the MSRVTT-MC style ``test_file[name]``."""
    spec = list(cfg_get(config, "test_file")[name])
    dataset = MultipleChoiceDataset(spec, EvalTransform(int(cfg_get(config, "image_res", 224))), _video_cfg(config))
    skip_unreadable(dataset, name, config)
    return build_loader(dataset, int(cfg_get(config, f"batch_size_test.{spec_media_type(spec)}")),
                        int(cfg_get(config, "num_workers", 0)), train=False, collate_fn=media_collate(mc_collate))


def qa_train_loader(config) -> MetaLoader:
    """QA training loader (one media type)."""
    specs = as_spec_list(cfg_get(config, "train_file"))
    dataset = QADataset(specs, TrainTransform(int(cfg_get(config, "image_res", 224))), _video_cfg(config), train=True,
                        eos=str(cfg_get(config, "eos", "[SEP]")))
    loader = build_loader(dataset, int(cfg_get(config, f"batch_size.{dataset.media_type}")),
                          int(cfg_get(config, "num_workers", 0)), train=True, collate_fn=media_collate(qa_collate),
                          seed=int(cfg_get(config, "seed", 42)))
    _check_train_loader(loader, specs, dataset.media_type, config)
    return MetaLoader({dataset.media_type: loader}, seed=int(cfg_get(config, "seed", 42)))


def qa_eval_loader(config, name: str):
    """QA eval loader, sharded across ranks (spec 3.8)."""
    spec = list(cfg_get(config, "test_file")[name])
    dataset = QADataset([spec], EvalTransform(int(cfg_get(config, "image_res", 224))), _video_cfg(config), train=False)
    skip_unreadable(dataset, name, config)
    return build_loader(dataset, int(cfg_get(config, f"batch_size_test.{dataset.media_type}")),
                        int(cfg_get(config, "num_workers", 0)), train=False, distributed_eval=True,
                        collate_fn=media_collate())
