"""Augmentation: multi-scale crop geometry, identical parameters on every frame, test views."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from videohpm.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    GroupMultiScaleCrop,
    MultiViewTransform,
    VideoRandAugment,
    eval_transform,
    image_pretrain_transform,
    parse_rand_aug,
    pretrain_transform,
    train_transform,
)


def _texture(t: int, h: int, w: int, seed: int = 0, same: bool = True) -> tv_tensors.Video:
    """A structured uint8 video [T, 3, H, W]; with ``same`` every frame is identical."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (3, h // 8 + 1, w // 8 + 1), generator=g, dtype=torch.uint8)
    frame = F.resize(base, [h, w], antialias=True)
    if same:
        return tv_tensors.Video(frame.unsqueeze(0).repeat(t, 1, 1, 1))
    frames = torch.stack([torch.roll(frame, shifts=3 * i, dims=-1) for i in range(t)])
    return tv_tensors.Video(frames)


def test_multiscale_crop_candidates_and_bounds():
    crop = GroupMultiScaleCrop(224)
    pairs = crop.crop_candidates(256, 340)
    sides = [256, 224, 192, 168]  # int(256 * s) for s in (1, .875, .75, .66), 224 snapped
    assert sorted(pairs) == sorted(
        (h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= 1
    )
    seen_pos, seen_pairs = set(), set()
    torch.manual_seed(0)
    for _ in range(2000):
        p = crop.make_params([torch.empty(1, 3, 256, 340)])
        assert (p["height"], p["width"]) in pairs
        assert 0 <= p["top"] and p["top"] + p["height"] <= 256
        assert 0 <= p["left"] and p["left"] + p["width"] <= 340
        seen_pairs.add((p["height"], p["width"]))
        seen_pos.add((p["height"], p["width"], p["top"], p["left"]))
    assert seen_pairs == set(pairs)
    # 13 fixed positions per size (fewer when the step is 0 along an axis)
    per_pair = {pair: len({(t, l) for h, w, t, l in seen_pos if (h, w) == pair}) for pair in pairs}
    assert per_pair[(224, 224)] == 13 and per_pair[(256, 256)] == 5  # full height: only 5 distinct


def test_multiscale_crop_output_is_resized_crop():
    video = _texture(4, 64, 96, same=False)
    crop = GroupMultiScaleCrop(32)
    torch.manual_seed(3)
    p = crop.make_params([video])
    out = crop.transform(video, p)
    ref = F.resized_crop(video.as_subclass(torch.Tensor), p["top"], p["left"], p["height"], p["width"], [32, 32],
                         antialias=True)
    assert out.shape == (4, 3, 32, 32) and torch.equal(out.as_subclass(torch.Tensor), ref)


def _all_frames_equal(clip: torch.Tensor) -> bool:  # clip [C, T, H, W]
    return bool((clip - clip[:, :1]).abs().max() < 1e-5)


@pytest.mark.parametrize("name", ["pretrain", "pretrain_flip", "train", "image_like"])
def test_same_random_parameters_on_every_frame(name):
    """Identical input frames stay identical: every random parameter is drawn once per clip."""
    tf = {
        "pretrain": pretrain_transform(32, flip=False),
        "pretrain_flip": pretrain_transform(32, flip=True),
        # every op forced on: RandAugment p=1, erasing p=1
        "train": train_transform(32, flip=True, rand_aug="rand-m9-n4-mstd0.5-inc1-p1", reprob=1.0),
        "image_like": image_pretrain_transform(32),
    }[name]
    outs = []
    for seed in range(12):
        torch.manual_seed(seed)
        clip = tf(_texture(8, 48, 64, seed=seed))
        assert clip.shape == (3, 8, 32, 32) and clip.dtype == torch.float32
        assert _all_frames_equal(clip), f"frames differ after {name}"
        outs.append(clip[:, 0])
    # ...while different calls do draw different parameters
    torch.manual_seed(100)
    a = tf(_texture(8, 48, 64, seed=0))
    torch.manual_seed(101)
    b = tf(_texture(8, 48, 64, seed=0))
    assert not torch.allclose(a, b)


def test_randaugment_changes_pixels_and_parses():
    ra = parse_rand_aug("rand-m7-n4-mstd0.5-inc1")
    assert isinstance(ra, VideoRandAugment)
    assert (ra.magnitude_level, ra.num_ops, ra.magnitude_std, ra.prob) == (7.0, 4, 0.5, 0.5)
    assert "Identity" not in ra._AUGMENTATION_SPACE
    forced = parse_rand_aug("rand-m9-n2-p1")
    video = _texture(2, 32, 32)
    changed = 0
    for seed in range(10):
        torch.manual_seed(seed)
        changed += not torch.equal(forced(video), video)
    assert changed >= 8
    assert parse_rand_aug("") is None and parse_rand_aug(None) is None
    for bad, msg in (("rand-m7-x3", "unknown key 'x'"), ("rand-m7-inc0", "only inc1"), ("auto-m7", "must start"),
                     ("rand-m11", r"\[0, 10\]"), ("rand-m7-n", "cannot parse")):
        with pytest.raises(ValueError, match=msg):
            parse_rand_aug(bad)


def test_eval_transform_is_resize_then_centre_crop():
    video = _texture(3, 60, 90, same=False)
    out = eval_transform(32, 40)(video)
    resized = F.resize(video.as_subclass(torch.Tensor), [40], antialias=True)  # [3, 3, 40, 60]
    crop = resized[..., 4:36, 14:46].float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    expected = (crop.permute(1, 0, 2, 3) - mean) / std
    assert out.shape == (3, 3, 32, 32)
    assert torch.allclose(out, expected, atol=1e-5)
    torch.manual_seed(0)
    assert torch.equal(eval_transform(32, 40)(video), out)  # deterministic


def _unnormalize(x: torch.Tensor) -> torch.Tensor:  # [C, ...] -> uint8 levels
    shape = (3,) + (1,) * (x.ndim - 1)
    return ((x * torch.tensor(IMAGENET_STD).view(shape) + torch.tensor(IMAGENET_MEAN).view(shape)) * 255).round()


@pytest.mark.parametrize("wide", [True, False])
def test_multiview_crops_and_clip_order(wide):
    """Channel 0 encodes the column (or row), channel 1 the frame: check every view's window."""
    u, s = 6, 32
    h, w = (s, 80) if wide else (80, s)
    frames = torch.zeros(u, 3, h, w, dtype=torch.uint8)
    coord = torch.arange(w if wide else h, dtype=torch.uint8) * 2
    if wide:
        frames[:, 0] = coord.view(1, 1, w)
    else:
        frames[:, 0] = coord.view(1, h, 1)
    frames[:, 1] = (torch.arange(u, dtype=torch.uint8) * 20).view(u, 1, 1)
    positions = np.array([[0, 1, 2], [3, 4, 5]])  # 2 clips of 3 frames
    views = MultiViewTransform(s, num_crops=3)(frames, positions)
    assert views.shape == (6, 3, 3, s, s)
    levels = _unnormalize(views.transpose(0, 1))  # [C, V, T, s, s]
    for k in range(2):
        for j, off in enumerate([0, 24, 48]):  # start / centre / end of the long side (80 - 32 = 48)
            v = k * 3 + j  # clip-major
            first = levels[0, v, :, 0, 0] if wide else levels[0, v, :, 0, 0]
            last = levels[0, v, :, 0, -1] if wide else levels[0, v, :, -1, 0]
            assert (first == 2 * off).all() and (last == 2 * (off + s - 1)).all()
            assert levels[1, v, :, 0, 0].tolist() == [20.0 * f for f in positions[k]]
    one = MultiViewTransform(s, num_crops=1)(frames, positions)
    assert one.shape == (2, 3, 3, s, s)
    assert torch.equal(one[1], views[4])  # 1 crop = the centre crop
