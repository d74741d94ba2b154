"""Mask fidelity of the cheap HPM teacher modes (`method.kwargs.teacher_mode`, videohpm.methods.hpm).

For each held-out clip the trained EMA teacher scores every token three ways — `full` (the paper's
`L̂^t = d_ψt(f_θt(x))`) and each cheap mode — and every time slice (a row of Eq. 8's per-frame
selection; the whole sample for images) is compared:

- **hard-patch overlap**: `|top_p(L̂_full) ∩ top_p(L̂_mode)| / p` with `p = int(n·γ·α)` the
  number of patches Eq. 8 masks by score in a row of `n` tokens (`α = 0.5` by default, the
  schedule's end in the demo and Table 11; `γ` = `mask.kwargs.mask_ratio`). A random ranking
  scores `p / n` on average (the `random` row of the table);
- **Spearman's ρ** of the two score vectors (Pearson correlation of their ranks).

    python tools/teacher_fidelity.py --config configs/demo/pretrain_video_hpm.yaml \\
        checkpoint=outputs/demo/video/pretrain --modes subset:0.25,lowres:2
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from videohpm.data import build_dataset, build_eval_dataset, data_format
from videohpm.data.lists import read_list
from videohpm.engine.build import build_mask_generator, build_model, build_recipe_from_config
from videohpm.engine.checkpoint import CheckpointWeights, read_checkpoint, strip_prefix
from videohpm.evaluation.score_agreement import compare, summarize
from videohpm.masking import make_mask_generator
from videohpm.methods.hpm import HPM, TeacherMode, parse_teacher_mode
from videohpm.models import load_pretrained

__all__ = ["run_teacher_fidelity", "format_table"]

log = logging.getLogger(__name__)


def _fidelity_recipe(cfg: Any, weights: CheckpointWeights, seed: int) -> Tuple[nn.Module, HPM, str]:
    """`(model, recipe, teacher source)`: the HPM recipe of `cfg` with the checkpoint's student and
    EMA teacher (the student's weights where no teacher was saved: source `"student"`)."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    report = load_pretrained(model, strip_prefix(weights.model, "model."), strict=False)
    if not report.ok:
        raise ValueError(f"checkpoint={weights.source}: does not fit {cfg.model.name}:\n{report}")
    recipe = build_recipe_from_config(cfg, model, build_mask_generator(cfg))
    if not isinstance(recipe, HPM) or recipe.teacher is None or model.loss_predictor is None:
        raise ValueError(f"method.name: {cfg.method.name} is not an HPM config with a loss predictor")
    if weights.teacher:
        recipe.load_teacher_state_dict(strip_prefix(weights.teacher, "model."))
        return model, recipe, "ema"
    log.warning("checkpoint=%s has no EMA teacher: the student's weights score the patches", weights.source)
    recipe.load_teacher_state_dict(model.state_dict())
    return model, recipe, "student"


def _held_out_loader(cfg: Any, split: str, batch_size: Optional[int]) -> torch.utils.data.DataLoader:
    """One centre clip and crop per video of the validation list (or image folder)."""
    if split != "val":
        raise ValueError(f"split must be 'val' (the held-out clips), got {split!r}")
    if not cfg.data.val:
        raise ValueError("data.val: not set; the held-out clips come from the validation list (or image folder)")
    if not data_format(cfg.data.kind).source_is_list:
        data = build_dataset(cfg.data, "val")
    else:  # labels are not needed: a pre-training config may leave data.num_classes unset
        data = build_eval_dataset(cfg.data, read_list(cfg.data.val, cfg.data.data_root), "val", require_labels=False)
    return torch.utils.data.DataLoader(data, batch_size=int(batch_size or cfg.train.batch_size), shuffle=False,
                                       num_workers=int(cfg.data.num_workers))


def _score_clips(recipe: HPM, loader: Any, sel: Any, modes: Sequence[TeacherMode], max_clips: Optional[int],
                 seed: int, per_frame: bool, sel_name: str) -> Dict[str, Any]:
    """Per-row overlap / Spearman of every mode against `full` (and of a random ranking) over the
    loader's clips: `{"per_mode", "random", "clips", "num_hard", "grid"}`. `sel_name` names the
    selection's α and γ in errors."""
    per_mode: Dict[str, Dict[str, List[torch.Tensor]]] = {str(m): {"overlap": [], "spearman": []} for m in modes}
    rand: List[torch.Tensor] = []
    clips, num_hard, grid = 0, None, None
    gen = torch.Generator().manual_seed(seed)
    for batch in loader:
        x = batch["video"].float()
        if max_clips is not None:
            x = x[: max(0, max_clips - clips)]
        if x.shape[0] == 0:
            break
        grid = recipe.model.grid(x)
        num_hard = sel.num_hard_per_row((x.shape[0], *grid), None)
        if num_hard < 1:
            raise ValueError(f"{sel_name} selects no patch by score on grid {grid}")
        full = recipe.teacher_scores(x, "full")
        for m in modes:
            for k, v in compare(full, recipe.teacher_scores(x, m), grid, num_hard, per_frame).items():
                per_mode[str(m)][k].append(v)
        noise = torch.rand(full.shape, generator=gen)
        rand.append(compare(full, noise, grid, num_hard, per_frame)["overlap"])
        clips += x.shape[0]
        if max_clips is not None and clips >= max_clips:
            break
    return {"per_mode": per_mode, "random": rand, "clips": clips, "num_hard": num_hard, "grid": grid}


@torch.no_grad()
def run_teacher_fidelity(cfg: Any, checkpoint: str, modes: Sequence[str], output_dir: Optional[str] = None,
                         alpha: float = 0.5, split: str = "val", max_clips: Optional[int] = None,
                         batch_size: Optional[int] = None, seed: int = 0) -> Dict[str, Any]:
    """The fidelity table of `modes` for a pre-training config + checkpoint (module doc).

    The teacher is the EMA teacher saved with the checkpoint (the student's weights if the
    checkpoint has none, said in the result as `teacher: "student"`). Clips are `split`'s
    (`val`: one centre clip and crop per video, the held-out videos). Writes
    `<output_dir>/teacher_fidelity.json` when `output_dir` is given.
    """
    parsed = [parse_teacher_mode(m) for m in modes]  # bad modes fail before any work
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    weights = read_checkpoint(checkpoint)
    _, recipe, teacher_src = _fidelity_recipe(cfg, weights, seed)
    gamma = float(cfg.mask.kwargs.get("mask_ratio", 0.9))
    per_frame = bool(cfg.mask.kwargs.get("per_frame", True))
    sel = make_mask_generator("hpm", mask_ratio=gamma, alpha_0=alpha, alpha_T=alpha, per_frame=per_frame)
    loader = _held_out_loader(cfg, split, batch_size)
    scored = _score_clips(recipe, loader, sel, parsed, max_clips, seed, per_frame,
                          f"alpha={alpha} with mask_ratio={gamma}")
    clips, grid, num_hard = scored["clips"], scored["grid"], scored["num_hard"]
    if clips == 0:
        raise ValueError(f"data.{split}: no clips")
    rows = grid[1] * grid[2] if per_frame and grid[0] > 1 else grid[0] * grid[1] * grid[2]  # tokens per row
    res: Dict[str, Any] = {
        "checkpoint": os.path.abspath(checkpoint), "source": weights.source, "meta": weights.meta,
        "teacher": teacher_src, "split": split, "clips": clips, "grid": list(grid), "row_tokens": rows,
        "alpha": alpha, "mask_ratio": gamma, "num_hard_per_row": num_hard, "seed": seed,
        "modes": {m: {k: summarize(v) for k, v in d.items()} for m, d in scored["per_mode"].items()},
        "random": {"overlap": summarize(scored["random"]), "overlap_expected": num_hard / rows,
                   "spearman_expected": 0.0},
    }
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "teacher_fidelity.json"), "w") as f:
            json.dump(res, f, indent=1)
    return res


def format_table(res: Dict[str, Any]) -> str:
    """Markdown table of :func:`run_teacher_fidelity`'s result."""
    lines = [f"{res['clips']} clips of `{res['split']}`, grid {tuple(res['grid'])}, {res['num_hard_per_row']} hard "
             f"patches of {res['row_tokens']} per row (α = {res['alpha']}, γ = {res['mask_ratio']}), "
             f"teacher: {res['teacher']}",
             "", "| teacher_mode | hard-patch overlap (mean ± std over rows) | Spearman ρ (mean ± std) |",
             "|---|---|---|"]
    for m, d in res["modes"].items():
        lines.append(f"| `{m}` | {d['overlap']['mean']:.3f} ± {d['overlap']['std']:.3f} | "
                     f"{d['spearman']['mean']:.3f} ± {d['spearman']['std']:.3f} |")
    r = res["random"]
    lines.append(f"| random ranking | {r['overlap']['mean']:.3f} ± {r['overlap']['std']:.3f} "
                 f"(expected {r['overlap_expected']:.3f}) | 0 |")
    return "\n".join(lines)
