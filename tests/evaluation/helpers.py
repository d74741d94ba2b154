"""Tiny models and synthetic data sets shared by the evaluation tests."""
from __future__ import annotations

import importlib.util
import os
from types import ModuleType
from typing import Any, Dict, Iterable

import torch
from torch.utils.data import Dataset

from videohpm.models import create_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_tool(name: str) -> ModuleType:
    """Import tools/<name>.py under a private name (`test` would clash with the stdlib package)."""
    spec = importlib.util.spec_from_file_location(f"_videohpm_tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CLIP = (3, 4, 32, 32)  # C, T, H, W: tubelet 2, patch 16 → grid (2, 2, 2)


def tiny_classifier(num_classes: int = 5, seed: int = 0, depth: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = create_model("vit_tiny_patch16_224", img_size=32, num_frames=4, embed_dim=32, depth=depth, num_heads=2,
                     num_classes=num_classes, drop_path_rate=0.0, init_scale=1.0)
    return m.eval()


def tiny_autoencoder(seed: int = 0, loss_predictor: bool = True, **kw: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    args = dict(img_size=32, num_frames=4, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32,
                decoder_depth=1, decoder_num_heads=2, loss_predictor=loss_predictor)
    args.update(kw)
    return create_model("pretrain_videomae_tiny_patch16_224", **args)


class SyntheticViews(Dataset):
    """Multi-view test samples as the data package returns them: `views [V, C, T, H, W]` from a
    per-index generator (the same on every rank), `label = i % K`, broken ones zeroed, ok=False."""

    def __init__(self, n: int, views: int = 6, num_classes: int = 5, broken: Iterable[int] = ()) -> None:
        self.n, self.v, self.k = n, views, num_classes
        self.broken = set(broken)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Dict[str, Any]:
        g = torch.Generator().manual_seed(1000 + i)
        ok = i not in self.broken
        views = torch.randn(self.v, *CLIP, generator=g) if ok else torch.zeros(self.v, *CLIP)
        return {"views": views, "label": i % self.k, "video_id": f"vid{i:03d}", "ok": ok,
                "error": "" if ok else "synthetic decode error"}


class SyntheticClips(Dataset):
    """Classification samples `{"video", "label", "index"}` (k-NN / linear probe)."""

    def __init__(self, n: int, num_classes: int = 3, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % num_classes
        # class-dependent mean so that features carry the label
        self.videos = torch.randn(n, *CLIP, generator=g) * 0.5 + self.labels.view(-1, 1, 1, 1, 1).float()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {"video": self.videos[i], "label": int(self.labels[i]), "index": i}
