"""videohpm.data.formats: the data-format registry (``data.kind``), its properties, and that a new
format is one class with one decorator that ``build_dataset`` reaches."""
import pytest
import torch
from torch.utils.data import Dataset

from videohpm.data import DataConfig, build_dataset, data_format, find_data_format, register_data_format, validate
from videohpm.data.formats import base


def test_registered_formats_and_their_properties():
    assert base.available_data_formats() == ("video", "image")
    video, image = data_format("video"), data_format("image")
    assert (video.is_video, video.source_is_dir, video.source_is_list, video.needs_num_classes) == (
        True, False, True, True)
    assert (image.is_video, image.source_is_dir, image.source_is_list, image.needs_num_classes) == (
        False, True, False, False)
    assert list(base.dataset_presets()) == ["ssv2", "k400", "generic", "imagefolder"]
    cfg = DataConfig(num_frames=8, input_size=32)
    assert video.clip_shape(cfg) == (3, 8, 32, 32) and image.clip_shape(cfg) == (3, 1, 32, 32)
    assert video.frames(cfg) == 8 and image.frames(cfg) == 1
    assert find_data_format("webdataset") is None
    with pytest.raises(ValueError, match=r"data.kind: 'webdataset' is not one of \('video', 'image'\)"):
        data_format("webdataset")


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="already registered"):
        register_data_format("video")(type("Other", (base.DataFormat,), {}))


class _Toy(Dataset):
    def __init__(self, n: int, shape):
        self.n, self.shape = n, shape

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"video": torch.full(self.shape, float(i)), "label": i % 2}


def test_a_new_format_is_one_class_and_one_decorator(monkeypatch, tmp_path):
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # registered for this test only
    shard = tmp_path / "train.tar"
    shard.write_bytes(b"")

    @register_data_format("toy")
    class ToyFormat(base.DataFormat):
        needs_num_classes = False
        datasets = {"toyset": dict(sampling_rate=1, finetune_sampling="window", test_num_clips=1,
                                   test_num_crops=1, flip=False)}
        default_dataset = "toyset"

        def build(self, cfg, split, key, path, keep_broken=False):
            return _Toy(3 if split == "pretrain" else 2, self.clip_shape(cfg))

    cfg = dict(kind="toy", train=str(shard), num_frames=4, input_size=16)
    assert validate(cfg, "pretrain").dataset == "toyset"  # "generic" means the format's default
    data = build_dataset(cfg, "pretrain")
    assert len(data) == 3 and data[2]["video"].shape == (3, 4, 16, 16) and float(data[2]["video"][0, 0, 0, 0]) == 2
    assert data_format("toy").name == "toy" and base.available_data_formats()[-1] == "toy"
    with pytest.raises(ValueError, match="data.dataset: 'ssv2' does not go with data.kind='toy'"):
        validate(dict(cfg, dataset="ssv2"))
