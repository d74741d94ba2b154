"""``data.kind: image``: ImageFolder roots (``<root>/<class>/<image>``) read as ``T = 1`` clips.

Pre-training uses MAE's RandomResizedCrop + flip; fine-tuning the video recipe's augmentation
(bicubic, as timm); validation a centre crop of ``input_size / image_crop_pct``; the test split
the multi-view dataset's single view. The classes come from the folders, so ``data.num_classes``
is optional.
"""
from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset
from torchvision.transforms.v2 import InterpolationMode

from ..datasets import ImageFolderDataset
from ..transforms import eval_transform, image_pretrain_transform, train_transform
from .base import DataFormat, register_data_format


@register_data_format("image")
class ImageFolderFormat(DataFormat):
    is_video = False
    source_is_dir = True
    source_is_list = False
    needs_num_classes = False
    datasets = {
        "imagefolder": dict(sampling_rate=1, finetune_sampling="window", test_num_clips=1, test_num_crops=1, flip=True),
    }
    default_dataset = "imagefolder"

    def build(self, cfg: Any, split: str, key: str, path: str, keep_broken: bool = False) -> Dataset:
        mean, std = cfg.mean, cfg.std
        if split == "pretrain":
            tf = image_pretrain_transform(cfg.input_size, cfg.image_pretrain_scale, bool(cfg.flip), mean, std)
            return ImageFolderDataset(path, tf, with_label=False, num_sample=cfg.num_sample, max_broken=cfg.max_broken)
        if split == "train":
            tf = train_transform(cfg.input_size, cfg.train_crop_scale, cfg.train_crop_ratio, bool(cfg.flip),
                                 cfg.rand_aug, cfg.reprob, mean, std, interpolation=InterpolationMode.BICUBIC)
            return ImageFolderDataset(path, tf, with_label=True, num_classes=cfg.num_classes,
                                      num_sample=cfg.num_sample, max_broken=cfg.max_broken)
        short = int(round(cfg.input_size / cfg.image_crop_pct))
        tf = eval_transform(cfg.input_size, short, mean, std, interpolation=InterpolationMode.BICUBIC)
        shape = self.clip_shape(cfg) if keep_broken and split == "val" else None
        return ImageFolderDataset(path, tf, with_label=True, num_classes=cfg.num_classes, max_broken=cfg.max_broken,
                                  multiview=split == "test", view_size=cfg.input_size, broken_shape=shape)
