"""Data formats (``data.kind``), one module each behind :mod:`.base`'s registry: ``video``
(VideoMAE list files of videos, :mod:`.video_list`) and ``image`` (ImageFolder roots as ``T = 1``
clips, :mod:`.image_folder`). A new format is one module here with one decorator, imported below.
"""
from .base import (DataFormat, available_data_formats, data_format, dataset_presets, find_data_format,
                   register_data_format)
from .video_list import VideoListFormat, build_eval_dataset
from .image_folder import ImageFolderFormat

__all__ = ["DataFormat", "available_data_formats", "data_format", "dataset_presets", "find_data_format",
           "register_data_format",
           "VideoListFormat", "ImageFolderFormat", "build_eval_dataset"]
