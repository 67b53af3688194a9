"""Split evaluation (spec 5.4/5.5): XE loss, decoding of one row per image, coco-caption metrics via common.metrics."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import InputError
from spatial_captioning.captions import decode_sequence
from spatial_captioning.data import DataLoader, model_inputs
from spatial_captioning.opts import ARCH_KEYS
from spatial_captioning.speed import apply_speed_options, autocast

DEFAULT_METRICS = ("Bleu", "METEOR", "ROUGE_L", "CIDEr")


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; a missing or malformed file is one InputError naming the line and column."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError:
        raise InputError(path, f"{what} is not a text file") from None
    except json.JSONDecodeError as err:
        raise InputError(path, f"{what} is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None


def load_references(ann_file: str | Path) -> dict[int, list[str]]:
    """image_id -> raw reference captions from a COCO captions annotation file (spec 3.7)."""
    path = Path(ann_file)
    if not path.is_file():
        raise InputError(path, "COCO captions annotation file not found (--ann_file); for synthetic data it is "
                               "written by spatial_captioning.synthetic")
    data = read_json(path, "COCO captions annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise InputError(path, "no 'annotations' list", field="annotations")
    refs: dict[int, list[str]] = {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            raise InputError(path, "annotation lacks image_id/caption", record=i, field="caption")
        if not isinstance(ann["caption"], str):
            raise InputError(path, "caption is not a string", record=i, field="caption")
        try:
            refs.setdefault(int(ann["image_id"]), []).append(ann["caption"])
        except (TypeError, ValueError):
            raise InputError(path, f"image_id {ann['image_id']!r} is not an integer", record=i,
                             field="image_id") from None
    if not refs:
        raise InputError(path, "no annotations", field="annotations")
    return refs


def language_eval(predictions: list[dict], ann_file: str | Path, metrics: tuple[str, ...] | None = None,
                  verbose: bool = True, source: str = "predictions",
                  drop_unreferenced: bool = False) -> tuple[dict[str, float], dict[int, dict]]:
    """Overall coco-caption scores and per-image scores.

    A prediction whose image has no reference is an error that names the predictions' source; with
    `drop_unreferenced` such predictions are dropped as the original did (spec 9.23), but never all of them.
    """
    from common import metrics as cm

    refs = load_references(ann_file)
    kept = [p for p in predictions if int(p["image_id"]) in refs]
    if verbose:
        print(f"Using {len(kept)}/{len(predictions)} predictions")
    missing = [p["image_id"] for p in predictions if int(p["image_id"]) not in refs]
    if missing and (not drop_unreferenced or not kept):
        hint = "" if kept else "; --ann_file must hold the references of the evaluated split"
        raise InputError(source, f"predicted image id has no reference caption in {ann_file} "
                                 f"({len(kept)}/{len(predictions)} predictions have references{hint})",
                         record=missing[0], field="image_id")
    preds = {int(p["image_id"]): p["caption"] for p in kept}
    sub_refs = {i: refs[i] for i in preds}
    wanted = list(metrics) if metrics else None
    overall = cm.evaluate(sub_refs, preds, metrics=wanted)
    per_item = cm.score_items(sub_refs, preds, metrics=wanted)
    img_to_eval: dict[int, dict] = {i: {"image_id": i, "caption": preds[i]} for i in preds}
    for name, scores in per_item.items():
        for i, value in scores.items():
            img_to_eval[int(i)][name] = float(value)
    return {k: float(v) for k, v in overall.items()}, img_to_eval


@torch.no_grad()
def eval_split(model: torch.nn.Module, crit: torch.nn.Module | None, loader: DataLoader, eval_kwargs: dict,
               device: torch.device | str = "cpu") -> tuple[float, list[dict], dict[str, float], dict]:
    """Return (mean XE loss, predictions, language stats, per-image scores) over the loader's images."""
    verbose = int(eval_kwargs.get("verbose", 1))
    verbose_beam = int(eval_kwargs.get("verbose_beam", 1))
    verbose_loss = int(eval_kwargs.get("verbose_loss", 1))
    decode_opt = {k: eval_kwargs[k] for k in ("sample_max", "beam_size", "temperature", "decoding_constraint",
                                              "group_size", "diversity_lambda", "max_ppl") if k in eval_kwargs}
    was_training = model.training
    model.eval()
    s = loader.get_seq_per_img()
    losses, predictions = [], []
    vocab = loader.get_vocab()
    for batch in loader:
        feats, masks, boxes = model_inputs(batch, device)
        if crit is not None and verbose_loss:
            labels = batch["labels"].to(device)
            logprobs = model(feats, labels, masks, boxes)
            losses.append(float(crit(logprobs, labels[:, 1:], batch["label_masks"][:, 1:].to(device))))
        rows = torch.arange(0, feats.size(0), s, device=feats.device)  # one row per image (spec 9.22)
        seq, _ = model(feats.index_select(0, rows), None if masks is None else masks.index_select(0, rows),
                       None if boxes is None else boxes.index_select(0, rows), opt=decode_opt, mode="sample")
        sents = decode_sequence(vocab, seq.cpu().numpy())
        for k, sent in enumerate(sents):
            info = batch["infos"][k]
            entry = {"image_id": info["id"], "caption": sent, "file_path": info["file_path"]}
            if eval_kwargs.get("dump_path", 0):
                entry["file_name"] = info["file_path"]
            predictions.append(entry)
            if verbose:
                print(f"image {entry['image_id']}: {sent}")
            if verbose_beam and decode_opt.get("beam_size", 1) > 1 and hasattr(model, "done_beams"):
                for beam in model.done_beams[k]:
                    print(decode_sequence(vocab, beam["seq"].unsqueeze(0).cpu().numpy())[0])
                print("--------------------")
    lang_stats: dict[str, float] = {}
    img_to_eval: dict = {}
    if int(eval_kwargs.get("language_eval", 0)):
        source = f"predictions of {eval_kwargs.get('input_json', '')} split '{eval_kwargs.get('split', '')}'"
        lang_stats, img_to_eval = language_eval(predictions, eval_kwargs["ann_file"],
                                                eval_kwargs.get("lang_metrics"), verbose=bool(verbose),
                                                source=source,
                                                drop_unreferenced=bool(int(eval_kwargs.get("drop_unreferenced", 0))))
    if was_training:
        model.train()
    return (float(np.mean(losses)) if losses else 0.0), predictions, lang_stats, img_to_eval


# run settings, never taken from the training run's infos
CLI_ONLY = ("id", "batch_size", "beam_size", "start_from", "language_eval", "device", "attn_impl", "amp", "compile",
            "num_threads", "report_to")


def merge_eval_options(cli: dict, given: set[str], saved: dict) -> dict:
    """Combine eval.py options with the infos' training options, non-interactively (spec 2.8, 9.10)."""
    merged = dict(saved)
    for key, value in cli.items():
        if key not in saved or key in CLI_ONLY:
            merged[key] = value
        elif key in given and value != saved[key]:
            if key in ARCH_KEYS:
                print(f"warning: {key} option not consistent ({value!r} vs {saved[key]!r}); the model's value is used")
            else:
                print(f"warning: {key} option not consistent with the infos ({saved[key]!r}); using {value!r}")
                merged[key] = value
    if not cli.get("id"):
        merged["id"] = saved.get("id", "")
    if cli.get("batch_size", 0) <= 0:
        merged["batch_size"] = saved.get("batch_size", 16)
    return merged


def plan_outputs(paths: list[Path], overwrite: bool) -> None:
    """Refuse, before any work, to replace a file an earlier evaluation wrote (unless --overwrite 1)."""
    if overwrite:
        return
    for path in paths:
        if path.exists():
            raise InputError(path, "exists from an earlier evaluation; choose another --vis_dir/--eval_results_dir "
                                   "or pass --overwrite 1 (outputs are never replaced silently)")


def check_images(loader: DataLoader, image_root: str, count: int) -> None:
    """The first `count` images of the split must be readable images where they exist (--dump_png)."""
    from PIL import Image, UnidentifiedImageError

    for ix in loader.split_ix[:count]:
        img = loader.image_record(ix)
        path = Path(image_root) / img.get("file_path", "")
        if not image_root or not path.is_file():
            continue
        try:
            with Image.open(path) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise InputError(path, f"not a readable image ({type(err).__name__}: {str(err)[:120]})",
                             record=img["id"], field="file_path") from None


def write_eval_outputs(opt: Any, predictions: list[dict], lang_stats: dict, img_to_eval: dict,
                       vis_dir: Path, results_dir: Path) -> None:
    """vis.json, image copies, eval_results/<id>_<split>.json and the report pickle, each written atomically."""
    import shutil

    from common.checkpoint import atomic_write_json
    from spatial_captioning.checkpoints import save_pickle

    if opt.dump_json:
        atomic_write_json(vis_dir / "vis.json", predictions)
    if opt.dump_images and opt.image_root:
        (vis_dir / "imgs").mkdir(parents=True, exist_ok=True)
        for p in predictions:
            src = Path(opt.image_root) / p["file_path"]
            if src.is_file():
                shutil.copy(src, vis_dir / "imgs" / f"{p['image_id']}.jpg")
    if opt.language_eval:
        used = sum(1 for p in predictions if int(p["image_id"]) in img_to_eval)
        atomic_write_json(results_dir / f"{opt.id}_{opt.split}.json",
                          {"overall": lang_stats, "imgToEval": {str(k): v for k, v in img_to_eval.items()},
                           "beam_size": opt.beam_size, "split": opt.split,
                           "predictions_scored": used, "predictions_total": len(predictions)})
        if opt.image_root:
            report = {"overall": lang_stats, "imgToEval": img_to_eval, "predictions": predictions,
                      "image_root": opt.image_root, "model_id": opt.id, "split": opt.split}
            save_pickle(report, results_dir / f"{opt.id}_{opt.split}_report_data.pkl")


def _planned_files(opt: Any, loader: DataLoader, vis_dir: Path, results_dir: Path) -> list[Path]:
    ids = [loader.image_record(ix)["id"] for ix in loader.split_ix]
    paths = []
    if opt.dump_json:
        paths.append(vis_dir / "vis.json")
    if opt.dump_images and opt.image_root:
        paths += [vis_dir / "imgs" / f"{i}.jpg" for i in ids]
    if opt.language_eval:
        paths.append(results_dir / f"{opt.id}_{opt.split}.json")
        if opt.image_root:
            paths.append(results_dir / f"{opt.id}_{opt.split}_report_data.pkl")
    if int(getattr(opt, "dump_png", 0)) > 0:
        paths += [vis_dir / "png" / f"{i}.png" for i in ids[: int(opt.dump_png)]]
    return paths


def run_eval(cli_opt: Any, given: set[str]) -> dict:
    """eval.py: load infos + weights, decode the split, score it, write vis.json / eval_results / PNGs."""
    from types import SimpleNamespace

    from spatial_captioning import models
    from spatial_captioning.checkpoints import load_infos, load_model_weights
    from spatial_captioning.data import unk_index
    from spatial_captioning.losses import LanguageModelCriterion
    from spatial_captioning.training import pick_device, seed_all

    if not cli_opt.infos_path:
        raise InputError("--infos_path", "required: the infos_<id>.pkl written next to the model")
    if not cli_opt.model:
        raise InputError("--model", "required: the model.pth / model-best.pth state dict")
    if not Path(cli_opt.model).is_file():
        raise InputError(cli_opt.model, "model file not found", field="model")
    infos = load_infos(cli_opt.infos_path, trust=cli_opt.trust_checkpoint)
    for key in ("opt", "vocab"):
        if key not in infos:
            raise InputError(cli_opt.infos_path, "infos lacks it (spec 6.2)", field=key)
    opt = SimpleNamespace(**merge_eval_options(vars(cli_opt), given, dict(infos["opt"])))
    opt.unk_index = unk_index(infos["vocab"])
    run_dir = Path(cli_opt.model).resolve().parent
    vis_dir = Path(opt.vis_dir) if opt.vis_dir else run_dir / "vis"
    results_dir = Path(opt.eval_results_dir) if opt.eval_results_dir else run_dir / "eval_results"
    loader = DataLoader(opt, opt.split, length=opt.num_images)
    loader.set_vocab(infos["vocab"])  # spec 9.16: never rebuild the vocabulary at eval time
    plan_outputs(_planned_files(opt, loader, vis_dir, results_dir), bool(opt.overwrite))
    if int(getattr(opt, "dump_png", 0)) > 0:
        check_images(loader, opt.image_root, int(opt.dump_png))
    if opt.language_eval:
        load_references(opt.ann_file)
    seed_all(getattr(opt, "seed", None))
    device = pick_device(opt.device)
    try:
        model = models.setup(opt)
    except ValueError as err:
        raise InputError(cli_opt.infos_path, f"cannot build the model its opt describes: {err}", field="opt") from None
    load_model_weights(model, cli_opt.model, trust=cli_opt.trust_checkpoint)
    model.to(device)
    apply_speed_options(model, opt)
    kwargs = dict(vars(opt), verbose=1)
    print(f"evaluating split '{opt.split}' with beam_size {opt.beam_size} (sample_max {opt.sample_max})")
    with autocast(device, opt.amp):
        loss, predictions, lang_stats, img_to_eval = eval_split(model, LanguageModelCriterion(), loader, kwargs,
                                                                device)
    print(f"Loss:  {loss}")
    if lang_stats:
        print(lang_stats)
    write_eval_outputs(opt, predictions, lang_stats, img_to_eval, vis_dir, results_dir)
    log_eval_metrics(run_dir, opt, int(infos.get("iter", 0) or 0), loss, lang_stats)
    if int(getattr(opt, "dump_png", 0)) > 0:
        dump_pngs(opt, loader, predictions[: int(opt.dump_png)], vis_dir / "png")
    return {"loss": loss, "predictions": predictions, "lang_stats": lang_stats, "vis_dir": vis_dir,
            "results_dir": results_dir}


def log_eval_metrics(run_dir: Path, opt: Any, step: int, loss: float, lang_stats: dict[str, float]) -> None:
    """Append the evaluation's loss (when computed) and language scores to the run's metrics.jsonl."""
    from common.experiment_log import ExperimentLog

    values = dict(lang_stats)
    if int(getattr(opt, "verbose_loss", 0)):
        values["loss"] = loss
    if not values:
        return
    with ExperimentLog(run_dir, report_to=getattr(opt, "report_to", ())) as xlog:
        xlog.log(values, step=step, split=opt.split)


def dump_pngs(opt: Any, loader: DataLoader, predictions: list[dict], out_dir: Path) -> list[Path]:
    """Write one PNG per prediction (image or blank canvas, regions, grid, captions)."""
    from spatial_captioning.models.spatial_encoding import grid_side
    from spatial_captioning.visualize import render_caption_png

    by_id = {img["id"]: (ix, img) for ix, img in enumerate(loader.info["images"])}
    grid = grid_side(opt.num_grids) if getattr(opt, "use_grid", False) else 0
    paths = []
    for p in predictions:
        ix, img = by_id[p["image_id"]]
        refs = decode_sequence(loader.get_vocab(), loader.captions(ix))
        size = (img["width"], img["height"]) if "width" in img and "height" in img else None
        boxes = None
        box_file = Path(getattr(opt, "input_box_dir", "") or "") / f"{p['image_id']}.npy"
        if box_file.is_file():
            boxes = np.load(box_file, allow_pickle=False)
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise InputError(box_file, f"expected (K, 4) boxes, got shape {boxes.shape}", record=p["image_id"])
            if size is None and boxes.size and boxes.max() > 1:
                size = (float(boxes[:, 2].max()), float(boxes[:, 3].max()))
        image_path = Path(opt.image_root) / p["file_path"] if getattr(opt, "image_root", "") else None
        paths.append(render_caption_png(out_dir / f"{p['image_id']}.png", boxes, grid, p["caption"], refs,
                                        image_path=image_path, size=size, title=f"image {p['image_id']}"))
    return paths


def _run_dir(run_id: str, root: str) -> Path:
    """log_<id>/ if it exists, else <root>/<id>/."""
    ort = Path(f"log_{run_id}")
    return ort if ort.is_dir() else Path(root) / run_id


def run_ensemble_eval(args: Any) -> dict:
    """eval_ensemble.py: load the runs, decode the split with the ensemble, score and dump."""
    if args.image_folder or args.coco_json:
        raise SystemExit("error: raw-image mode needs the original's DataLoaderRaw, which was never published")
    from types import SimpleNamespace

    from spatial_captioning import models
    from spatial_captioning.checkpoints import find_infos, find_model_file, load_infos, load_model_weights
    from spatial_captioning.data import unk_index
    from spatial_captioning.losses import LanguageModelCriterion
    from spatial_captioning.models.ensemble import EnsembleModel
    from spatial_captioning.training import pick_device

    members, infos0, first_dir = [], None, None
    for rid in args.ids:
        d = _run_dir(rid, args.checkpoint_root)
        infos_path = find_infos(d, rid, best=True) if (d / f"infos_{rid}-best.pkl").is_file() else find_infos(d, rid)
        infos = load_infos(infos_path, trust=args.trust_checkpoint)
        for key in ("opt", "vocab"):
            if key not in infos:
                raise InputError(infos_path, "infos lacks it (spec 6.2)", field=key)
        opt = SimpleNamespace(**infos["opt"])
        opt.unk_index = unk_index(infos["vocab"])
        if infos0 is not None:
            for key in ("use_grid", "use_box", "img_feat_size", "num_grids"):
                if infos["opt"].get(key) != infos0["opt"].get(key):
                    raise InputError(infos_path, "runs of an ensemble must read the same inputs "
                                                 f"({infos['opt'].get(key)!r} vs {infos0['opt'].get(key)!r})",
                                     field=key)
        try:
            model = models.setup(opt)
        except ValueError as err:
            raise InputError(infos_path, f"cannot build the model its opt describes: {err}", field="opt") from None
        load_model_weights(model, find_model_file(d, ("model-best.pth", "model-best.pt", "model.pth", "model.pt")),
                           trust=args.trust_checkpoint)
        infos0, first_dir = infos0 or infos, first_dir or d
        members.append(model)
    data_opt = dict(infos0["opt"])
    for cli, key in (("input_att_dir", "input_img_feat_dir"), ("input_box_dir", "input_box_dir"),
                     ("input_grid_vec_dir", "input_grid_vec_dir"), ("input_rel_box_dir", "input_rel_box_dir"),
                     ("input_label_h5", "input_label_h5"), ("input_json", "input_json")):
        if getattr(args, cli):
            data_opt[key] = getattr(args, cli)
    if args.batch_size > 0:
        data_opt["batch_size"] = args.batch_size
    run_id = args.id or "_".join(args.ids)
    out = SimpleNamespace(**{**vars(args), "id": run_id, "image_root": args.image_root, "dump_png": 0})
    vis_dir = Path(args.vis_dir) if args.vis_dir else first_dir / f"vis_{run_id}"
    results_dir = Path(args.eval_results_dir) if args.eval_results_dir else first_dir / "eval_results"
    loader = DataLoader(SimpleNamespace(**data_opt), args.split, length=args.num_images)
    loader.set_vocab(infos0["vocab"])
    plan_outputs(_planned_files(out, loader, vis_dir, results_dir), bool(args.overwrite))
    if args.language_eval:
        load_references(args.ann_file)
    device = pick_device(args.device)
    ensemble = EnsembleModel(members, args.seq_length).to(device)
    apply_speed_options(ensemble, SimpleNamespace(attn_impl=args.attn_impl, compile=False))
    if args.compile:
        for member in members:
            apply_speed_options(member, args)
    kwargs = {**vars(args), "verbose": 1, "input_json": data_opt.get("input_json", "")}
    with autocast(device, args.amp):
        loss, predictions, lang_stats, img_to_eval = eval_split(ensemble, LanguageModelCriterion(), loader, kwargs,
                                                                device)
    print(f"Loss:  {loss}")
    if lang_stats:
        print(lang_stats)
    write_eval_outputs(out, predictions, lang_stats, img_to_eval, vis_dir, results_dir)
    log_eval_metrics(first_dir, out, int(infos0.get("iter", 0) or 0), loss, lang_stats)
    return {"loss": loss, "predictions": predictions, "lang_stats": lang_stats}
