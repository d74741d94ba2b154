"""Linear probing: only BN (no affine) + head learn; the encoder is frozen and in eval mode."""
import pytest
import torch

from .helpers import SyntheticClips, tiny_autoencoder, tiny_classifier
from videohpm.methods.linear_probe import LinearProbe


@pytest.mark.parametrize("kind", ["autoencoder", "classifier"])
def test_encoder_frozen_only_bn_and_head_train(kind):
    model = tiny_autoencoder(drop_path_rate=0.5) if kind == "autoencoder" else tiny_classifier()
    probe = LinearProbe(model, num_classes=3)
    assert not hasattr(probe, "decoder")  # decoders are not part of the recipe
    trainable = sorted(n for n, p in probe.named_parameters() if p.requires_grad)
    assert trainable == ["head.bias", "head.weight"]
    assert probe.bn.affine is False
    before = {k: v.clone() for k, v in probe.encoder.state_dict().items()}
    opt = torch.optim.SGD([p for p in probe.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    ds = SyntheticClips(12)
    batch = {"video": ds.videos[:6], "label": ds.labels[:6]}
    probe.train()
    assert probe.training and not probe.encoder.training and probe.bn.training
    losses = []
    for _ in range(5):
        out = probe(batch, progress=0.0)
        assert set(out) == {"loss", "acc1"} and not out["acc1"].requires_grad
        opt.zero_grad()
        out["loss"].backward()
        assert all(p.grad is None for p in probe.encoder.parameters())
        assert probe.head.weight.grad is not None and probe.head.weight.grad.abs().sum() > 0
        opt.step()
        losses.append(out["loss"].item())
    for k, v in probe.encoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert probe.bn.running_mean.abs().sum() > 0  # BN statistics do update
    assert losses[-1] < losses[0]
    # features are deterministic (encoder in eval: drop path off) even in training mode
    assert torch.equal(probe.features(batch["video"]), probe.features(batch["video"]))
    probe.eval()
    assert probe.predict(batch["video"])[""].shape == (6, 3)


def test_registered_and_rejects_masks():
    from videohpm.methods import build_recipe

    probe = build_recipe("linear_probe", tiny_autoencoder(), None, num_classes=4)
    assert isinstance(probe, LinearProbe) and probe.head.out_features == 4
    with pytest.raises(ValueError, match="mask.name=none"):
        LinearProbe(tiny_autoencoder(), mask_generator=object(), num_classes=4)
    with pytest.raises(ValueError, match="num_classes"):
        LinearProbe(tiny_autoencoder())
