"""Frame-index samplers: count, order, bounds, stride, short videos, multi-view, crops."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from videohpm.data.sampling import (
    clip_span,
    crop_offsets,
    dense_indices,
    multiview_indices,
    segment_indices,
    union_indices,
    window_clip_starts,
)


@pytest.mark.parametrize("length", [64, 100, 301])
@pytest.mark.parametrize("stride", [2, 4])
def test_dense_long_video(length, stride):
    g = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(300):
        idx = dense_indices(length, 16, stride, generator=g)
        assert idx.shape == (16,) and idx.dtype == np.int64
        assert (np.diff(idx) == stride).all()  # exact stride, increasing
        assert idx[0] >= 0 and idx[-1] <= length - 1  # in bounds
        starts.add(int(idx[0]))
    max_start = length - clip_span(16, stride)
    assert min(starts) >= 0 and max(starts) <= max_start
    # the start is random over the whole admissible range (both ends reachable)
    assert len(starts) > min(max_start, 30) // 2
    if max_start <= 3:
        assert starts == set(range(max_start + 1))


def test_dense_exact_fit_and_given_start():
    assert dense_indices(31, 16, 2).tolist() == list(range(0, 31, 2))  # only one start fits
    assert dense_indices(100, 16, 4, start=10).tolist() == list(range(10, 71, 4))
    assert dense_indices(100, 16, 4, start=1000)[-1] == 99  # clamped to the last valid start


@pytest.mark.parametrize("length", [1, 5, 10, 30])
def test_dense_short_video_repeats_last_frame(length):
    idx = dense_indices(length, 16, 4)
    assert idx.shape == (16,)
    assert (np.diff(idx) >= 0).all() and idx.min() == 0 and idx.max() == length - 1
    expected = [min(i * 4, length - 1) for i in range(16)]  # VideoMAE padding
    assert idx.tolist() == expected


def test_dense_reproducible_with_generator():
    a = [dense_indices(500, 16, 4, generator=torch.Generator().manual_seed(7)).tolist() for _ in range(2)]
    assert a[0] == a[1]


@pytest.mark.parametrize("length", [16, 17, 50, 301])
def test_segments_training(length):
    g = torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(200):
        idx = segment_indices(length, 16, generator=g)
        assert idx.shape == (16,)
        assert (np.diff(idx) > 0).all()  # strictly increasing when L >= S
        for i, f in enumerate(idx):  # one frame inside each segment [floor(iL/S), floor((i+1)L/S))
            assert (i * length) // 16 <= f < ((i + 1) * length) // 16
        seen.update(idx.tolist())
    if length <= 50:  # random positions: every frame of every segment gets drawn
        assert seen == set(range(length))


def test_segments_centre_is_deterministic():
    idx = segment_indices(160, 16, offset=0.5)
    assert idx.tolist() == [5 + 10 * i for i in range(16)]
    assert segment_indices(160, 16, offset=0.5).tolist() == idx.tolist()


@pytest.mark.parametrize("length", [1, 3, 8, 15])
def test_segments_short_video(length):
    for offset in (None, 0.5):
        idx = segment_indices(length, 16, offset=offset)
        assert idx.shape == (16,) and (np.diff(idx) >= 0).all()
        assert idx.min() >= 0 and idx.max() <= length - 1
        assert set(idx.tolist()) == set(range(length))  # every frame is used


def test_window_test_clips_span_the_video():
    starts = window_clip_starts(300, clip_span(16, 4), 5)
    assert starts[0] == 0 and starts[-1] == 300 - 61
    assert np.allclose(np.diff(starts), (300 - 61) / 4, atol=1)
    clips = multiview_indices(300, 16, 5, mode="window", stride=4)
    assert clips.shape == (5, 16)
    assert clips[-1, -1] == 299 and clips[0, 0] == 0
    assert (np.diff(clips, axis=1) == 4).all()
    assert window_clip_starts(300, 61, 1) == [(300 - 61) // 2]  # one clip: centred
    short = multiview_indices(20, 16, 5, mode="window", stride=4)  # shorter than a clip
    assert (short == dense_indices(20, 16, 4, start=0)).all()


def test_segment_test_clips_interleave():
    clips = multiview_indices(64, 16, 2, mode="segments")
    assert clips.shape == (2, 16)
    assert clips[0].tolist() == [4 * i + 1 for i in range(16)]  # offset 0.25 of each 4-frame segment
    assert clips[1].tolist() == [4 * i + 3 for i in range(16)]  # offset 0.75
    one = multiview_indices(64, 16, 1, mode="segments")
    assert one[0].tolist() == segment_indices(64, 16, offset=0.5).tolist()  # = validation clip
    with pytest.raises(ValueError, match="unknown sampling mode"):
        multiview_indices(64, 16, 2, mode="tsn")


def test_union_indices_one_decode():
    clips = multiview_indices(300, 16, 5, mode="window", stride=4)
    unique, pos = union_indices(clips)
    assert (np.diff(unique) > 0).all()
    assert (unique[pos] == clips).all()
    assert len(unique) <= clips.size


def test_crop_offsets():
    assert crop_offsets(298, 224, 3) == [0, 37, 74]
    assert crop_offsets(224, 224, 3) == [0, 0, 0]
    assert crop_offsets(300, 224, 1) == [38]
    for o in crop_offsets(401, 224, 5):
        assert 0 <= o <= 401 - 224
    with pytest.raises(ValueError, match="larger than"):
        crop_offsets(100, 224, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="length"):
        dense_indices(0, 16, 4)
    with pytest.raises(ValueError, match="stride"):
        dense_indices(10, 16, 0)
    with pytest.raises(ValueError, match="offset"):
        segment_indices(10, 16, offset=1.0)
