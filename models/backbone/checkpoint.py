"""Checkpoints: state_dict + JSON-able config + class list + project id, loaded weights-only."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.backbone.unet import Classifier, UNet, UNetConfig
from models.errors import ModelError
from models.folder import MODELS_DIR

FORMAT = 1
KINDS = ("unet", "classifier")
PROJECT_ID_FILE = "project_id.json"


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds."""

    kind: str  # "unet" (reconstruction/segmentation) or "classifier" (encoder + linear head)
    config: UNetConfig
    classes: tuple[str, ...]  # class names in output order; empty for a U-Net
    project_id: str  # id of the project it was trained on ("" for none)
    state_dict: dict[str, torch.Tensor]
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able: training configs, history


def get_project_id(project_dir: Path) -> str:
    """The project's model id, created on first use in ``PROJECT/models/project_id.json``."""
    path = Path(project_dir) / MODELS_DIR / PROJECT_ID_FILE
    if path.exists():
        try:
            return str(json.loads(path.read_text())["project_id"])
        except (ValueError, KeyError) as err:
            raise ModelError(f"{path}: unreadable ({err}); delete it to make a new id") from err
    path.parent.mkdir(parents=True, exist_ok=True)
    value = uuid.uuid4().hex
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"project_id": value}))
    os.replace(tmp, path)
    return value


def save_checkpoint(
    path: Path,
    model: UNet | Classifier,
    project_id: str = "",
    classes: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically (temp file + rename).

    Args:
        path: the checkpoint file to write.
        model: a UNet or a Classifier (whose ``classes`` must then be given, in output order).
        project_id: :func:`get_project_id` of the project it was trained on.
        classes: class names in output order.
        extra: JSON-able extras (training configs, history, timings).
    """
    if isinstance(model, Classifier) and len(classes) != model.head.out_features:
        raise ModelError(
            f"classifier has {model.head.out_features} outputs but {len(classes)} class names"
        )
    kind = "classifier" if isinstance(model, Classifier) else "unet"
    payload = {
        "format": FORMAT,
        "kind": kind,
        "config": dataclasses.asdict(model.config),
        "classes": list(classes),
        "project_id": project_id,
        "extra_json": json.dumps(extra or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: Path, project: str | None = None, classes: tuple[str, ...] | None = None
) -> Checkpoint:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check what it is for.

    Args:
        path: the checkpoint file.
        project: when given, the checkpoint must come from this project id.
        classes: when given, the checkpoint must have exactly this class list.

    Raises:
        ModelError: missing or corrupt file, unknown format, other project or class list.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found; check the path")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        OSError,
        EOFError,
        ValueError,
        zipfile.BadZipFile,
        pickle.UnpicklingError,
    ) as err:
        raise ModelError(
            f"{path}: corrupt or not a PhenoScout checkpoint ({type(err).__name__}); "
            "delete it, or retrain with `phenoscout train`"
        ) from err
    ckpt = _parse(path, raw)
    if project is not None and ckpt.project_id != project:
        raise ModelError(
            f"{path}: checkpoint of another project (id {ckpt.project_id or 'none'}, this "
            f"project is {project}); use a checkpoint trained on this project"
        )
    if classes is not None and tuple(classes) != ckpt.classes:
        raise ModelError(
            f"{path}: checkpoint classes {list(ckpt.classes)} differ from {list(classes)}; "
            "fine-tune again for the current class list"
        )
    return ckpt


def _parse(path: Path, raw: Any) -> Checkpoint:
    keys = {"format", "kind", "config", "classes", "project_id", "extra_json", "state_dict"}
    if not isinstance(raw, dict) or not keys <= set(raw):
        raise ModelError(f"{path}: not a PhenoScout checkpoint (keys missing); retrain")
    if raw["format"] != FORMAT or raw["kind"] not in KINDS:
        raise ModelError(
            f"{path}: checkpoint format {raw['format']} / kind {raw['kind']!r} unknown; "
            f"this PhenoScout reads format {FORMAT}, kinds {KINDS}"
        )
    return Checkpoint(
        kind=raw["kind"],
        config=UNetConfig.from_dict(dict(raw["config"])),
        classes=tuple(str(c) for c in raw["classes"]),
        project_id=str(raw["project_id"]),
        state_dict=raw["state_dict"],
        extra=json.loads(raw["extra_json"]),
    )


def build_model(ckpt: Checkpoint) -> UNet | Classifier:
    """The network of ``ckpt`` with its weights, in eval mode on the CPU."""
    model: UNet | Classifier
    if ckpt.kind == "classifier":
        model = Classifier(ckpt.config, len(ckpt.classes))
    else:
        model = UNet(ckpt.config)
    try:
        model.load_state_dict(ckpt.state_dict)
    except RuntimeError as err:
        raise ModelError(f"checkpoint weights do not fit its config ({err}); retrain") from err
    return model.eval()


def init_encoder_from(model: UNet | Classifier, path: Path) -> None:
    """Copy the encoder weights of a user's checkpoint ``path`` (any project) into ``model``.

    Raises:
        ModelError: unreadable checkpoint, or an encoder of another shape.
    """
    ckpt = load_checkpoint(path)
    prefix = "encoder."
    weights = {k[len(prefix) :]: v for k, v in ckpt.state_dict.items() if k.startswith(prefix)}
    try:
        model.encoder.load_state_dict(weights)
    except RuntimeError as err:
        raise ModelError(
            f"{path}: its encoder ({ckpt.config}) does not fit this model "
            f"({model.config}); use a checkpoint with the same in_channels, width and depth"
        ) from err
