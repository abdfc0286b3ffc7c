"""A trained velocity field on disk: the file the train job writes and evaluate / report read back.

The file is a ``torch.save`` of a dict: ``model`` (the EMA weights' state dict), ``model_settings``
(the config's ``model`` entry: ``kind`` and constructor arguments), ``sample_shape``,
``model_extra`` (constructor arguments the job added: ``num_classes``, ``cond_channels``,
``cond_size``, ``mean_flow``) and the run's bookkeeping (``method``, ``epsilon_rel``, ...). It holds
plain Python values and tensors only, so loading it needs no class of ``sdfm`` at a fixed import path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sdfm.models import build_model

__all__ = ["load_trained", "model_kwargs"]


def model_kwargs(settings: dict) -> dict:
    """Constructor arguments of ``build_model`` from the config's model settings (lists -> tuples)."""
    kwargs = {k: v for k, v in settings.items() if k != "kind"}
    for key in ("channel_mults", "attention_resolutions"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    return kwargs


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the (EMA) velocity field saved by the train job; return ``(model, saved_state)``."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    settings = state["model_settings"]
    kwargs = model_kwargs(settings)
    model = build_model(settings["kind"], tuple(state["sample_shape"]), **kwargs, **state.get("model_extra", {}))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state
