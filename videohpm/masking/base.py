"""Shared interface, registry and on-device helpers for mask generators.

Every strategy is a small class behind one interface::

    gen = make_mask_generator("tube", mask_ratio=0.9)
    mask = gen((B, T', H', W'), scores=None, progress=None, device=None, generator=None)
    # mask: bool [B, N], N = T'·H'·W', True = masked (hidden from the encoder)

Conventions (docs/ARCHITECTURE.md): tokens are flattened time-major,
``index = τ·(H'·W') + h·W' + w``, and every sample masks exactly the same number of tokens
(and, for per-frame strategies, the same number in every time slice), so that
``x[~mask].view(B, -1, D)`` is always valid.

All selection is done with one ``topk`` over uniform noise (optionally biased by scores)
per row of a ``[rows, n]`` tensor: fully vectorized on the device, no per-sample Python
loops, no host-device synchronisation, and deterministic given a ``torch.Generator``.
"""
from __future__ import annotations

import inspect
import math
from typing import Callable, Dict, Optional, Sequence, Tuple, Type, Union

import torch

Grid = Tuple[int, int, int, int]
DeviceLike = Union[str, torch.device, None]

_REGISTRY: Dict[str, Type["MaskGenerator"]] = {}


def register_mask_generator(name: str) -> Callable[[Type["MaskGenerator"]], Type["MaskGenerator"]]:
    """Class decorator: make a strategy available to :func:`make_mask_generator` as ``name``."""

    def deco(cls: Type["MaskGenerator"]) -> Type["MaskGenerator"]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"mask generator {name!r} is already registered by {_REGISTRY[name]!r}")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return deco


def available_mask_generators() -> list:
    """Sorted names accepted by :func:`make_mask_generator`."""
    return sorted(_REGISTRY)


def make_mask_generator(name: str, **cfg) -> "MaskGenerator":
    """Build the mask strategy ``name`` with options ``cfg``.

    Raises ``ValueError`` naming an unknown strategy and ``TypeError`` naming unknown
    options (a typo such as ``mask_ration=0.9`` must not silently fall back to a default).
    """
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown mask generator {name!r}; available: {available_mask_generators()}"
        )
    cls = _REGISTRY[name]
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p != "self"]
    unknown = sorted(k for k in cfg if k not in accepted)
    if unknown:
        raise TypeError(
            f"mask generator {name!r} got unknown option(s) {unknown}; accepted: {accepted}"
        )
    return cls(**cfg)


def check_ratio(value: float, key: str, *, low_open: bool = True, high_open: bool = True) -> float:
    """Validate a ratio in (0, 1) (or [0, 1] with closed ends) and return it as ``float``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{key} must be a number, got {value!r}") from None
    lo_ok = v > 0.0 if low_open else v >= 0.0
    hi_ok = v < 1.0 if high_open else v <= 1.0
    if not (lo_ok and hi_ok and math.isfinite(v)):
        lo = "(0" if low_open else "[0"
        hi = "1)" if high_open else "1]"
        raise ValueError(f"{key} must be in {lo}, {hi}, got {value!r}")
    return v


def parse_grid(grid: Sequence[int]) -> Grid:
    """Validate ``grid = (B, T', H', W')`` (tuple, list or ``torch.Size``) of positive ints."""
    if isinstance(grid, torch.Tensor) or not hasattr(grid, "__len__") or len(grid) != 4:
        raise ValueError(f"grid must be (B, T', H', W'), got {grid!r}")
    out = []
    for key, v in zip(("B", "T'", "H'", "W'"), grid):
        try:
            bad = isinstance(v, bool) or int(v) != v or int(v) <= 0
        except (TypeError, ValueError):
            bad = True
        if bad:
            raise ValueError(f"grid[{key}] must be a positive int, got {v!r} in grid {tuple(grid)!r}")
        out.append(int(v))
    return tuple(out)  # type: ignore[return-value]


def resolve_device(device: DeviceLike, scores: Optional[torch.Tensor]) -> torch.device:
    """Device of the mask: ``device`` if given, else that of ``scores``, else CPU."""
    if device is not None:
        return torch.device(device)
    if scores is not None:
        return scores.device
    return torch.device("cpu")


def uniform_noise(
    shape: Tuple[int, ...], device: torch.device, generator: Optional[torch.Generator]
) -> torch.Tensor:
    """``U[0, 1)`` noise of ``shape`` on ``device`` (float32), drawn from ``generator`` if given.

    A generator lives on one device; when it differs from ``device`` the noise is drawn where
    the generator lives and copied over (an asynchronous copy, not a sync), which keeps a CPU
    generator usable for reproducible masks on any device.
    """
    if generator is None:
        return torch.rand(shape, device=device)
    gen_device = generator.device
    if gen_device.type == device.type and (
        device.index is None or gen_device.index is None or gen_device.index == device.index
    ):
        return torch.rand(shape, device=device, generator=generator)
    return torch.rand(shape, device=gen_device, generator=generator).to(device, non_blocking=True)


def topk_mask(keys: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask ``[rows, n]`` with exactly ``k`` True per row: the ``k`` largest ``keys``.

    ``keys: [rows, n]`` float. With ``keys`` = uniform noise this is a uniformly random
    ``k``-subset per row (MAE's "argsort of noise", done with one ``topk`` + ``scatter``).
    """
    rows, n = keys.shape
    if not 0 <= k <= n:
        raise ValueError(f"cannot mask {k} of {n} tokens per row")
    mask = torch.zeros(rows, n, dtype=torch.bool, device=keys.device)
    if k == 0:
        return mask
    idx = keys.topk(k, dim=1, largest=True, sorted=False).indices
    return mask.scatter_(1, idx, True)


def check_scores(scores: torch.Tensor, grid: Grid, key: str = "scores") -> torch.Tensor:
    """Return ``scores`` as a detached ``[B, N]`` tensor; accepts ``[B, N]`` or ``[B, N, 1]``.

    The loss-predictor head outputs ``[B, N, 1]``; masks never carry gradients, hence detach.
    """
    B, T, H, W = grid
    N = T * H * W
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{key} must be a torch.Tensor [B, N], got {type(scores).__name__}")
    if scores.dim() == 3 and scores.shape[-1] == 1:
        scores = scores[..., 0]
    if tuple(scores.shape) != (B, N):
        raise ValueError(
            f"{key} must have shape [B, N] = [{B}, {N}] for grid {grid} "
            f"(or [B, N, 1]), got {tuple(scores.shape)}"
        )
    if scores.is_complex() or not scores.is_floating_point():
        scores = scores.float()
    return scores.detach()


class MaskGenerator:
    """Base class of all strategies.

    Subclasses implement :meth:`_generate` on a validated grid and device and
    :meth:`num_masked_per_sample`. ``mask_ratio`` γ ∈ (0, 1) is the fraction of masked tokens.
    """

    name: str = "base"
    #: True if the strategy reads ``scores`` (e.g. HPM's teacher-predicted loss).
    needs_scores: bool = False

    def __init__(self, mask_ratio: float) -> None:
        self.mask_ratio = check_ratio(mask_ratio, "mask_ratio")

    # -- public API --------------------------------------------------------------------
    def __call__(
        self,
        grid: Sequence[int],
        scores: Optional[torch.Tensor] = None,
        progress: Optional[float] = None,
        device: DeviceLike = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Sample a mask.

        Args:
            grid: ``(B, T', H', W')`` token grid (batch size and tokens per axis).
            scores: ``[B, N]`` per-token scores (strategies that use them), else ignored.
            progress: training progress in [0, 1] (strategies with a schedule), else ignored.
            device: where to build the mask (default: ``scores``' device, else CPU).
            generator: ``torch.Generator`` for reproducible masks.

        Returns:
            mask: bool ``[B, N]``, True = masked, time-major token order.
        """
        g = parse_grid(grid)
        dev = resolve_device(device, scores)
        return self._generate(g, scores=scores, progress=progress, device=dev, generator=generator)

    def num_masked_per_sample(self, grid: Sequence[int]) -> int:
        """Exact number of masked tokens in every sample for ``grid``."""
        raise NotImplementedError

    def num_visible_per_sample(self, grid: Sequence[int]) -> int:
        """Exact number of visible tokens in every sample (``N − num_masked``)."""
        B, T, H, W = parse_grid(grid)
        return T * H * W - self.num_masked_per_sample(grid)

    # -- implementation hooks ----------------------------------------------------------
    def _generate(
        self,
        grid: Grid,
        *,
        scores: Optional[torch.Tensor],
        progress: Optional[float],
        device: torch.device,
        generator: Optional[torch.Generator],
    ) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"mask_ratio={self.mask_ratio}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class SliceMaskGenerator(MaskGenerator):
    """Random strategies that mask ``int(γ·n_s)`` tokens in every time slice (``n_s = H'·W'``,
    VideoMAE's ``TubeMaskingGenerator`` count): ``tube`` (one spatial mask for all slices) and
    ``frame`` (an independent mask per slice)."""

    def num_masked_per_slice(self, grid: Sequence[int]) -> int:
        B, T, H, W = parse_grid(grid)
        return per_slice_count(H * W, self.mask_ratio)

    def num_masked_per_sample(self, grid: Sequence[int]) -> int:
        B, T, H, W = parse_grid(grid)
        return T * self.num_masked_per_slice(grid)


class RowMaskGenerator(MaskGenerator):
    """Strategies that select ``k`` tokens within each *row* (``hpm``, ``importance``).

    A row is a time slice of ``n = H'·W'`` tokens for video (T' > 1) with ``per_frame=True``,
    with ``k = int(γ·n)`` as ``frame``/``tube``; else the whole sample, ``n = N`` and
    ``k = N − int(N·(1−γ))`` as ``random``. Subclasses set ``self.per_frame`` (a bool, checked
    by :func:`check_per_frame`).
    """

    per_frame: bool

    def _rows(self, grid: Grid) -> Tuple[int, int]:
        """(rows, n): selection is independent within each row of ``n`` tokens."""
        B, T, H, W = grid
        if self.per_frame and T > 1:
            return B * T, H * W
        return B, T * H * W

    def num_masked_per_row(self, grid: Sequence[int]) -> int:
        """``k``: masked tokens per row (per time slice if per-frame, else per sample)."""
        B, T, H, W = parse_grid(grid)
        if self.per_frame and T > 1:
            return per_slice_count(H * W, self.mask_ratio)
        return global_count(T * H * W, self.mask_ratio)

    def num_masked_per_sample(self, grid: Sequence[int]) -> int:
        g = parse_grid(grid)
        rows, _ = self._rows(g)
        return (rows // g[0]) * self.num_masked_per_row(g)


def check_per_frame(per_frame: bool) -> bool:
    """``per_frame`` as given, if it is a bool (a string such as ``"false"`` would be truthy)."""
    if not isinstance(per_frame, bool):
        raise TypeError(f"per_frame must be a bool, got {per_frame!r}")
    return per_frame


def per_slice_count(n_slice: int, mask_ratio: float) -> int:
    """Masked tokens per time slice: ``int(γ · n_s)`` (VideoMAE's TubeMaskingGenerator)."""
    return int(mask_ratio * n_slice)


def global_count(n: int, mask_ratio: float) -> int:
    """Masked tokens over ``n`` tokens as MAE / Alg. S1: ``n − int(n · (1 − γ))`` (len_keep)."""
    return n - int(n * (1 - mask_ratio))
