"""Answers from a fine-tuned checkpoint: top-k class names of unlabelled videos (`tools/predict.py`).

Inputs are video files, folders and list files (`videohpm.tasks.videos`). Every video goes through
exactly the multi-view protocol of `tools/test.py`: the data config's test views
(`data.test_num_clips × data.test_num_crops`, SSv2 2 × 3, K400 5 × 3) from one decode, the
classifier of :func:`videohpm.tasks.weights.load_classifier`, the mean over views of the
softmax (:mod:`videohpm.evaluation.multiview`), ranks sharing the videos and the results
gathered and de-duplicated — so the probabilities are the ones `tools/test.py` reports.

A video that cannot be decoded gets a row with `status=broken` and the decoder's reason, never
a guessed class. Class names come from `--classes` (a `classes.txt`, one name per line in id
order, or the Something-Something v2 labels JSON `{name: id}`), else from the run's config
(`data.class_names`), else from the `classes.txt` beside the run's training list, else the
answers are class ids.

Outputs (rank 0): one line per video on stdout, `predictions.csv` and `predictions.json` in the
output folder (refused where they exist, unless `overwrite`); none when every video is broken.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import OmegaConf

from videohpm import distributed as vdist
from videohpm.data import build_collate, build_eval_dataset, data_format, find_data_format, resolve
from videohpm.evaluation.multiview import build_test_loader, gather_predictions, predict_multiview
from videohpm.models.formats import built_name
from videohpm.tasks.videos import collect_videos
from videohpm.tasks.weights import eval_amp_dtype, load_classifier

__all__ = ["read_class_names", "resolve_class_names", "PREDICTION_FILES", "Answer", "run_predict",
           "format_answer", "read_answers"]

log = logging.getLogger(__name__)


def read_class_names(path: str) -> List[str]:
    """Class names in id order from `classes.txt` (one per line, as `tools/make_lists.py k400`
    writes it) or from a JSON file: the SSv2 labels file `{name: id}` (ids as strings or ints,
    `0..K-1` without gaps) or a list of names.

    Raises:
        FileNotFoundError / ValueError naming the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--classes {path}: no such file")
    if path.lower().endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"--classes {path}:{e.lineno}: invalid JSON ({e.msg})") from None
        if isinstance(obj, list):
            names = [str(n) for n in obj]
        elif isinstance(obj, dict):
            try:
                by_id = {int(v): str(k) for k, v in obj.items()}
            except (TypeError, ValueError):
                raise ValueError(f"--classes {path}: expected the SSv2 labels JSON {{name: id}} with integer ids") from None
            if sorted(by_id) != list(range(len(obj))):
                raise ValueError(f"--classes {path}: class ids must be 0..{len(obj) - 1}, each once")
            names = [by_id[i] for i in range(len(by_id))]
        else:
            raise ValueError(f"--classes {path}: expected a JSON object {{name: id}} or a list of names")
    else:
        with open(path, encoding="utf-8") as f:
            names = [ln.strip() for ln in f.read().splitlines()]
        while names and not names[-1]:
            names.pop()
        if any(not n for n in names):
            raise ValueError(f"--classes {path}:{names.index('') + 1}: empty class name")
    if not names:
        raise ValueError(f"--classes {path}: no class names")
    return names


def resolve_class_names(cfg: Any, classes_file: Optional[str], num_classes: Optional[int]
                        ) -> Tuple[Optional[List[str]], str]:
    """`(names, source)`: `--classes` first, then the config's `data.class_names`, then the
    `classes.txt` next to the config's `data.train` list (where `tools/make_lists.py` writes it;
    used only when its count fits); `(None, "ids")` when none is there. Raises ValueError when an
    explicit source's count differs from the model's classes."""
    names, source = None, "ids"
    fmt = find_data_format(cfg.data.get("kind", "video"))
    if classes_file:
        names, source = read_class_names(classes_file), classes_file
    elif cfg.data.get("class_names"):
        names, source = [str(n) for n in cfg.data.class_names], "config data.class_names"
    elif cfg.data.get("train") and fmt is not None and fmt.source_is_list:
        beside = os.path.join(os.path.dirname(os.path.abspath(str(cfg.data.train))), "classes.txt")
        if os.path.isfile(beside):
            try:
                found = read_class_names(beside)
            except ValueError as e:
                log.warning("class names: %s is not usable (%s); answering with class ids", beside, e)
            else:
                if num_classes is None or len(found) == int(num_classes):
                    return found, beside
                log.warning("class names: %s has %d names, the model %s classes; answering with class ids",
                            beside, len(found), num_classes)
    if names is not None and num_classes is not None and len(names) != int(num_classes):
        raise ValueError(f"{'--classes ' + source if classes_file else source}: {len(names)} class names but the "
                         f"model has {num_classes} classes")
    return names, source


PREDICTION_FILES = ("predictions.csv", "predictions.json")  # what run_predict writes into its folder


@dataclass
class Answer:
    """The prediction of one video: `top` = `[(class id, name or None, probability)]`, highest first
    (empty when `status == "broken"`)."""

    video: str
    path: str
    status: str
    error: str = ""
    label: Optional[int] = None
    top: List[Tuple[int, Optional[str], float]] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        return {"video": self.video, "path": self.path, "status": self.status, "error": self.error,
                "label": self.label,
                "top": [{"id": c, "name": n, "prob": p} for c, n, p in self.top]}


def format_answer(a: Answer) -> str:
    """One stdout line: `video: name 0.873 | name 0.101 | ...` or `video: BROKEN (...) — no prediction`."""
    if a.status != "ok":
        return f"{a.video}: BROKEN ({a.error or 'cannot be decoded'}) — no prediction"
    return f"{a.video}: " + " | ".join(f"{n if n is not None else c} {p:.4f}" for c, n, p in a.top)


def read_answers(json_path: str) -> List[Answer]:
    """The answers of a `predictions.json` written by :func:`run_predict`."""
    with open(json_path, encoding="utf-8") as f:
        payload = json.load(f)
    return [Answer(video=p["video"], path=p["path"], status=p["status"], error=p["error"], label=p["label"],
                   top=[(t["id"], t["name"], t["prob"]) for t in p["top"]]) for p in payload["predictions"]]


def _num_outputs(net: Any) -> Optional[int]:
    n = getattr(net, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    return int(linears[-1].out_features) if linears else None


def _answers(preds: Any, videos: Any, names: Optional[List[str]], topk: int) -> List[Answer]:
    k = min(int(topk), preds.probs.shape[1]) if preds.probs.ndim == 2 else 0
    order = np.argsort(-preds.probs, axis=1, kind="stable")[:, :k] if k else np.zeros((len(preds), 0), int)
    errors = preds.errors or [""] * len(preds)
    out = []
    for i in range(len(preds)):
        idx = int(preds.index[i])
        label = int(videos.labels[idx])
        ok = bool(preds.ok[i])
        top = [(int(c), names[int(c)] if names else None, float(preds.probs[i, c])) for c in order[i]] if ok else []
        out.append(Answer(video=str(videos.names[idx]), path=str(videos.paths[idx]), status="ok" if ok else "broken",
                          error="" if ok else (errors[i] or "cannot be decoded"), label=label if label >= 0 else None,
                          top=top))
    return out


def _write_csv(answers: List[Answer], path: str, topk: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        header = ["video", "status", "error", "label"]
        for r in range(1, topk + 1):
            header += [f"top{r}_id", f"top{r}_name", f"top{r}_prob"]
        w.writerow(header)
        for a in answers:
            row: List[Any] = [a.video, a.status, a.error, "" if a.label is None else a.label]
            for r in range(topk):
                if r < len(a.top):
                    c, n, p = a.top[r]
                    row += [c, "" if n is None else n, f"{p:.6f}"]
                else:
                    row += ["", "", ""]
            w.writerow(row)


def _check_options(cfg: Any, topk: int) -> Any:
    """The resolved data config, once `topk` and `data.kind` are checked."""
    if int(topk) < 1:
        raise ValueError(f"--topk: must be >= 1, got {topk}")
    data_cfg = resolve(OmegaConf.to_object(cfg.data))
    if not data_format(data_cfg.kind).source_is_list:
        raise ValueError(f"data.kind={data_cfg.kind!r}: tools/predict.py predicts videos; test images with tools/test.py")
    return data_cfg


def _check_output(output_dir: str, classes_file: Optional[str], overwrite: bool) -> None:
    """Refuse prediction files already there (unless `overwrite`) and a bad class-name file."""
    held = [f for f in PREDICTION_FILES if os.path.exists(os.path.join(output_dir, f))]
    if held and not overwrite:
        raise FileExistsError(f"--output-dir {output_dir}: holds {', '.join(held)} already; pass --overwrite "
                              "to replace them, or choose another --output-dir")
    if classes_file:
        read_class_names(classes_file)  # a bad file fails before the model is built


def _write_predictions(result: Dict[str, Any], output_dir: str, net: Any, names: Optional[List[str]]
                       ) -> Dict[str, str]:
    """`predictions.csv` and `predictions.json` of `result` into `output_dir` (rank 0)."""
    os.makedirs(output_dir, exist_ok=True)
    base = os.path.join(output_dir, "predictions")
    answers = result["answers"]
    _write_csv(answers, base + ".csv", result["topk"])
    payload = {key: v for key, v in result.items() if key != "answers"}
    payload.update(model=built_name(net.recipe if hasattr(net, "recipe") else net),
                   views=f"{result['clips']}×{result['crops']}", class_names=names,
                   predictions=[a.as_dict() for a in answers])
    with open(base + ".json", "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return {"csv": base + ".csv", "json": base + ".json"}


def run_predict(
    cfg: Any,
    checkpoint: str,
    inputs: Sequence[str],
    output_dir: str,
    *,
    topk: int = 5,
    classes_file: Optional[str] = None,
    data_root: Optional[str] = None,
    batch_size: Optional[int] = None,
    ema: bool = False,
    max_views_per_forward: Optional[int] = None,
    print_lines: bool = True,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Predict the classes of `inputs` (see :func:`collect_videos`) with a fine-tuning /
    linear-probing config and checkpoint (all ranks); rank 0 prints one line per video and writes
    `predictions.csv` / `predictions.json` into `output_dir` unless every video is broken.

    Args:
        data_root: prefix of the relative paths in list files (default `data.data_root`).
        topk: classes per video (capped at the number of classes).
        overwrite: replace the prediction files `output_dir` holds (else they are refused).
    Returns:
        `{"answers": [Answer], "csv", "json", "num_videos", "num_broken", "class_names_source", ...}`
        (the same answers on every rank; the file paths on rank 0 only).
    Raises:
        FileNotFoundError / ValueError naming the input, the class-name file or the checkpoint,
        FileExistsError naming the prediction files already there, before anything is written.
    """
    data_cfg = _check_options(cfg, topk)
    videos = collect_videos(inputs, data_cfg.data_root if data_root is None else data_root)
    _check_output(output_dir, classes_file, overwrite)
    device = vdist.init_distributed(cfg.train.dist_backend or None)
    net = load_classifier(cfg, checkpoint, ema=ema).to(device)
    names, names_source = resolve_class_names(cfg, classes_file, _num_outputs(net))
    dataset = build_eval_dataset(data_cfg, videos, "test", require_labels=False)
    loader = build_test_loader(dataset, batch_size=int(batch_size or cfg.train.batch_size),
                               num_workers=int(data_cfg.num_workers), pin_memory=device.type == "cuda",
                               collate_fn=build_collate(cfg.data, "test"))
    clips, crops = int(data_cfg.test_num_clips), int(data_cfg.test_num_crops)
    amp = eval_amp_dtype(str(cfg.train.precision), device)
    log.info("predicting %d videos × %d clips × %d crops on %d rank(s), %s", len(dataset), clips, crops,
             vdist.get_world_size(), amp or "fp32")
    preds = gather_predictions(predict_multiview(net, loader, device, num_crops=crops, amp_dtype=amp,
                                                 max_views_per_forward=max_views_per_forward))
    k = min(int(topk), int(preds.probs.shape[1])) if preds.probs.ndim == 2 and preds.probs.shape[1] else int(topk)
    answers = _answers(preds, videos, names, k)
    result: Dict[str, Any] = {
        "answers": answers, "num_videos": len(answers), "num_broken": sum(a.status != "ok" for a in answers),
        "class_names_source": names_source, "topk": k, "clips": clips, "crops": crops,
        "world_size": vdist.get_world_size(), "checkpoint": os.path.abspath(checkpoint), "ema": ema}
    if vdist.is_main_process():
        if result["num_broken"] < result["num_videos"]:  # a run with no answer writes no file
            result.update(_write_predictions(result, output_dir, net, names))
        if print_lines:
            for a in answers:
                print(format_answer(a), flush=True)
    vdist.barrier()
    return result
