"""Checkpoints as data: safetensors weights plus a JSON config, stored under their content digest.

Never pickle: a checkpoint is produced by untrusted candidate code, and the harness must be able to load it
without executing anything from it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors.torch import load as load_bytes
from safetensors.torch import load_file, save_file

from .model import ModelConfig, TinyLM
from .tasks.base import VOCAB_SIZE

WEIGHTS, CONFIG = "model.safetensors", "config.json"
MAX_CONFIG_BYTES = 64 << 10
MAX_HEADER_BYTES = 16 << 20
_DTYPES = {"F32": 4, "F16": 2, "BF16": 2}


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


# -- a checkpoint a candidate wrote: data to check before anything is allocated ----------------------------------
class _ModelFields(BaseModel):
    """The model config as a candidate may write it: every dimension bounded, so the harness never allocates what
    a hostile config asks for; the weights must then match it exactly."""

    model_config = ConfigDict(extra="forbid", strict=True)
    vocab_size: int = Field(VOCAB_SIZE, ge=VOCAB_SIZE, le=VOCAB_SIZE)
    n_layer: int = Field(ge=1, le=48)
    n_embd: int = Field(ge=2, le=4096)
    n_head: int = Field(ge=1, le=256)
    ffn_mult: int = Field(ge=1, le=16)
    dropout: float = Field(ge=0.0, lt=1.0)
    position: Literal["learned", "digit_index", "rope", "digit_rope", "none"]
    max_positions: int = Field(ge=8, le=65536)

    @model_validator(mode="after")
    def _heads(self) -> "_ModelFields":
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if self.position in ("rope", "digit_rope") and (self.n_embd // self.n_head) % 2:
            raise ValueError("rotary positions need an even head size")
        return self


class _CheckpointConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: _ModelFields
    meta: dict = {}


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The state a model of this config has, computed on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = TinyLM(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "head.weight"}


def check_untrusted(config: bytes, weights: bytes, max_params: int) -> ModelConfig:
    """Raise ValueError (with the reason) unless `config` is a well-formed, bounded model config and `weights` a
    safetensors file holding exactly that model's tensors (names, shapes, float dtypes, offsets inside the file)."""
    try:
        fields = _CheckpointConfig.model_validate_json(config).model
    except ValidationError as e:
        err = e.errors()[0]
        raise ValueError(f"{CONFIG}: {'.'.join(map(str, err['loc'])) or '(top)'}: {err['msg']}") from None
    cfg = ModelConfig(**fields.model_dump())
    per_layer = (4 + 2 * cfg.ffn_mult) * cfg.n_embd ** 2
    approx = cfg.n_layer * per_layer + (cfg.vocab_size + cfg.max_positions) * cfg.n_embd
    if approx > max_params:
        raise ValueError(f"{CONFIG}: a model of about {approx:.3g} parameters, over the {max_params:.3g} allowed")
    if len(weights) < 8:
        raise ValueError(f"{WEIGHTS}: {len(weights)} bytes, shorter than its header")
    (n,) = struct.unpack("<Q", weights[:8])
    if n > min(MAX_HEADER_BYTES, len(weights) - 8):
        raise ValueError(f"{WEIGHTS}: a header of {n} bytes in a file of {len(weights)}")
    try:
        header = json.loads(weights[8:8 + n])
    except ValueError:
        raise ValueError(f"{WEIGHTS}: its header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError(f"{WEIGHTS}: its header is not a JSON object")
    header.pop("__metadata__", None)
    want = _expected_shapes(cfg)
    if set(header) != set(want):
        extra, missing = sorted(set(header) - set(want))[:3], sorted(set(want) - set(header))[:3]
        raise ValueError(f"{WEIGHTS}: tensors do not match {CONFIG} (unexpected {extra}, missing {missing})")
    body = len(weights) - 8 - n
    for name, info in header.items():
        ok = isinstance(info, dict) and info.get("dtype") in _DTYPES and isinstance(info.get("shape"), list) \
            and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2 \
            and all(type(x) is int and x >= 0 for x in info["shape"] + info["data_offsets"])
        if not ok:
            raise ValueError(f"{WEIGHTS}: tensor {name[:80]!r} is malformed")
        begin, end = info["data_offsets"]
        if tuple(info["shape"]) != want[name]:
            raise ValueError(f"{WEIGHTS}: tensor {name} has shape {info['shape'][:8]}, {CONFIG} says {list(want[name])}")
        if not begin <= end <= body or end - begin != math.prod(want[name]) * _DTYPES[info["dtype"]]:
            raise ValueError(f"{WEIGHTS}: tensor {name}'s data lies outside the file")
    return cfg


def from_untrusted(config: bytes, weights: bytes, max_params: int) -> tuple[TinyLM, str]:
    """A candidate's checkpoint, checked (check_untrusted) then loaded from the bytes the harness read; returns
    the model and its digest (the same as `digest` of the folder these bytes are written to)."""
    cfg = check_untrusted(config, weights, max_params)
    try:
        state = {k: v.float() for k, v in load_bytes(weights).items()}
    except Exception as e:  # noqa: BLE001 - the Rust parser's own error types
        raise ValueError(f"{WEIGHTS}: unreadable ({type(e).__name__}: {str(e)[:200]})") from None
    if not all(torch.isfinite(v).all() for v in state.values()):
        raise ValueError(f"{WEIGHTS}: holds NaN or infinite weights")
    model = TinyLM(cfg)
    model.load_state_dict(state, strict=False)
    model.head.weight = model.tok.weight
    model.eval()
    h = hashlib.sha256(weights)
    h.update(json.dumps(json.loads(config)["model"], sort_keys=True).encode())
    return model, h.hexdigest()
