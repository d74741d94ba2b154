"""Clip augmentation on ``tv_tensors.Video`` tensors with torchvision.transforms.v2.

Decoded frames enter as uint8 ``[T, C, H, W]`` wrapped in :class:`torchvision.tv_tensors.Video`;
every v2 transform then draws its random parameters **once per call** and applies them to all
``T`` frames, so a clip is cropped, flipped, RandAugment-ed and erased identically in every
frame (what VideoMAE's per-group PIL transforms do by hand). Pipelines end in float
``[C, T, H, W]`` normalized with ImageNet mean/std; images are the same with ``T = 1``.
Geometric ops run on uint8 before the float conversion (4× less memory traffic); RandAugment
runs after the random resized crop (VideoMAE: at the decoded resolution; same ops, fewer pixels).

Pipelines: :func:`pretrain_transform` — VideoMAE pre-training: :class:`GroupMultiScaleCrop`
(scales 1, .875, .75, .66, at most one step of aspect distortion, 13 fixed crop positions),
resize, optional flip (off for SSv2, whose labels depend on direction); :func:`train_transform` —
fine-tuning: random resized crop (0.08–1, 3/4–4/3), flip (K400), :class:`VideoRandAugment`
(``rand-m7-n4-mstd0.5-inc1``), normalization, random erasing (``reprob``, normal noise);
:func:`eval_transform` — validation: resize the short side, centre crop;
:class:`MultiViewTransform` — test: short side to the crop size, ``num_crops`` crops along the long
side per clip; :func:`image_pretrain_transform` — image pre-training (MAE): RandomResizedCrop
(0.2–1), flip.
"""
from __future__ import annotations

import re
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size

from videohpm.constants import IMAGENET_MEAN, IMAGENET_STD

from .sampling import crop_offsets

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "GroupMultiScaleCrop",
    "VideoRandAugment",
    "parse_rand_aug",
    "ToClip",
    "frames_to_video",
    "pretrain_transform",
    "train_transform",
    "eval_transform",
    "image_pretrain_transform",
    "MultiViewTransform",
]


def frames_to_video(frames: np.ndarray | torch.Tensor) -> tv_tensors.Video:
    """Decoded frames ``[T, H, W, C]`` uint8 (numpy or torch) -> ``Video`` ``[T, C, H, W]``.

    No copy: a permuted view of the decoder's buffer (the first resize/crop makes it compact).
    """
    if isinstance(frames, np.ndarray):
        with warnings.catch_warnings():  # read-only decoder/PIL buffers: nothing here writes in place
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.from_numpy(frames)
    else:
        t = frames
    if t.ndim != 4 or t.shape[-1] not in (1, 3):
        raise ValueError(f"expected frames [T, H, W, C], got {tuple(t.shape)}")
    return tv_tensors.Video(t.permute(0, 3, 1, 2))


class ToClip(torch.nn.Module):
    """``[T, C, H, W]`` (Video) -> plain tensor ``[C, T, H, W]``, the model's layout."""

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return video.as_subclass(torch.Tensor).permute(1, 0, 2, 3)


class GroupMultiScaleCrop(v2.Transform):
    """VideoMAE's multi-scale crop: a crop of side ``min(H, W) · scale``, then resize.

    Crop width and height are drawn independently from ``base · scales`` but at most
    ``max_distort`` scale steps apart (mild aspect jitter); a side within 3 px of the output
    size snaps to it. The crop is placed at one of 13 fixed positions on a 4×4 grid of steps
    ``((W - w) // 4, (H - h) // 4)``: the 4 corners, the centre, the 4 edge midpoints and the 4
    quarter points (``more_fix_crop``; 5 positions without). The same crop is applied to every
    frame of the clip.

    Args:
        size: output side (square) or ``(h, w)``.
        scales: relative crop sides (VideoMAE: 1, .875, .75, .66).
        max_distort: largest index distance between the width and height scale.
        more_fix_crop: use 13 positions instead of 5.
        interpolation: resize interpolation (bilinear, as VideoMAE).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
        max_distort: int = 1,
        more_fix_crop: bool = True,
        interpolation: F.InterpolationMode = F.InterpolationMode.BILINEAR,
    ) -> None:
        super().__init__()
        self.size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if not scales or any(not 0 < s <= 1 for s in scales):
            raise ValueError(f"scales must be in (0, 1], got {list(scales)}")
        self.scales = tuple(float(s) for s in scales)
        self.max_distort = int(max_distort)
        self.more_fix_crop = bool(more_fix_crop)
        self.interpolation = interpolation

    def crop_candidates(self, height: int, width: int) -> List[Tuple[int, int]]:
        """All admissible ``(crop_h, crop_w)`` pairs for an input of this size."""
        base = min(height, width)
        sides = [int(base * s) for s in self.scales]
        out_h, out_w = self.size
        hs = [out_h if abs(s - out_h) < 3 else s for s in sides]
        ws = [out_w if abs(s - out_w) < 3 else s for s in sides]
        return [
            (min(h, height), min(w, width))
            for i, h in enumerate(hs)
            for j, w in enumerate(ws)
            if abs(i - j) <= self.max_distort
        ]

    def position_candidates(self, height: int, width: int, crop_h: int, crop_w: int) -> List[Tuple[int, int]]:
        """The fixed ``(top, left)`` positions for a crop of this size."""
        hs, ws = (height - crop_h) // 4, (width - crop_w) // 4
        grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]  # (row, col) in steps: corners + centre
        if self.more_fix_crop:
            grid += [(2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
        return [(r * hs, c * ws) for r, c in grid]

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        height, width = query_size(flat_inputs)
        pairs = self.crop_candidates(height, width)
        crop_h, crop_w = pairs[int(torch.randint(len(pairs), ()).item())]
        positions = self.position_candidates(height, width, crop_h, crop_w)
        top, left = positions[int(torch.randint(len(positions), ()).item())]
        return dict(top=top, left=left, height=crop_h, width=crop_w)

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        return self._call_kernel(
            F.resized_crop, inpt, **params, size=list(self.size), interpolation=self.interpolation, antialias=True
        )


class VideoRandAugment(v2.RandAugment):
    """timm-style RandAugment (``rand-m{M}-n{N}-mstd{S}-inc1``) on torchvision's op set.

    Per call (= per clip): ``num_ops`` times, with probability ``prob`` pick one operation
    uniformly and a magnitude ``m ~ N(magnitude, magnitude_std)`` clipped to ``[0, 10]``
    (timm's scale, 10 = strongest), mapped onto torchvision's 31 bins; the sign of signed ops is
    random. The same operation, magnitude and sign hit every frame of the clip. torchvision's
    Posterize / Solarize / enhance ops already grow stronger with the magnitude (timm's
    ``inc1`` "increasing" variants); ``Identity`` is dropped from the op set because ``prob``
    already leaves ops out (timm's set has no identity either).

    Input must be uint8 (as v2.RandAugment).
    """

    _AUGMENTATION_SPACE = {k: v for k, v in v2.RandAugment._AUGMENTATION_SPACE.items() if k != "Identity"}

    def __init__(
        self,
        magnitude: float = 7.0,
        num_ops: int = 4,
        magnitude_std: float = 0.5,
        prob: float = 0.5,
        num_magnitude_bins: int = 31,
        interpolation: F.InterpolationMode = F.InterpolationMode.BILINEAR,
        fill: Any = None,
    ) -> None:
        super().__init__(num_ops=num_ops, magnitude=0, num_magnitude_bins=num_magnitude_bins,
                         interpolation=interpolation, fill=fill)
        if not 0.0 <= magnitude <= 10.0:
            raise ValueError(f"RandAugment magnitude must be in [0, 10], got {magnitude}")
        self.magnitude_level = float(magnitude)
        self.magnitude_std = float(magnitude_std)
        self.prob = float(prob)

    def _sample_level(self) -> float:
        m = self.magnitude_level
        if self.magnitude_std == float("inf"):
            m = float(torch.rand(()) * m)
        elif self.magnitude_std > 0:
            m = m + self.magnitude_std * float(torch.randn(()))
        return min(max(m, 0.0), 10.0)

    def forward(self, *inputs: Any) -> Any:
        flat_inputs_with_spec, image_or_video = self._flatten_and_extract_image_or_video(inputs)
        height, width = F.get_size(image_or_video)
        for _ in range(self.num_ops):
            if self.prob < 1.0 and float(torch.rand(())) >= self.prob:
                continue
            transform_id, (magnitudes_fn, signed) = self._get_random_item(self._AUGMENTATION_SPACE)
            magnitudes = magnitudes_fn(self.num_magnitude_bins, height, width)
            if magnitudes is not None:
                level = round(self._sample_level() / 10.0 * (self.num_magnitude_bins - 1))
                magnitude = float(magnitudes[level])
                if signed and torch.rand(()) <= 0.5:
                    magnitude = -magnitude
            else:
                magnitude = 0.0
            image_or_video = self._apply_image_or_video_transform(
                image_or_video, transform_id, magnitude, interpolation=self.interpolation, fill=self._fill
            )
        return self._unflatten_and_insert_image_or_video(flat_inputs_with_spec, image_or_video)


def parse_rand_aug(spec: Optional[str]) -> Optional[VideoRandAugment]:
    """Parse a timm RandAugment string, e.g. VideoMAE's ``"rand-m7-n4-mstd0.5-inc1"``.

    Keys: ``m`` magnitude (0–10), ``n`` number of ops, ``mstd`` magnitude noise std (``inf`` =
    uniform in ``[0, m]``), ``p`` per-op probability (default 0.5 as timm), ``inc`` must be 1
    (torchvision's ops are the increasing variants). ``None``, ``""`` or ``"none"`` disable it.

    Raises:
        ValueError: malformed string or unknown key (named in the message).
    """
    if spec is None or spec.strip().lower() in ("", "none"):
        return None
    parts = spec.strip().split("-")
    if parts[0] != "rand":
        raise ValueError(f"rand_aug: {spec!r} must start with 'rand-' (timm RandAugment string)")
    kw: Dict[str, float] = dict(magnitude=9.0, num_ops=2, magnitude_std=0.0, prob=0.5)
    for part in parts[1:]:
        m = re.fullmatch(r"([a-z]+)([0-9.]+|inf)", part)
        if m is None:
            raise ValueError(f"rand_aug: cannot parse {part!r} in {spec!r}")
        key, val = m.group(1), m.group(2)
        if key == "m":
            kw["magnitude"] = float(val)
        elif key == "n":
            kw["num_ops"] = int(float(val))
        elif key == "mstd":
            kw["magnitude_std"] = float(val)
        elif key == "p":
            kw["prob"] = float(val)
        elif key == "inc":
            if int(float(val)) != 1:
                raise ValueError(f"rand_aug: only inc1 (increasing ops) is supported, got {part!r}")
        else:
            raise ValueError(f"rand_aug: unknown key {key!r} in {spec!r} (known: m, n, mstd, p, inc)")
    return VideoRandAugment(magnitude=kw["magnitude"], num_ops=int(kw["num_ops"]),
                            magnitude_std=kw["magnitude_std"], prob=kw["prob"])


def _normalize(mean: Sequence[float], std: Sequence[float]) -> List[torch.nn.Module]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def pretrain_transform(
    input_size: int,
    scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
    flip: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """VideoMAE pre-training: multi-scale crop → resize → (flip) → normalize.

    ``Video [T, C, H, W]`` uint8 → ``[C, T, input_size, input_size]`` float.
    """
    ops: List[torch.nn.Module] = [GroupMultiScaleCrop(input_size, scales)]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops + _normalize(mean, std) + [ToClip()])


def train_transform(
    input_size: int,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (0.75, 4.0 / 3.0),
    flip: bool = True,
    rand_aug: Optional[str] = "rand-m7-n4-mstd0.5-inc1",
    reprob: float = 0.25,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: F.InterpolationMode = F.InterpolationMode.BILINEAR,
) -> v2.Compose:
    """Fine-tuning: random resized crop → (flip) → RandAugment → normalize → random erasing.

    ``Video [T, C, H, W]`` uint8 → ``[C, T, input_size, input_size]`` float; every random
    parameter is shared by all frames. Mixup/CutMix are the engine's (they mix samples).
    """
    ops: List[torch.nn.Module] = [
        v2.RandomResizedCrop(input_size, scale=tuple(scale), ratio=tuple(ratio), interpolation=interpolation,
                             antialias=True)
    ]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    ra = parse_rand_aug(rand_aug)
    if ra is not None:
        ops.append(ra)
    ops += _normalize(mean, std)
    if reprob > 0:
        ops.append(v2.RandomErasing(p=reprob, value="random"))
    return v2.Compose(ops + [ToClip()])


def eval_transform(
    input_size: int,
    short_side_size: Optional[int] = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: F.InterpolationMode = F.InterpolationMode.BILINEAR,
) -> v2.Compose:
    """Validation: resize the short side to ``short_side_size`` (default ``input_size``), centre crop.

    ``Video [T, C, H, W]`` uint8 → ``[C, T, input_size, input_size]`` float.
    """
    short = int(short_side_size or input_size)
    if short < input_size:
        raise ValueError(f"short_side_size {short} < input_size {input_size}")
    return v2.Compose(
        [v2.Resize(short, interpolation=interpolation, antialias=True), v2.CenterCrop(input_size)]
        + _normalize(mean, std)
        + [ToClip()]
    )


def image_pretrain_transform(
    input_size: int,
    scale: Sequence[float] = (0.2, 1.0),
    flip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """MAE image pre-training: RandomResizedCrop(scale 0.2–1, bicubic) → flip → normalize.

    ``Video [1, C, H, W]`` uint8 → ``[C, 1, input_size, input_size]`` float.
    """
    ops: List[torch.nn.Module] = [
        v2.RandomResizedCrop(input_size, scale=tuple(scale), interpolation=F.InterpolationMode.BICUBIC, antialias=True)
    ]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops + _normalize(mean, std) + [ToClip()])


class MultiViewTransform:
    """Test views from one decode: ``num_clips × num_crops`` clips of ``crop_size²``.

    The decoded union of all clips' frames is resized (short side → ``crop_size``) and
    normalized **once**; each clip then gathers its frames and each crop slices the long side at
    start / centre / end (3 crops) or the centre (1 crop).

    Args:
        crop_size: view side (VideoMAE: the short side size, 224).
        num_crops: spatial crops per clip.
        mean, std: normalization.

    Call:
        frames: ``Video`` / tensor ``[U, C, H, W]`` uint8, the union of the clips' frames.
        positions: ``[K, T]`` indices into ``frames`` for each clip.

    Returns:
        ``[K · num_crops, C, T, crop_size, crop_size]`` float, clip-major
        (view ``v = k · num_crops + j``).
    """

    def __init__(
        self,
        crop_size: int,
        num_crops: int = 3,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: F.InterpolationMode = F.InterpolationMode.BILINEAR,
    ) -> None:
        self.crop_size = int(crop_size)
        self.num_crops = int(num_crops)
        self.interpolation = interpolation
        # normalize uint8 levels directly: (x - 255·mean) / (255·std)
        self.shift = (torch.tensor(mean, dtype=torch.float32) * 255.0).view(1, 3, 1, 1, 1)
        self.scale = (1.0 / (torch.tensor(std, dtype=torch.float32) * 255.0)).view(1, 3, 1, 1, 1)

    def __call__(self, frames: torch.Tensor, positions: np.ndarray | torch.Tensor) -> torch.Tensor:
        video = frames if isinstance(frames, tv_tensors.Video) else tv_tensors.Video(frames)
        # resize, gather and crop on uint8 (4x less memory traffic); float only for the output
        video = F.resize(video, [self.crop_size], interpolation=self.interpolation, antialias=True)
        video = video.as_subclass(torch.Tensor)  # [U, C, h, w] uint8
        h, w = video.shape[-2:]
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.long)
        num_clips, t = pos.shape
        clips = video[pos.reshape(-1)].reshape(num_clips, t, *video.shape[1:])  # [K, T, C, h, w]
        s = self.crop_size
        if w >= h:
            crops = [clips[..., :, o : o + s] for o in crop_offsets(w, s, self.num_crops)]
        else:
            crops = [clips[..., o : o + s, :] for o in crop_offsets(h, s, self.num_crops)]
        views = torch.stack(crops, dim=1).flatten(0, 1)  # [V, T, C, s, s] uint8, clip-major
        out = torch.empty((views.shape[0], views.shape[2], t, s, s), dtype=torch.float32)
        out.copy_(views.permute(0, 2, 1, 3, 4))  # one pass: permute + uint8 -> float
        return out.sub_(self.shift).mul_(self.scale)  # [V, C, T, s, s]
