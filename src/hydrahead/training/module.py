"""The LightningModule: trains any HydraHeadModel; it never needs to know which head it holds."""

from __future__ import annotations

import random

import lightning as L
import torch

from hydrahead.adapters import has_adapter, is_base_weight
from hydrahead.config.schema import OptimizerConfig, SchedulerConfig, TaskConfig

from .metrics import EntityMetrics, build_metrics, flatten_for_metrics, flatten_logits, is_bio


def parameter_groups(model, lr: float, backbone_lr: float | None, weight_decay: float) -> list[dict]:
    """Head and backbone at their own learning rates; no weight decay on biases and norm weights."""
    groups: dict[tuple[str, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "backbone" if name.startswith("backbone.") else "head"
        no_decay = param.ndim < 2 or name.endswith(".bias") or "norm" in name.lower()
        groups.setdefault((part, no_decay), []).append(param)
    rates = {"head": lr, "backbone": backbone_lr or lr}
    return [
        {
            "params": params,
            "lr": rates[part],
            "weight_decay": 0.0 if no_decay else weight_decay,
            "name": f"{part}{'_no_decay' if no_decay else ''}",
        }
        for (part, no_decay), params in sorted(groups.items())
    ]


def adamw(groups: list[dict], opt: OptimizerConfig) -> torch.optim.AdamW:
    """AdamW with fused kernels (one kernel per step, no per-tensor temporaries: faster, less memory,
    HF Trainer's default too) where the parameters' device has them; ``optimizer.fused=false`` opts out.
    """
    kwargs = {"lr": opt.lr, "betas": tuple(opt.betas), "eps": opt.eps}
    fused = opt.fused
    if fused is None:
        try:
            return torch.optim.AdamW(groups, **kwargs, fused=True)
        except RuntimeError:  # a device (or dtype) without fused kernels: the per-tensor loop
            pass
    return torch.optim.AdamW(groups, **kwargs, fused=bool(fused) or None)


def build_optimizer(model, opt: OptimizerConfig, sched: SchedulerConfig, total_steps: int):
    """The optimizer over the model's trainable groups and its scheduler, stepped per optimizer step."""
    from transformers import get_scheduler

    groups = parameter_groups(model, opt.lr, opt.backbone_lr, opt.weight_decay)
    if opt.name == "adamw":
        optimizer = adamw(groups, opt)
    else:
        optimizer = torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum)
    names = {"linear_warmup": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
    scheduler = get_scheduler(
        names[sched.name],
        optimizer,
        num_warmup_steps=int(sched.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    return optimizer, scheduler


class HeadModule(L.LightningModule):
    """Wraps a HydraHeadModel with the optimizer, scheduler and per-task metrics of its typed configs.

    ``hparams`` (the resolved run config, a plain dict) is saved in every checkpoint: resuming and
    reproducing read the network's description and the labels from it.
    """

    def __init__(
        self,
        model,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        task: TaskConfig,
        seqeval_strict: bool = False,
        hparams: dict | None = None,
    ):
        super().__init__()
        self.model = model
        if hparams:
            self.save_hyperparameters(hparams)
        # Hashed once here, not at every save: a head-only (or adapter-only) checkpoint names the
        # weights it sits on.
        self.backbone_ref = None
        self.adapter_only = has_adapter(model)
        if hparams and (model.config.freeze is True or self.adapter_only):
            from hydrahead.backbone_ref import run_backbone_reference

            self.backbone_ref = run_backbone_reference(hparams)
        self.optimizer_cfg = optimizer
        self.scheduler_cfg = scheduler
        self.task = task.name
        num_labels = model.config.num_labels
        self.val_metrics = build_metrics(task.name, num_labels, task.threshold).clone(prefix="val/")
        self.test_metrics = build_metrics(task.name, num_labels, task.threshold).clone(prefix="test/")
        labels = [model.config.id2label[i] for i in range(num_labels)]
        self.val_entities = self.test_entities = None
        # A control task's tags are random per word type: entity metrics would mean nothing.
        if (
            model.config.level == "token"
            and task.name == "multiclass"
            and is_bio(labels)
            and not task.control
        ):
            self.val_entities = EntityMetrics(labels, seqeval_strict)
            self.test_entities = EntityMetrics(labels, seqeval_strict)
        self.keep_outputs = False
        """True: each evaluation keeps its logits and labels in ``kept[stage]`` (the final evaluation
        of the best checkpoint: calibration and the reports read them, no pass of their own)."""
        self.kept: dict[str, dict] = {}

    def forward(self, **batch):
        return self.model(**batch)

    def ddp_unused_parameters(self) -> list[str]:
        """Trainable weights no loss reaches, which DDP must not wait for: the backbone's own pooler
        (it runs inside the backbone's forward) unless the head reads it (``head.pooling=pooler``)."""
        config = self.model.config
        if config.head.get("pooling") == "pooler" and config.level == "sequence":
            return []
        return [
            f"model.{name}"
            for name, param in self.model.named_parameters()
            if name.startswith("backbone.pooler.") and param.requires_grad
        ]

    def training_step(self, batch, batch_idx):
        loss = self.model(**batch).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["labels"].shape[0])
        return loss

    def _eval_step(self, batch, stage: str):
        out = self.model(**batch)
        # sync_dist: under DDP the epoch's loss is the mean over every rank's items, as one process's.
        size = batch["labels"].shape[0]
        self.log(f"{stage}/loss", out.loss, prog_bar=stage == "val", batch_size=size, sync_dist=True)
        if self.keep_outputs:
            logits, labels = flatten_logits(out.logits, batch["labels"], self.task)
            kept = self.kept.setdefault(stage, {"logits": [], "labels": []})
            kept["logits"].append(logits.cpu())
            kept["labels"].append(labels.cpu())
        preds, labels = flatten_for_metrics(out.logits, batch["labels"], self.task)
        if len(labels):
            getattr(self, f"{stage}_metrics").update(preds, labels)
        entities = getattr(self, f"{stage}_entities")
        if entities is not None:
            entities.update(out.logits.detach(), batch["labels"])

    def _eval_epoch_end(self, stage: str):
        metrics = getattr(self, f"{stage}_metrics")
        # torchmetrics syncs its states across ranks in compute(): every rank logs the same values
        # (sync_dist averages equal numbers, exactly, and keeps Lightning from warning).
        self.log_dict(metrics.compute(), prog_bar=stage == "val", sync_dist=True)
        metrics.reset()
        entities = getattr(self, f"{stage}_entities")
        if entities is not None:
            self.log_dict({f"{stage}/{k}": v for k, v in entities.compute().items()}, sync_dist=True)
            entities.reset()

    def on_validation_epoch_start(self):
        self.kept.pop("val", None)

    def on_test_epoch_start(self):
        self.kept.pop("test", None)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    # Lightning does not restore RNG state on resume; dropout draws from it, so a resumed run
    # would diverge from an uninterrupted one. Keep it in every checkpoint.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.model.config.freeze is True:
            # A frozen backbone is rebuilt from its source on load: keep checkpoints head-sized.
            checkpoint["state_dict"] = {
                k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("model.backbone.")
            }
            checkpoint["frozen_backbone_dropped"] = True
            if self.backbone_ref is not None:
                checkpoint["backbone_ref"] = self.backbone_ref
        elif self.adapter_only:
            # The backbone's own weights never train under an adapter: keep the adapter and the head.
            checkpoint["state_dict"] = {
                k: v for k, v in checkpoint["state_dict"].items() if not is_base_weight(k, "model.backbone.")
            }
            checkpoint["adapter_only"] = True
            if self.backbone_ref is not None:
                checkpoint["backbone_ref"] = self.backbone_ref
        checkpoint["rng_state"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
        }
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            # Each rank's own stream (their dropout draws differ): Lightning dumps a checkpoint on every
            # rank and writes rank 0's, so this collective runs on all of them.
            from .ddp import gather

            checkpoint["rng_states"] = gather(checkpoint["rng_state"])

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("frozen_backbone_dropped") or checkpoint.get("adapter_only"):
            state_dict = checkpoint["state_dict"]
            for key, value in self.state_dict().items():  # the frozen weights already loaded
                if key.startswith("model.backbone."):
                    state_dict.setdefault(key, value)
        state = checkpoint.get("rng_state")
        per_rank = checkpoint.get("rng_states")
        trainer = self._trainer
        if per_rank and trainer is not None and len(per_rank) == trainer.world_size:
            state = per_rank[trainer.global_rank]
        if not state:
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        random.setstate(state["python"])

    def configure_optimizers(self):
        total = max(1, int(self.trainer.estimated_stepping_batches))
        optimizer, scheduler = build_optimizer(self.model, self.optimizer_cfg, self.scheduler_cfg, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
