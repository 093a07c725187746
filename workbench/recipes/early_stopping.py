"""Early stopping on the holdout photos' denoising loss, as an object the loop checkpoints like its optimiser.

With ``early_stopping_patience`` (every training recipe's :class:`~workbench.recipes.registry.TrainingParams`)
the loop evaluates the denoising loss on the subject's *holdout* photos every ``eval_every`` steps,
stops after that many evaluations without improvement and keeps the best weights. Each evaluation
draws the same z₀, ε and t (a generator seeded alike every time: common random numbers),
:data:`EarlyStopping.DRAWS` per holdout photo, so successive values differ only through the weights.

The holdout photos are also the membership non-members and the identity reference, so early stopping
selects the model on them (one scalar per evaluation); :meth:`EarlyStoppingRecord.note` says so in
every report that has such a row. The best weights are kept in CPU memory and in each checkpoint: for
full fine-tunes (DreamBooth) that is a second copy of the UNet (about 3.4 GB at SD 1.5 in fp32).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from workbench.diffusion import LatentSet
from workbench.records import TrainingRecord, Value, register_record


@register_record
class EarlyStoppingRecord(TrainingRecord):
    KIND = "early_stopping"
    COLUMN = "early stopping (holdout loss)"
    ABSENT = "off"
    ORDER = 30
    patience: int
    eval_every: int
    best_step: int
    best_holdout_loss: float
    stopped_at: int
    stopped_early: bool
    history: list[list[float]]

    def describe(self):
        return ["best at step ", Value(self.best_step, "/best_step", "int"), ", ran to ",
                Value(self.stopped_at, "/stopped_at", "int")]

    @classmethod
    def note(cls) -> str:
        return ("early stopping selects the model on the holdout photos' denoising loss; the same photos are "
                "the non-members and the identity reference, so those rows are selected on them")


@dataclass
class EarlyStopping:
    """Stop when the holdout loss has not improved for ``patience`` evaluations; keep the best weights."""

    patience: int
    every: int
    latents: LatentSet  # the holdout photos (rows 0..N-1; their mirrors are not evaluated)
    prompt: str
    DRAWS = 4
    best: float = float("inf")
    best_step: int = 0
    bad: int = 0
    history: list = field(default_factory=list)  # [step, holdout loss] per evaluation
    best_tensors: dict | None = None

    @property
    def stopped(self) -> bool:
        return self.bad >= self.patience

    def due(self, done: int, total: int) -> bool:
        """Whether the loop evaluates after step ``done``."""
        return done % self.every == 0 or done == total

    def evaluate(self, step, done: int, trainable: dict) -> float:
        n = len(self.latents) // 2
        idx = torch.arange(n).repeat(self.DRAWS)
        with torch.no_grad():
            value = step.losses(self.latents, self.prompt, idx, generator=torch.Generator().manual_seed(1234)).mean()
        value = value.item()
        self.history.append([done, round(value, 6)])
        if value < self.best:
            self.best, self.best_step, self.bad = value, done, 0
            self.best_tensors = {k: v.detach().to("cpu", copy=True) for k, v in trainable.items()}
        else:
            self.bad += 1
        return value

    def state_dict(self) -> dict:
        """Everything needed to resume (tensors included), for ``torch.save`` in a checkpoint."""
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad, "history": self.history,
                "best_tensors": self.best_tensors}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step, self.bad, self.history = (
            state["best"], state["best_step"], state["bad"], state["history"])
        self.best_tensors = state.get("best_tensors")

    def restore_best(self, trainable: dict) -> None:
        if self.best_tensors is not None:
            with torch.no_grad():
                for name, p in trainable.items():
                    p.copy_(self.best_tensors[name].to(p.device))

    def record(self, steps_run: int, steps_planned: int) -> EarlyStoppingRecord:
        return EarlyStoppingRecord(patience=self.patience, eval_every=self.every, best_step=self.best_step,
                                   best_holdout_loss=self.best, stopped_at=steps_run,
                                   stopped_early=self.stopped and steps_run < steps_planned, history=self.history)


def early_stopping(params, pipe, holdout_images, resolution: int, prompt: str) -> EarlyStopping | None:
    """The recipe's early stopping (None when its params turn it off)."""
    from workbench.diffusion import encode_images

    patience = params.patience()
    if patience is None:
        return None
    return EarlyStopping(patience, params.eval_every, encode_images(pipe, holdout_images, resolution), prompt)
