"""Answers from a fine-tuned checkpoint: top-k class names of unlabelled videos (`tools/predict.py`).

Inputs are video files, folders (searched recursively; video extensions matched case-insensitively)
and list files (`.txt` / `.csv` / `.lst`: one path per line, or VideoMAE's `<path> <label>` /
`<path> <start> <total>` lines, whose labels are kept as a column). Every video goes through
exactly the multi-view protocol of `tools/test.py`: the data config's test views
(`data.test_num_clips × data.test_num_crops`, SSv2 2 × 3, K400 5 × 3) from one decode, the
classifier of :func:`videohpm.evaluation.runner.load_classifier`, the mean over views of the
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
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import OmegaConf

from videohpm import distributed as vdist
from videohpm.config import config_from_dict, load_tool_config
from videohpm.data import build_collate, resolve
from videohpm.data.config import build_eval_dataset
from videohpm.data.lists import ListFormatError, VideoList, _parse_line
from videohpm.evaluation.multiview import build_test_loader, gather_predictions, predict_multiview
from videohpm.evaluation.runner import _amp_dtype, load_classifier
from videohpm.models.checkpoint import read_checkpoint_file
from videohpm.models.export import built_name

__all__ = ["VIDEO_EXTENSIONS", "LIST_EXTENSIONS", "collect_videos", "read_class_names", "find_run_config",
           "resolve_class_names", "PREDICTION_FILES", "split_tool_args", "tool_config", "Answer", "run_predict",
           "format_answer", "read_answers"]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                    ".ogv", ".ts", ".mts", ".m2ts", ".gif")
LIST_EXTENSIONS = (".txt", ".csv", ".lst", ".list")


def _is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def _read_plain_list(path: str, data_root: str) -> Tuple[List[str], List[str], List[int], List[int], List[int]]:
    """A list file: one path per line (may hold spaces), or VideoMAE's two / three-field lines."""
    names, paths, labels, starts, totals = [], [], [], [], []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            text = raw.rstrip("\r\n").strip()
            if not text:
                continue
            where = f"{path}:{lineno}"
            full = os.path.join(data_root, text) if data_root else text
            if " " not in text or os.path.isfile(full):
                name, label, start, total = text, -1, 0, -1
            else:
                try:
                    name, label, start, total = _parse_line(text, where)
                except ListFormatError as e:
                    raise ListFormatError(f"{e} (a prediction list holds one video path per line, or VideoMAE's "
                                          "'<path> <label>' lines)") from None
                full = os.path.join(data_root, name) if data_root else name
            names.append(name)
            paths.append(full)
            labels.append(label)
            starts.append(start)
            totals.append(total)
    if not names:
        raise ListFormatError(f"{path}: the list is empty")
    return names, paths, labels, starts, totals


def collect_videos(inputs: Sequence[str], data_root: str = ""):
    """The videos of `inputs` as a :class:`videohpm.data.lists.VideoList` (input order; a video
    named twice is kept once).

    - a file with a video extension (any case) → that video (it need not decode: a broken one is
      reported by the prediction); a file with a list extension → the list's entries, relative
      paths joined onto `data_root` (VideoMAE's rule);
    - a folder → every file with a video extension below it, sorted by path.

    Raises:
        FileNotFoundError naming an input that does not exist; ValueError for a folder without
        videos, a file that is neither a video nor a list, or no input at all.
    """
    if not inputs:
        raise ValueError("no input: give video files, folders or list files")
    names: List[str] = []
    paths: List[str] = []
    labels: List[int] = []
    starts: List[int] = []
    totals: List[int] = []
    for inp in inputs:
        if os.path.isdir(inp):
            found = []
            for root, dirs, files in os.walk(inp, followlinks=True):
                dirs.sort()
                found += [os.path.join(root, f) for f in sorted(files) if _is_video_name(f)]
            if not found:
                raise ValueError(f"{inp}: no video files in this folder (extensions {', '.join(VIDEO_EXTENSIONS)})")
            for p in sorted(found):
                names.append(p)
                paths.append(p)
                labels.append(-1)
                starts.append(0)
                totals.append(-1)
        elif os.path.isfile(inp):
            ext = os.path.splitext(inp)[1].lower()
            if ext in LIST_EXTENSIONS:
                n, p, lab, s, t = _read_plain_list(inp, data_root)
                names += n
                paths += p
                labels += lab
                starts += s
                totals += t
            elif ext in VIDEO_EXTENSIONS:
                names.append(inp)
                paths.append(inp)
                labels.append(-1)
                starts.append(0)
                totals.append(-1)
            else:
                raise ValueError(f"{inp}: neither a video ({', '.join(VIDEO_EXTENSIONS)}) nor a list file "
                                 f"({', '.join(LIST_EXTENSIONS)})")
        else:
            raise FileNotFoundError(f"{inp}: no such file or folder")
    seen: Dict[Tuple[str, int, int], int] = {}
    keep = []
    for i, key in enumerate(zip(paths, starts, totals)):
        if key not in seen:
            seen[key] = i
            keep.append(i)
    pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
    return VideoList(paths=np.array(pick(paths)), names=np.array(pick(names)),
                     labels=np.array(pick(labels), dtype=np.int64), starts=np.array(pick(starts), dtype=np.int64),
                     totals=np.array(pick(totals), dtype=np.int64), source=", ".join(inputs))


_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def split_tool_args(args: Sequence[str]) -> Tuple[List[str], List[str]]:
    """`(overrides, inputs)` of the positional words of `tools/predict.py` / `extract_features.py`:
    `checkpoint=...` and `key=value` words are overrides unless they name an existing path."""
    overrides: List[str] = []
    inputs: List[str] = []
    for a in args:
        (overrides if _OVERRIDE.match(a) and not os.path.exists(a) else inputs).append(a)
    return overrides, inputs


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


def find_run_config(checkpoint: str) -> Optional[str]:
    """The `config.yaml` the engine saved in the run folder of `checkpoint` (a run folder,
    `model_final.pth` in one, or `<run>/checkpoints/<tag>`), or None."""
    p = os.path.abspath(checkpoint)
    start = p if os.path.isdir(p) else os.path.dirname(p)
    d = start
    for _ in range(3):  # <run>, <run>/checkpoints, <run>/checkpoints/<tag>
        cand = os.path.join(d, "config.yaml")
        if os.path.isfile(cand):
            return cand
        d = os.path.dirname(d)
    return None


def tool_config(config: Optional[str], args: Sequence[str], require_checkpoint: bool = True):
    """`(cfg, checkpoint)` of `tools/predict.py` / `extract_features.py`: `--config` when given,
    else the run's saved `config.yaml` (:func:`find_run_config`), else the config stored inside
    the checkpoint file (`model_final.pth` holds it; read by the one safe reader,
    `videohpm.models.checkpoint.read_checkpoint_file`, tensors on the meta device). `args` holds
    `checkpoint=` and the `key=value` overrides, as for `load_tool_config`.

    Raises:
        ValueError / FileNotFoundError / ConfigError as `videohpm.config.load_tool_config`, and a
        ValueError asking for `--config` when none can be found.
    """
    if config:
        return load_tool_config(config, args, require_checkpoint=require_checkpoint)
    ckpts = [a.split("=", 1)[1] for a in args if a.startswith("checkpoint=")]
    if len(ckpts) != 1 or not ckpts[0] or not os.path.exists(ckpts[0]):
        load_tool_config("-", args, require_checkpoint=True)  # raises the checkpoint= error
        raise ValueError("give --config")  # pragma: no cover (load_tool_config raised)
    found = find_run_config(ckpts[0])
    if found:
        return load_tool_config(found, args)
    stored = None
    if os.path.isfile(ckpts[0]):
        obj = read_checkpoint_file(ckpts[0], map_location="meta")
        stored = obj.get("config") if isinstance(obj, dict) else None
    if not isinstance(stored, dict):
        raise ValueError(f"checkpoint={ckpts[0]}: no config.yaml in its run folder and no config inside: give --config")
    overrides = ["model.pretrained=null"] + [a for a in args if not a.startswith("checkpoint=")]
    return config_from_dict(stored, overrides, source=f"checkpoint={ckpts[0]} (its config)"), ckpts[0]


def resolve_class_names(cfg: Any, classes_file: Optional[str], num_classes: Optional[int]
                        ) -> Tuple[Optional[List[str]], str]:
    """`(names, source)`: `--classes` first, then the config's `data.class_names`, then the
    `classes.txt` next to the config's `data.train` list (where `tools/make_lists.py` writes it;
    used only when its count fits); `(None, "ids")` when none is there. Raises ValueError when an
    explicit source's count differs from the model's classes."""
    names, source = None, "ids"
    if classes_file:
        names, source = read_class_names(classes_file), classes_file
    elif cfg.data.get("class_names"):
        names, source = [str(n) for n in cfg.data.class_names], "config data.class_names"
    elif cfg.data.get("train") and cfg.data.get("kind", "video") == "video":
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
    if int(topk) < 1:
        raise ValueError(f"--topk: must be >= 1, got {topk}")
    data_cfg = resolve(OmegaConf.to_object(cfg.data))
    if data_cfg.kind != "video":
        raise ValueError(f"data.kind={data_cfg.kind!r}: tools/predict.py predicts videos; test images with tools/test.py")
    videos = collect_videos(inputs, data_cfg.data_root if data_root is None else data_root)
    held = [f for f in PREDICTION_FILES if os.path.exists(os.path.join(output_dir, f))]
    if held and not overwrite:
        raise FileExistsError(f"--output-dir {output_dir}: holds {', '.join(held)} already; pass --overwrite "
                              "to replace them, or choose another --output-dir")
    if classes_file:
        read_class_names(classes_file)  # a bad file fails before the model is built
    device = vdist.init_distributed(cfg.train.dist_backend or None)
    net = load_classifier(cfg, checkpoint, ema=ema).to(device)
    names, names_source = resolve_class_names(cfg, classes_file, _num_outputs(net))
    dataset = build_eval_dataset(data_cfg, videos, "test", require_labels=False)
    loader = build_test_loader(dataset, batch_size=int(batch_size or cfg.train.batch_size),
                               num_workers=int(data_cfg.num_workers), pin_memory=device.type == "cuda",
                               collate_fn=build_collate(cfg.data, "test"))
    clips, crops = int(data_cfg.test_num_clips), int(data_cfg.test_num_crops)
    amp = _amp_dtype(str(cfg.train.precision), device)
    log.info("predicting %d videos × %d clips × %d crops on %d rank(s), %s", len(dataset), clips, crops,
             vdist.get_world_size(), amp or "fp32")
    local = predict_multiview(net, loader, device, num_crops=crops, amp_dtype=amp,
                              max_views_per_forward=max_views_per_forward)
    preds = gather_predictions(local)
    k = min(int(topk), int(preds.probs.shape[1])) if preds.probs.ndim == 2 and preds.probs.shape[1] else int(topk)
    answers = _answers(preds, videos, names, k)
    result: Dict[str, Any] = {
        "answers": answers, "num_videos": len(answers), "num_broken": sum(a.status != "ok" for a in answers),
        "class_names_source": names_source, "topk": k, "clips": clips, "crops": crops,
        "world_size": vdist.get_world_size(), "checkpoint": os.path.abspath(checkpoint), "ema": ema,
    }
    if vdist.is_main_process():
        if result["num_broken"] < result["num_videos"]:  # a run with no answer writes no file
            os.makedirs(output_dir, exist_ok=True)
            base = os.path.join(output_dir, "predictions")
            _write_csv(answers, base + ".csv", k)
            payload = {key: v for key, v in result.items() if key != "answers"}
            payload.update(model=built_name(net.recipe if hasattr(net, "recipe") else net), views=f"{clips}×{crops}",
                           class_names=names, predictions=[a.as_dict() for a in answers])
            with open(base + ".json", "w", encoding="utf-8") as f:
                json.dump(payload, f, indent=1, ensure_ascii=False)
                f.write("\n")
            result.update(csv=base + ".csv", json=base + ".json")
        if print_lines:
            for a in answers:
                print(format_answer(a), flush=True)
    vdist.barrier()
    return result
