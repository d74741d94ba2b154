"""The separable space-time sin-cos table (videohpm.models.vit.sincos_table_3d)."""
import math

import pytest
import torch

from videohpm.models import create_model, load_pretrained
from videohpm.models.vit import make_sincos_table, sincos_table_3d

from .helpers import TINY_VIDEO


def _axis(pos: int, k: int, dim: int) -> float:
    """Channel k of one axis block: sin(pos·ω_k) for k < dim/2, else cos(pos·ω_{k−dim/2})."""
    half = dim // 2
    omega = 10000.0 ** (-(k % half) / half)
    return math.sin(pos * omega) if k < half else math.cos(pos * omega)


def test_table_entry_by_entry():
    t, h, w, d = 2, 3, 4, 32
    table = sincos_table_3d(t, h, w, d)[0]
    assert table.shape == (t * h * w, d) and table.dtype == torch.float32
    dt, ds = d // 4, 3 * d // 8
    for tt in range(t):
        for hh in range(h):
            for ww in range(w):
                row = table[tt * h * w + hh * w + ww]
                ref = ([_axis(tt, k, dt) for k in range(dt)] + [_axis(hh, k, ds) for k in range(ds)]
                       + [_axis(ww, k, ds) for k in range(ds)])
                torch.testing.assert_close(row, torch.tensor(ref, dtype=torch.float32), rtol=0, atol=1e-6)


def test_same_place_other_time_shares_the_spatial_part():
    table = make_sincos_table("3d", (4, 4, 4), 64)[0].view(4, 16, 64)
    torch.testing.assert_close(table[0, :, 16:], table[3, :, 16:], rtol=0, atol=0)  # space: same for every τ
    torch.testing.assert_close(table[2, 0, :16], table[2, 15, :16], rtol=0, atol=0)  # time: same for every place
    assert not torch.equal(table[0, :, :16], table[1, :, :16])
    with pytest.raises(ValueError, match="divisible by 16"):
        sincos_table_3d(2, 2, 2, 40)


def test_the_table_is_stored_and_a_1d_model_refuses_it():
    m3 = create_model("pretrain_videomae_tiny_patch16_224", **TINY_VIDEO, sincos_table="3d")
    sd = m3.state_dict()
    assert "encoder.pos_embed" in sd and "decoder.pos_embed" in sd  # persistent (1-D tables are not)
    m1 = create_model("pretrain_videomae_tiny_patch16_224", **TINY_VIDEO)
    assert "encoder.pos_embed" not in m1.state_dict()
    report = load_pretrained(m1, sd, strict=False)
    assert not report.ok  # the stored table does not fit a model that recomputes the 1-D one
    c3 = create_model("vit_tiny_patch16_224", **{k: v for k, v in TINY_VIDEO.items() if not k.startswith("decoder")},
                      num_classes=3, sincos_table="3d")
    torch.testing.assert_close(c3.state_dict()["encoder.pos_embed"], sd["encoder.pos_embed"], rtol=0, atol=0)
