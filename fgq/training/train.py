"""Train a tiny VGGT or π3 on synthetic scenes: ``python -m fgq.training model=vggt_tiny``.

Lightning ``fit``, seeded, resumable from ``train.ckpt_dir/last.ckpt``; at the end the weights are exported
as safetensors (the file ``fgq/conf/model/<name>.yaml`` points at), loadable through the normal checkpoint path.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Subset

from fgq.data.batch import collate
from fgq.data.synthetic import SyntheticScenes
from fgq.evaluation import DatasetEvaluator
from fgq.io import save_state_dict
from fgq.loggers import finish, make_loggers
from fgq.training.correspondence import AttentionMatchLoss, patch_matches
from fgq.training.losses import normalize_scene, pi3_loss, vggt_loss

log = logging.getLogger(__name__)
warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")


class TrainModule(L.LightningModule):
    def __init__(self, model: torch.nn.Module, cfg: DictConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.loss_fn = vggt_loss if model.family == "vggt" else pi3_loss
        self.weights = dict(cfg.loss)
        self.view = model.quant_view()
        self._evaluator: DatasetEvaluator | None = None
        self.match = None
        if self.weights.get("match", 0.0) > 0:
            attentions = [ref.module.attn for ref in self.view.blocks if ref.kind == "global"]
            self.match = AttentionMatchLoss(attentions, model.patch_start_idx, heads=cfg.loss.match_heads,
                                            keys=cfg.loss.match_keys)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        gt = normalize_scene(batch)
        losses = self.loss_fn(self.model(batch["images"]), gt, self.weights)
        if self.match is not None:
            losses["match"] = self.match.loss(*patch_matches(gt, self.model.patch_size))
            losses["loss"] = losses["loss"] + self.weights["match"] * losses["match"]
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, on_step=True)
        return losses["loss"]

    def on_validation_epoch_start(self) -> None:
        self._evaluator = DatasetEvaluator(depth_align="median", depth_align_scope="sequence", icp=False,
                                           points_stride=2)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        with torch.no_grad():
            geometry = self.model.geometry(self.model(batch["images"]))
        self._evaluator.update(geometry, batch)

    def on_validation_epoch_end(self) -> None:
        results = self._evaluator.compute()
        self.log_dict({
            "val/auc@30": results["camera"]["auc@30"], "val/auc@5": results["camera"]["auc@5"],
            "val/abs_rel": results["depth"]["abs_rel"], "val/delta_1.25": results["depth"]["delta_1.25"],
            "val/acc_mean": results["points"]["acc_mean"],
        }, prog_bar=True)

    def configure_optimizers(self):
        c = self.cfg
        # No weight decay on LayerScale gammas, norms, biases, tokens and position tables: decaying the
        # gammas towards 0 switches the transformer blocks off.
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            flat = p.ndim < 2 or "token" in name or "pos_embed" in name
            (no_decay if flat else decay).append(p)
        groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=c.lr)

        def schedule(step: int) -> float:  # linear warm-up, cosine decay to 1 % of the peak
            if step < c.warmup_steps:
                return (step + 1) / c.warmup_steps
            progress = min(1.0, (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps))
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train(cfg: DictConfig, out_dir: Path, choices: dict[str, str]) -> Path:
    t = cfg.train
    if t.threads:
        torch.set_num_threads(int(t.threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = instantiate(cfg.model).train()
    data = dict(frames=t.frames, height=t.height, width=t.width, seed=t.data_seed)
    cameras = dict(t.cameras)
    train_set = SyntheticScenes(split="train", num_scenes=t.steps * t.batch_size, **cameras, **data)
    ckpt_dir = Path(t.ckpt_dir)
    last = ckpt_dir / "last.ckpt"
    resume = str(last) if t.resume and last.exists() else None
    if resume:
        # The loader is not resumable, so skip the scenes already trained on (every training scene is seen once).
        done = int(torch.load(last, map_location="cpu", weights_only=True)["global_step"]) * t.batch_size
        log.info("resuming from %s: training continues with scene %d", resume, done)
        train_set = Subset(train_set, range(min(done, len(train_set)), len(train_set)))
    val_set = SyntheticScenes(split="calib", num_scenes=t.val_scenes, **cameras, **data)
    loaders = (
        DataLoader(train_set, batch_size=t.batch_size, shuffle=False, collate_fn=collate, num_workers=t.workers,
                   persistent_workers=t.workers > 0),
        DataLoader(val_set, batch_size=1, collate_fn=collate),
    )
    loggers = make_loggers(cfg, out_dir, choices, group=None, job_type="train")
    try:
        trainer = L.Trainer(
            accelerator="cpu" if not torch.cuda.is_available() else "auto", devices=1, max_steps=t.steps,
            logger=loggers or False, val_check_interval=t.val_every, check_val_every_n_epoch=None,
            num_sanity_val_steps=0, gradient_clip_val=t.grad_clip, log_every_n_steps=t.log_every,
            callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=t.save_every,
                                       save_top_k=0, enable_version_counter=False),  # resume overwrites last.ckpt
                       LearningRateMonitor("step")],
            default_root_dir=str(out_dir), enable_model_summary=True, enable_progress_bar=t.progress_bar,
        )
        trainer.fit(TrainModule(model, t), *loaders, ckpt_path=resume)
    finally:
        finish(loggers)
    export = Path(t.export)
    save_state_dict(model, export)
    log.info("exported %s (%.1f MB)", export, export.stat().st_size / 2**20)
    return export


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    choices = {k: str(v) for k, v in hc.runtime.choices.items() if not k.startswith("hydra") and v is not None}
    train(cfg, Path(hc.runtime.output_dir), choices)


if __name__ == "__main__":
    main()
