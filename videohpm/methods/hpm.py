"""Hard Patches Mining (HPM journal §3; Fig. 3): a student that reconstructs and predicts its own
per-patch reconstruction loss, and an EMA teacher whose predicted losses choose what to mask.

One training step, as the paper writes it:

1. The teacher sees **all** tokens and predicts the patch-wise loss
   `L̂^t = d_ψt(f_θt(x))` (§3.4), under `torch.inference_mode()` and with no graph kept.
2. The easy-to-hard generator masks the `α_t·γ·n` patches with the highest `L̂^t` and fills the
   rest of the `γ·n` masked patches at random (Eq. 8, supplement Alg. S1; per time slice for
   video).
3. The student encodes the visible tokens, reconstructs the masked ones (`L_rec`, Eq. 3) and
   predicts their loss (`L_pred`, relative Eq. 5–7 or absolute Eq. 4): `L = L_rec + L_pred`
   (Eq. 2).
4. After the optimizer step the teacher follows the student, `θ_t ← m·θ_t + (1 − m)·θ_s`
   (Eq. 1; encoder, reconstructor and loss predictor alike).

The ablation switches, targets and decoder masking are described on `HPM`; the cheaper teachers
(`teacher_mode`, beyond the paper) on `TeacherMode`.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from videohpm.methods.base import EmaTeacher, Recipe, clip_of, num_visible
from videohpm.methods.target_mixin import TargetMixin, take_tokens
from videohpm.objectives.loss_prediction import absolute_loss_prediction, relative_loss_prediction
from videohpm.precision import PRECISION_DTYPES, emulated_bf16_warning, runnable_dtype
from videohpm.schedules import cosine_between

LOSS_PRED_KINDS = ("relative", "absolute", "none")
#: `method.kwargs.absolute_target`: Eq. 4 as printed, or the official code's per-image standardised L_rec.
ABSOLUTE_TARGETS = ("raw", "standardized")
TEACHER_PRECISIONS = {"auto": None, **PRECISION_DTYPES}

log = logging.getLogger(__name__)

TEACHER_MODE_KINDS = ("full", "subset", "lowres")
_MODE_KEY = "method.kwargs.teacher_mode"


class TeacherMode:
    """A parsed `method.kwargs.teacher_mode`: `kind` in `TEACHER_MODE_KINDS` and its `value` (r of
    `subset:r`, s of `lowres:s`; None for `full`).

    Teacher modes (`teacher_mode`, beyond the paper; `full` is the paper and the default). Step 1's
    teacher pass costs more than a whole plain MAE step (docs/BENCHMARKS.md, "HPM teacher modes").
    Each mode is one code path through the same EMA teacher (θ_t, φ_t, ψ_t of Eq. 1) under
    `torch.inference_mode()`, gives scores `L̂^t ∈ R^N` for *all* N tokens of the student's grid,
    draws nothing on the host, and feeds Eq. 8 unchanged (the `α_t·γ·n` highest of `L̂^t` per time
    slice are masked). With `H'×W'` tokens per time slice, `n_s = H'·W'`:

    - `full`: `L̂^t = d_ψt(f_θt(x))` (HPM journal version §3.1 and §3.4, the input of Eq. 8): the
      encoder over all N tokens.
    - `subset:r` (0 < r < 1): a teacher mask `M^t ∈ {0, 1}^N` hides all but `k_r = round(r·n_s)`
      (at least 1) tokens of every time slice, drawn uniformly on the device (the same count in every
      slice and sample, so `f_θt` runs on `T'·k_r` tokens without a sync); then
      `L̂^t = d_ψt(f_θt(x ⊙ M^t))` — the student's input of Eq. 3–5 with `M^t` for `M`: hidden
      positions enter d_ψt as the mask token plus their position, exactly as in the student's Eq. 4–5
      prediction, and d_ψt outputs a score at all N positions (the kept ones from their latents).
      Encoder cost ≈ r × `full` (less for attention); d_ψt still runs over all N tokens.
    - `lowres:s` (s > 1): the clip is resized per frame (bilinear, antialiased) to
      `(h·p) × (w·p)` pixels with `h = max(1, round(H'/s))`, `w = max(1, round(W'/s))`, time kept;
      the teacher runs on that `T'×h×w` grid (its position tables interpolated, as for any other
      input size): `L̂^t = U(d_ψt(f_θt(D_s(x))))`, where `U` upsamples each time slice's `h×w`
      score map bilinearly (`align_corners=False`) onto the `H'×W'` grid. Encoder and d_ψt cost
      ≈ 1/s² × `full` (1/s⁴ for attention).

    The cheap modes give scores only: `target="ema_features"` (which needs the teacher's features
    at all N tokens at full resolution) requires `full`.
    """

    __slots__ = ("kind", "value")

    def __init__(self, kind: str, value: Optional[float] = None) -> None:
        self.kind, self.value = kind, value

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value:g}"

    __repr__ = __str__

    def kept_per_slice(self, n_s: int) -> int:
        """`subset:r`: tokens the teacher's encoder sees per time slice, `round(r·n_s)` in [1, n_s]."""
        return min(n_s, max(1, int(round(float(self.value) * n_s))))

    def low_grid(self, h: int, w: int) -> Tuple[int, int]:
        """`lowres:s`: the teacher's spatial token grid `(max(1, round(h/s)), max(1, round(w/s)))`."""
        s = float(self.value)
        return max(1, int(round(h / s))), max(1, int(round(w / s)))


def parse_teacher_mode(spec: Any) -> TeacherMode:
    """`"full"`, `"subset:r"` (0 < r < 1) or `"lowres:s"` (s > 1) → `TeacherMode`.

    Raises:
        ValueError naming `method.kwargs.teacher_mode` for anything else.
    """
    usage = "'full', 'subset:<r>' with 0 < r < 1 (e.g. subset:0.25) or 'lowres:<s>' with s > 1 (e.g. lowres:2)"
    if isinstance(spec, TeacherMode):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"{_MODE_KEY} must be a string, {usage}; got {spec!r}")
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "full" and not sep:
        return TeacherMode("full")
    if kind not in TEACHER_MODE_KINDS or kind == "full" or not sep:
        raise ValueError(f"{_MODE_KEY} must be {usage}; got {spec!r}")
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(f"{_MODE_KEY}={spec!r}: {arg!r} is not a number; expected {usage}") from None
    if kind == "subset" and not 0.0 < value < 1.0:
        raise ValueError(f"{_MODE_KEY}={spec!r}: the fraction r of tokens the teacher sees must be in (0, 1)")
    if kind == "lowres" and not (math.isfinite(value) and value > 1.0):
        raise ValueError(f"{_MODE_KEY}={spec!r}: the spatial downsampling factor s must be > 1")
    return TeacherMode(kind, value)


def _checked_mode(spec: Any, learn_to_mask: bool, target: str) -> TeacherMode:
    mode = parse_teacher_mode(spec)
    if mode.kind != "full" and not learn_to_mask:
        raise ValueError(f"{_MODE_KEY}={mode}: a cheap teacher mode only changes how the teacher scores "
                         "patches for the mask; it needs method.learn_to_mask=true (or use 'full')")
    if mode.kind != "full" and target == "ema_features":
        raise ValueError(f"{_MODE_KEY}={mode}: target=ema_features needs the teacher's features at all N "
                         "tokens; use teacher_mode=full")
    return mode


def _check_absolute_target(absolute_target: str, loss_pred: str) -> None:
    if absolute_target not in ABSOLUTE_TARGETS:
        raise ValueError(f"method.absolute_target must be one of {ABSOLUTE_TARGETS}, got {absolute_target!r}")
    if absolute_target != "raw" and loss_pred != "absolute":
        raise ValueError(f"method.absolute_target={absolute_target!r} sets the target of the absolute loss "
                         f"prediction (Eq. 4); it needs method.loss_pred=absolute (now {loss_pred!r})")


#: Said once per process (see `HPM.teacher_dtype`).
_warn_bf16_emulated = emulated_bf16_warning(log, "teacher_precision", "the HPM teacher runs in fp32 instead")


class HPM(TargetMixin, Recipe):
    """HPM recipe (HPM journal Eq. 1–8; the step in the module doc).

    Ablation switches (HPM journal Tables 1, 10–12):
    - `loss_pred="none", learn_to_mask=False` is plain MAE with the given random strategy;
    - `loss_pred="relative"|"absolute", learn_to_mask=False`: the auxiliary objective only, masks
      from a random strategy (no teacher forward is run at all);
    - `learn_to_mask=True` (default): masks from the teacher's predictions with `mask=hpm`.

    Targets (HPM journal Table 1; `videohpm.methods.mae` module doc): `target="pixel"` (default),
    `"ema_features"` — the EMA teacher's encoder features over all N tokens, read from the teacher
    forward that step 1 runs anyway (one teacher encoder pass per step; when α_t = 0 only the
    encoder runs, not d_ψt; the teacher then exists even with `learn_to_mask=False`) — or
    `"teacher_features"` (frozen pre-trained teacher from a local file). With a feature target,
    L_rec and the loss predictor's ground truth are the per-token ℓ2-normalized feature MSE.

    Decoder masking (`decoder_mask=True`, VideoMAE V2 running cell): d_φ reconstructs only K of the
    masked tokens (`videohpm.masking.running_cell`), and L_rec is on those K tokens. L_pred is then
    computed on the same K tokens, the only ones with a reconstruction loss: d_ψ gets *the same
    decoder input* as d_φ — the visible latents plus mask tokens at the K decoded positions — so its
    cost drops by the same factor and every prediction has a ground truth. The teacher is unchanged:
    it still scores all N tokens (mask=None), since the mask must be chosen among all of them.

    Args:
        model: the student `MaskedAutoencoder`, built with `loss_predictor=True` unless
            `loss_pred="none"`.
        mask_generator: `hpm` (easy-to-hard, needs scores) when `learn_to_mask`, otherwise any
            random strategy (`random`, `tube`, `frame`).
        loss_pred: "relative" (BCE, Eq. 5–7, the paper's default), "absolute" (MSE, Eq. 4) or
            "none" (no L_pred: plain MAE).
        learn_to_mask: mask from the teacher's predicted losses (§3.4).
        momentum: EMA coefficient m of Eq. 1 (0.999 in the paper).
        momentum_end: if set, m follows a cosine schedule from `momentum` to `momentum_end` over
            training (BYOL-style); None keeps m constant as the paper does.
        pred_weight: weight of L_pred in Eq. 2 (1 in the paper).
        target: "pixel" | "ema_features" | "teacher_features" (Table 1; above).
        feature_teacher: `{model, path, kwargs}` for "teacher_features".
        decoder_mask, decoder_mask_ratio: VideoMAE V2 running-cell decoder masking (above).
        teacher_precision: compute precision of the teacher's forward (its weights stay fp32):
            "auto" (default: the student's precision, i.e. `train.precision`), or "fp32", "bf16",
            "fp16" (autocast). The teacher only ranks patches (and, for `ema_features`, gives
            targets) without gradients, as it does under the papers' mixed-precision training.
            On a CPU with native bf16 GEMMs (AVX512-BF16 / AMX, `videohpm.hardware.cpu_bf16_is_fast`)
            "bf16" with an fp32 student shortens the HPM step (the teacher's pass over all N
            tokens is a large part of it; docs/BENCHMARKS.md). Not the default there, so that an
            fp32 run gives the same masks on every machine.
        teacher_mode: how the teacher computes `L̂^t` (`TeacherMode`): "full"
            (default, the paper), "subset:r" (its encoder sees a random fraction r of the tokens)
            or "lowres:s" (it sees the clip downsampled s× in space).
        absolute_target: the target of `loss_pred="absolute"`: "raw" (default; Eq. 4 as
            printed, the per-patch L_rec) or "standardized" (the official HPM code's
            `forward_learning_loss`: L_rec standardised per image over its masked patches,
            `(L − mean) / sqrt(var_unbiased + 1e-6)`).
    """

    def __init__(
        self,
        model: nn.Module,
        mask_generator: Any,
        *,
        loss_pred: str = "relative",
        learn_to_mask: bool = True,
        momentum: float = 0.999,
        momentum_end: Optional[float] = None,
        pred_weight: float = 1.0,
        target: str = "pixel",
        feature_teacher: Optional[Mapping[str, Any]] = None,
        decoder_mask: bool = False,
        decoder_mask_ratio: float = 0.5,
        teacher_precision: str = "auto",
        teacher_mode: str = "full",
        absolute_target: str = "raw",
    ) -> None:
        super().__init__()
        mode = _checked_mode(teacher_mode, learn_to_mask, target)
        if teacher_precision not in TEACHER_PRECISIONS:
            raise ValueError(f"method.teacher_precision must be one of {tuple(TEACHER_PRECISIONS)}, "
                             f"got {teacher_precision!r}")
        if loss_pred not in LOSS_PRED_KINDS:
            raise ValueError(f"method.loss_pred must be one of {LOSS_PRED_KINDS}, got {loss_pred!r}")
        _check_absolute_target(absolute_target, loss_pred)
        needs_scores = bool(getattr(mask_generator, "needs_scores", False))
        if learn_to_mask and not needs_scores:
            raise ValueError(
                "method.learn_to_mask=true needs a score-driven mask strategy (mask.name=hpm); "
                "for the 'L_pred with random masks' ablation set method.learn_to_mask=false"
            )
        if not learn_to_mask and needs_scores:
            raise ValueError("method.learn_to_mask=false needs a random mask strategy (random, tube, frame)")
        if learn_to_mask and loss_pred == "none":
            raise ValueError("method.learn_to_mask=true needs a trained loss predictor: set method.loss_pred")
        has_predictor = getattr(model, "loss_predictor", None) is not None
        if loss_pred != "none" and not has_predictor:
            raise ValueError("method=hpm needs a model built with loss_predictor=true (model.loss_predictor)")
        for name, m in (("momentum", momentum), ("momentum_end", momentum_end)):
            if m is not None and not 0.0 <= m <= 1.0:
                raise ValueError(f"method.{name} must be in [0, 1], got {m}")

        self.model = model
        self.mask_generator = mask_generator
        self.loss_pred = loss_pred
        self.learn_to_mask = learn_to_mask
        self.momentum = momentum
        self.momentum_end = momentum_end
        self.pred_weight = pred_weight
        self.absolute_target = absolute_target
        self.teacher_precision = teacher_precision
        self.teacher_mode = mode
        self._progress = 0.0
        self._setup_targets(target, feature_teacher, decoder_mask, decoder_mask_ratio)
        # The teacher (`EmaTeacher`) is kept out of the module tree on purpose: DeepSpeed must
        # neither cast it to bf16/fp16 (an EMA with m = 0.999 underflows there) nor partition it
        # under ZeRO-3, and the optimizer must never see it. It follows the input's device lazily.
        if learn_to_mask or target == "ema_features":
            self.ema = EmaTeacher(model)

    # ------------------------------------------------------------------ teacher
    def teacher_scores(self, x: torch.Tensor, mode: Any = None) -> torch.Tensor:
        """`L̂^t = d_ψt(f_θt(x))` over all N tokens: `[B, N]` (§3.4), computed in teacher mode
        `mode` (a `teacher_mode` spec or `TeacherMode`; None: the recipe's own, which stays as it
        is either way)."""
        return self._teacher_forward(x, scores=True, mode=mode)[1]

    def _teacher_forward(self, x: torch.Tensor, scores: bool = True, mode: Any = None
                         ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """One teacher pass over all N tokens: features `f_θt(x)`: `[B, N, D]` (the
        `ema_features` target; None for other targets) and, if `scores`, `L̂^t = d_ψt(f_θt(x))`:
        `[B, N]` (§3.4); in a cheap `teacher_mode` only the scores (`TeacherMode`)."""
        mode = self.teacher_mode if mode is None else parse_teacher_mode(mode)
        teacher = self.ema.follow(x.device)
        dtype = self.teacher_dtype(x.device)
        with torch.inference_mode(), torch.autocast(
            device_type=x.device.type, dtype=dtype, enabled=dtype != torch.float32
        ):
            if mode.kind == "full":
                latent = teacher.encode(x.float())
                pred = teacher.decode(latent, None, head="loss", grid=teacher.grid(x)).squeeze(-1) if scores else None
            else:  # scores only (ema_features needs `full`, checked in __init__)
                latent, pred = None, self._cheap_teacher_scores(teacher, x.float(), mode)
        # Out of inference mode so that masks / targets built from them may be saved for backward.
        feats = teacher.patch_latents(latent).float().clone() if self.target == "ema_features" else None
        return feats, (None if pred is None else pred.float().clone())

    def _cheap_teacher_scores(self, teacher: nn.Module, x: torch.Tensor, mode: TeacherMode) -> torch.Tensor:
        """`L̂^t: [B, N]` of the `subset:r` / `lowres:s` teacher modes (`TeacherMode`), on the
        student's token grid; no host sync (every count is a Python int of the shapes)."""
        b = x.shape[0]
        t, h, w = teacher.grid(x)
        if mode.kind == "subset":
            k = mode.kept_per_slice(h * w)
            keys = torch.rand(b, t, h * w, device=x.device)
            hidden = torch.ones(b, t, h * w, dtype=torch.bool, device=x.device)
            hidden = hidden.scatter_(2, keys.topk(k, dim=2, sorted=False).indices, False).reshape(b, t * h * w)
            latent = teacher.encode(x, hidden, num_visible=t * k)
            return teacher.decode(latent, hidden, head="loss", grid=(t, h, w), all_tokens=True).squeeze(-1)
        # lowres: D_s per frame, the teacher on the small grid, U back per time slice
        hl, wl = mode.low_grid(h, w)
        p = teacher.patch_size
        c, frames = x.shape[1], x.shape[2]
        small = F.interpolate(x.transpose(1, 2).reshape(b * frames, c, *x.shape[-2:]), size=(hl * p, wl * p),
                              mode="bilinear", align_corners=False, antialias=True)
        small = small.reshape(b, frames, c, hl * p, wl * p).transpose(1, 2)
        pred = teacher.decode(teacher.encode(small), None, head="loss", grid=(t, hl, wl))  # [B, t·hl·wl, 1]
        up = F.interpolate(pred.float().reshape(b * t, 1, hl, wl), size=(h, w), mode="bilinear", align_corners=False)
        return up.reshape(b, t * h * w)

    def teacher_dtype(self, device: Optional[torch.device] = None) -> torch.dtype:
        """The autocast dtype of the teacher's forward (`teacher_precision`) on `device`.

        bf16 on a CPU without native bf16 (`videohpm.hardware.cpu_bf16_is_fast()` is False: no
        AVX512-BF16 / AMX, or capped by `ONEDNN_MAX_CPU_ISA` / `ATEN_CPU_CAPABILITY`) would only
        be emulated — slower than fp32 (docs/BENCHMARKS.md), and oneDNN has no bf16 kernel there
        at all — so the teacher runs in fp32 instead (the faster path, and exact), said once per
        process."""
        if self.teacher_precision != "auto":
            dtype = TEACHER_PRECISIONS[self.teacher_precision]
        else:
            student = next(self.model.parameters()).dtype
            dtype = student if student in (torch.float16, torch.bfloat16) else torch.float32
        return runnable_dtype(dtype, device, _warn_bf16_emulated)

    def current_momentum(self) -> float:
        if self.momentum_end is None:
            return self.momentum
        # cosine from momentum (progress 0) to momentum_end (progress 1)
        return cosine_between(self.momentum, self.momentum_end, min(max(self._progress, 0.0), 1.0))

    @torch.no_grad()
    def on_step_end(self) -> None:
        """EMA update of the teacher, Eq. 1: `θ_t ← m·θ_t + (1 − m)·θ_s`.

        Runs over the full student parameters (`EmaTeacher.update` gathers them under ZeRO-3).
        Buffers (none in a ViT, but kept general) are copied.
        """
        if self.ema is not None:
            self.ema.update(self.model, self.current_momentum())

    # ------------------------------------------------------------------ step
    def forward(self, batch: Any, progress: float = 0.0) -> Dict[str, torch.Tensor]:
        """One HPM step. `batch["video"]: [B, C, T, H, W]`; `progress ∈ [0, 1]` drives α_t."""
        x = clip_of(batch)
        self._progress = float(progress)
        grid = (x.shape[0], *self.model.grid(x))
        # At α_t = 0 (the start of an easy-to-hard schedule) no patch is chosen by score: the
        # mask is purely random and the teacher's forward would be wasted.
        # With target=ema_features the teacher's encoder runs every step (its features are the
        # target), its loss predictor only when scores are needed.
        need_scores = self.learn_to_mask and self.mask_generator.num_hard_per_row(grid, progress) > 0
        ema_features = scores = None
        if need_scores or self.target == "ema_features":
            ema_features, scores = self._teacher_forward(x, scores=need_scores)
        if need_scores:
            mask = self.mask_generator(grid, scores=scores, progress=progress, device=x.device)
        else:
            mask = self.mask_generator(grid, progress=progress, device=x.device)
        ids = self._decode_ids(mask, grid)  # [B, K] with decoder masking, else None (all masked)

        latent = self.model.encode(x, mask, num_visible=num_visible(self.mask_generator, grid))
        pred = self.model.decode(latent, mask, head="pixel", grid=grid[1:], decode_ids=ids)  # [B, K, P]
        with torch.no_grad():
            target = take_tokens(self._full_target(x, ema_features), mask, ids, count=pred.shape[1])
        rec_per_patch = self._token_loss(pred, target)  # [B, K]
        loss_rec = rec_per_patch.mean()
        out: Dict[str, torch.Tensor] = {"loss_rec": loss_rec.detach()}
        loss = loss_rec
        if self.loss_pred != "none":
            # d_ψ on the same tokens as d_φ (the ones with a reconstruction loss)
            pred_loss = self.model.decode(latent, mask, head="loss", grid=grid[1:],
                                          decode_ids=ids).squeeze(-1)  # [B, K]
            if self.loss_pred == "relative":
                loss_p = relative_loss_prediction(pred_loss, rec_per_patch.detach())
            else:
                loss_p = absolute_loss_prediction(pred_loss, rec_per_patch.detach(),
                                                  standardize=self.absolute_target == "standardized")
            loss = loss + self.pred_weight * loss_p
            out["loss_pred"] = loss_p.detach()
        if self.learn_to_mask and hasattr(self.mask_generator, "alpha"):
            out["alpha"] = torch.tensor(float(self.mask_generator.alpha(progress)))
        out["loss"] = loss
        return out
