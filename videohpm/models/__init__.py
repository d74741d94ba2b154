"""VideoMAE-style ViT models: masked autoencoder (d_φ + d_ψ), classifier, registry, checkpoints."""
from .autoencoder import MaskedAutoencoder, MaskedDecoder
from .loading import LoadReport, load_pretrained
from .classifier import VideoClassifier
from .patches import IMAGENET_MEAN, IMAGENET_STD, mask_split, patchify, pixel_target, unpatchify
from .registry import create_model, list_models, register_model
from .formats import export_state_dict, hf_config_from_model, timm_model_args, write_export
from .vit import PatchEmbed3D, VisionTransformerEncoder, interpolate_pos_embed, sincos_table_1d, sincos_table_2d

__all__ = [
    "MaskedAutoencoder",
    "MaskedDecoder",
    "VideoClassifier",
    "VisionTransformerEncoder",
    "PatchEmbed3D",
    "create_model",
    "list_models",
    "register_model",
    "patchify",
    "unpatchify",
    "pixel_target",
    "mask_split",
    "interpolate_pos_embed",
    "sincos_table_1d",
    "sincos_table_2d",
    "write_export",
    "timm_model_args",
    "load_pretrained",
    "export_state_dict",
    "hf_config_from_model",
    "LoadReport",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]
