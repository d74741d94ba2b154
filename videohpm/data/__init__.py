"""videohpm.data: list files, decoding, frame sampling, augmentation and datasets.

Entry points: :class:`DataConfig` + :func:`build_dataset` (``split`` in pretrain / train / val /
test) + :func:`collate`; :func:`make_demo_data` writes the bundled motion-centric demo set.
"""
from .config import DataConfig, build_collate, build_dataset, resolve, validate
from .datasets import (
    BrokenVideoError,
    ImageFolderDataset,
    VideoClassificationDataset,
    VideoClipDataset,
    VideoMultiViewDataset,
    VideoPretrainDataset,
    collate,
)
from .lists import ListFormatError, VideoList, build_k400_lists, build_ssv2_lists, read_list, write_list
from .video import VideoDecodeError, VideoReader, check_video
from .demo import make_demo_data

__all__ = [
    "DataConfig",
    "build_dataset",
    "build_collate",
    "collate",
    "resolve",
    "validate",
    "BrokenVideoError",
    "ImageFolderDataset",
    "VideoClassificationDataset",
    "VideoClipDataset",
    "VideoMultiViewDataset",
    "VideoPretrainDataset",
    "ListFormatError",
    "VideoList",
    "read_list",
    "write_list",
    "build_ssv2_lists",
    "build_k400_lists",
    "VideoDecodeError",
    "VideoReader",
    "check_video",
    "make_demo_data",
]
