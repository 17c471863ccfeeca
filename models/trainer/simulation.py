"""Deep features for simulated labeling (``phenoscout simulate --finetune``).

Between rounds the simulation asks for fresh features: the U-Net backbone (pretrained once per
dataset and cached in the simulation's project) is copied into a classifier, fine-tuned on the
cells labeled so far, and every cell is re-embedded with the fine-tuned encoder.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.backbone.embed import EmbedConfig, embed_cells, embed_ids
from models.backbone.finetune import FinetuneConfig, LabeledCells, finetune
from models.backbone.unet import Classifier
from models.device import resolve_device, seed_everything
from models.trainer.trainer import Trainer, TrainerConfig

logger = logging.getLogger(__name__)


class DeepFeatures:
    """Fine-tuned U-Net embeddings of every cell of a project, recomputed on request.

    Args:
        project_dir: the (simulation) project whose pixels are embedded.
        device: "auto", "cpu", "cuda" or "mps".
        seed: seeds torch, numpy and python before each fine-tune.
        max_epochs: fine-tune epochs per round (short: the simulation runs many rounds).
        schedule: the whole fine-tune schedule instead (``max_epochs`` is then unused).
    """

    def __init__(
        self,
        project_dir: Path,
        device: str = "auto",
        seed: int = 0,
        max_epochs: int = 4,
        schedule: FinetuneConfig | None = None,
    ) -> None:
        config = TrainerConfig(seed=seed, cpu_threads=0, nice=0)
        config = replace(
            config,
            finetune=schedule
            or replace(config.finetune, max_epochs=max_epochs, short_epochs=min(max_epochs, 3)),
        )
        self.device = resolve_device(device)
        self.seed = seed
        self._trainer = Trainer(Path(project_dir), self.device, config)
        self._backbone = self._trainer.backbone()  # pretrains once, then cached on disk

    def _embed_config(self) -> EmbedConfig:
        config = self._trainer.config
        return EmbedConfig(config.embed_batch, views=config.embed_views)

    def backbone_features(self) -> npt.NDArray[np.float32]:
        """The pretrained backbone's label-free embeddings of every cell (computed once)."""
        if getattr(self, "_backbone_emb", None) is None:
            self._backbone_emb = self.features({})
        return self._backbone_emb

    def features(
        self, labels: Mapping[str, str], cell_ids: Sequence[str] | None = None
    ) -> npt.NDArray[np.float32]:
        """(n_cells, d) float32 embeddings in cell-table order after fine-tuning on ``labels``
        (the pretrained backbone's embeddings when fewer than two classes are labeled); only
        the rows of ``cell_ids``, in that order, when given."""
        seed_everything(self.seed)
        classes = tuple(sorted(set(labels.values())))
        model = self._backbone
        if len(classes) >= 2:
            model = Classifier(self._backbone.config, len(classes))
            model.encoder.load_state_dict(self._backbone.encoder.state_dict())
            finetune(
                model,
                self._trainer.pixels,
                LabeledCells(dict(labels), classes),
                self._trainer.config.finetune,
                self.device,
            )
        if cell_ids is not None:
            embed = self._embed_config()
            return embed_ids(model, self._trainer.pixels, cell_ids, self.device, embed)
        with tempfile.TemporaryDirectory() as tmp:
            embed_cells(
                model,
                self._trainer.pixels,
                Path(tmp),
                self.device,
                self._embed_config(),
            )
            return np.load(Path(tmp) / "embeddings.npy").astype(np.float32)
