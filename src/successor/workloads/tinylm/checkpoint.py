"""Checkpoints as data: safetensors weights plus a JSON config, stored under their content digest.

Never pickle: a checkpoint is produced by untrusted candidate code, and the harness must be able to load it
without executing anything from it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .model import ModelConfig, TinyLM


def _state(model: TinyLM) -> dict[str, torch.Tensor]:
    # Tied weights share storage; safetensors refuses shared tensors, so store the head once (as tok) only.
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k != "head.weight"}


def save(model: TinyLM, directory: Path, meta: dict | None = None) -> Path:
    """Write `model.safetensors` and `config.json` into `directory` atomically; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "model.safetensors.tmp"
    save_file(_state(model), str(tmp))
    os.replace(tmp, directory / "model.safetensors")
    cfg = {"model": model.cfg.to_dict(), "meta": meta or {}}
    tmpc = directory / "config.json.tmp"
    tmpc.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    os.replace(tmpc, directory / "config.json")
    return directory


def digest(directory: Path) -> str:
    """Content digest of the weights and the model config (meta is not part of the identity)."""
    directory = Path(directory)
    h = hashlib.sha256()
    h.update((directory / "model.safetensors").read_bytes())
    cfg = json.loads((directory / "config.json").read_text())
    h.update(json.dumps(cfg["model"], sort_keys=True).encode())
    return h.hexdigest()


def load(directory: Path) -> TinyLM:
    directory = Path(directory)
    cfg = json.loads((directory / "config.json").read_text())
    model = TinyLM(ModelConfig(**cfg["model"]))
    state = load_file(str(directory / "model.safetensors"))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even with strict=False
        raise ValueError(f"checkpoint {directory} does not match its config: {e}") from None
    if unexpected or set(missing) - {"head.weight"}:
        raise ValueError(f"checkpoint {directory} does not match its config: {missing=} {unexpected=}")
    model.head.weight = model.tok.weight
    model.eval()
    return model
