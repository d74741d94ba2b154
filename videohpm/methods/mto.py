"""MTO as an add-on to any MAE-style recipe (MTO paper, Algorithm 1): ``enable_mto(recipe)``.

MTO regularizes the *decoder* tokens (mask tokens vs. visible latents), layer by layer, with
``L_spa + L_e + L_r`` (Eq. 3–5, :mod:`videohpm.objectives.mto`). The decoder's per-layer tokens
are read with forward hooks, so neither the model nor the recipe needs a special code path:

    recipe = build_recipe("hpm", model, mask_generator)
    enable_mto(recipe, weight=1.0)          # what a recipe option ``mto: true`` should call
    out = recipe(batch, progress)           # out["loss"] now includes weight·L_MTO

Mechanics (PyTorch hooks, removable with the returned handle): forward pre-/post-hooks on the
recipe switch recording on and off and add the MTO term to the output dict (``loss`` plus detached
``loss_mto``, ``mto_spa``, ``mto_e``, ``mto_r``, ``mto_h0``, ``mto_hL``); a `DecoderTap` on each
watched decoder (d_φ by default, d_ψ optionally) records layer 0 (the decoder input after the
position table) and the output of every block.

Recording is on only during the recipe's forward (activation-checkpoint recomputation records
nothing). It relies on a decoder whose ``forward(latent, ids_masked, ids_keep, ...)`` runs
``blocks`` (an ``nn.ModuleList``) on VideoMAE's ``[visible | masked]`` layout — true of
``videohpm.models.autoencoder.MaskedDecoder`` — so the token mask of Eq. 2–3 is ``arange(N) >= n_vis``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Sequence

import torch
from torch import nn

from videohpm.objectives.mto import mto_losses

__all__ = ["DecoderTap", "record_decoder_tokens", "enable_mto", "MTOHandle"]


class DecoderTap:
    """Forward hooks on one decoder that record its per-layer tokens while ``active``.

    ``calls``: one entry per decoder call made while active, ``{"n_vis": int | None,
    "layers": [tokens_0, ..., tokens_L]}`` with ``tokens_l: [B, N, D]``; ``n_vis`` is None for a
    call over all tokens (no masked tokens, nothing for MTO).
    """

    def __init__(self, decoder: nn.Module, name: str = "decoder") -> None:
        blocks = getattr(decoder, "blocks", None)
        if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or len(blocks) == 0:
            raise ValueError(f"MTO: {name} has no non-empty `blocks` ModuleList to record")
        self.name = name
        self.active = False
        self.calls: List[Dict[str, Any]] = []
        self._handles = [
            decoder.register_forward_pre_hook(self._on_decoder, with_kwargs=True),
            blocks[0].register_forward_pre_hook(self._on_input),
        ] + [b.register_forward_hook(self._on_block) for b in blocks]

    def _on_decoder(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not self.active:
            return
        latent = args[0] if args else kwargs.get("latent")
        ids_masked = args[1] if len(args) > 1 else kwargs.get("ids_masked")
        n_vis = int(latent.shape[1]) if (ids_masked is not None and latent is not None) else None
        self.calls.append({"n_vis": n_vis, "layers": []})

    def _on_input(self, module: nn.Module, args: tuple) -> None:
        if self.active and self.calls:
            self.calls[-1]["layers"].append(args[0])

    def _on_block(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self.active and self.calls:
            self.calls[-1]["layers"].append(output)

    def masked_calls(self) -> List[Dict[str, Any]]:
        """Recorded calls that had masked tokens (the ones MTO applies to)."""
        return [c for c in self.calls if c["n_vis"] is not None and c["layers"]]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.calls = []


@contextmanager
def record_decoder_tokens(decoder: nn.Module, name: str = "decoder") -> Iterator[DecoderTap]:
    """Record ``decoder``'s per-layer tokens for the calls made inside the ``with`` block."""
    tap = DecoderTap(decoder, name)
    tap.active = True
    try:
        yield tap
    finally:
        tap.active = False
        tap._handles, handles = [], tap._handles
        for h in handles:
            h.remove()


def token_mask_for(call: Dict[str, Any]) -> torch.Tensor:
    """Bool ``[B, N]`` mask-token positions of a recorded call (``[visible | masked]`` layout)."""
    x = call["layers"][0]
    B, N = x.shape[:2]
    return (torch.arange(N, device=x.device) >= call["n_vis"]).expand(B, N)


class MTOHandle:
    """Returned by :func:`enable_mto`; ``remove()`` restores the recipe."""

    def __init__(self, recipe: nn.Module, taps: List[DecoderTap], hooks: list) -> None:
        self.recipe, self.taps, self._hooks = recipe, taps, hooks

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        for t in self.taps:
            t.remove()
        self._hooks, self.taps = [], []
        self.recipe.__dict__.pop("_mto_handle", None)


def _add_mto_term(out: Any, taps: List[DecoderTap], weight: float, cfg: Dict[str, Any]) -> Any:
    """Close the taps' recording and add ``weight`` × the MTO term, averaged over every masked
    decoder call, to the recipe's output ``out`` (with its parts logged); ``out`` unchanged when
    no call was recorded or it carries no ``"loss"``."""
    for t in taps:
        t.active = False
    results = []
    for t in taps:
        for call in t.masked_calls():
            results.append(mto_losses(call["layers"], token_mask_for(call), **cfg))
        t.calls = []  # drop references to the activations
    if not results or not isinstance(out, dict) or "loss" not in out:
        return out
    n = float(len(results))
    total = sum(r["loss"] for r in results) / n
    out = dict(out)
    out["loss"] = out["loss"] + weight * total
    out["loss_mto"] = total.detach()
    for key, part in (("mto_spa", "loss_spa"), ("mto_e", "loss_e"), ("mto_r", "loss_r")):
        out[key] = (sum(r[part] for r in results) / n).detach()
    out["mto_h0"] = sum(r["heterogeneity"][0] for r in results) / n
    out["mto_hL"] = sum(r["heterogeneity"][-1] for r in results) / n
    return out


def enable_mto(
    recipe: nn.Module,
    *,
    weight: float = 1.0,
    decoders: Sequence[str] = ("decoder",),
    w_spa: float = 1.0,
    w_e: float = 1.0,
    w_r: float = 1.0,
    eps: float = 1e-6,
    scale: float = 1.0,
    spa_layers: str = "first",
) -> MTOHandle:
    """Add MTO (MTO paper Alg. 1) to ``recipe``: ``loss ← loss + weight·(w_spa·L_spa + w_e·L_e + w_r·L_r)``.

    Args:
        recipe: a recipe whose ``model`` has the decoders named in ``decoders`` and whose forward
            returns a dict with ``"loss"``.
        weight: overall weight of the MTO term (Alg. 1 uses 1).
        decoders: attribute names on ``recipe.model``: ``"decoder"`` (d_φ, default) and/or
            ``"loss_predictor"`` (d_ψ). The term is averaged over the watched decoders.
        w_spa, w_e, w_r, eps, scale, spa_layers: see :func:`videohpm.objectives.mto.mto_losses`.

    Returns:
        an :class:`MTOHandle` (``.remove()`` to switch MTO off).
    """
    if "_mto_handle" in recipe.__dict__:
        raise ValueError("MTO is already enabled on this recipe")
    model = getattr(recipe, "model", None)
    if model is None:
        raise ValueError("enable_mto: the recipe has no `model` attribute")
    if isinstance(decoders, str) or not decoders:
        raise ValueError(f"mto.decoders must be a non-empty list of names, got {decoders!r}")
    taps = []
    for name in decoders:
        dec = getattr(model, name, None)
        if not isinstance(dec, nn.Module):
            raise ValueError(f"mto.decoders: model has no decoder module {name!r}")
        taps.append(DecoderTap(dec, name))
    cfg = dict(w_spa=w_spa, w_e=w_e, w_r=w_r, eps=eps, scale=scale, spa_layers=spa_layers)

    def start(module: nn.Module, args: tuple) -> None:
        for t in taps:
            t.calls = []
            t.active = True

    def finish(module: nn.Module, args: tuple, out: Any) -> Any:
        return _add_mto_term(out, taps, weight, cfg)

    hooks = [recipe.register_forward_pre_hook(start), recipe.register_forward_hook(finish)]
    handle = MTOHandle(recipe, taps, hooks)
    recipe.__dict__["_mto_handle"] = handle
    return handle
