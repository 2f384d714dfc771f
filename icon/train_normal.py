"""Training loop of the normal net on synthetic clothed humans: Adam, resumable checkpoints, held-out evaluation.

Datasets are any map-style `torch.utils.data.Dataset` whose items carry (as attributes or mapping keys) `rgb`
(S, S, 3) uint8, `mask` (S, S) bool, `normal_front`, `normal_back` (S, S, 3) clothed ground truth and
`body_normal_front`, `body_normal_back` (S, S, 3) body normals — e.g. `icon.synth.SynthDataset` or a test fake.
Files are touched only through the explicit `out_path` / `checkpoint_dir` arguments.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from icon.normal_net import (
    NormalNet,
    NormalNetConfig,
    angular_error_deg,
    load_normal_net,
    normal_loss,
    predict_normals,
    prepare_inputs,
    save_normal_net,
)

log = logging.getLogger(__name__)

SAMPLE_FIELDS = ("rgb", "mask", "normal_front", "normal_back", "body_normal_front", "body_normal_back")
_WEIGHTS_FILE = "weights.safetensors"
_OPTIMIZER_FILE = "optimizer.safetensors"
_STATE_FILE = "state.json"


@dataclass
class HeldoutEval:
    """Mean angular error (degrees, inside the silhouette, averaged over frames) on a held-out set."""

    step: int
    frames: int
    body_front_deg: float
    body_back_deg: float
    pred_front_deg: float
    pred_back_deg: float

    @property
    def improvement_front(self) -> float:
        """Relative error reduction of the prediction vs the body normals, front (0.25 = 25 % lower)."""
        return 1.0 - self.pred_front_deg / self.body_front_deg

    @property
    def improvement_back(self) -> float:
        """Relative error reduction of the prediction vs the body normals, back."""
        return 1.0 - self.pred_back_deg / self.body_back_deg


@dataclass
class TrainProgress:
    """What the progress callback receives every `log_every` steps (and after each evaluation)."""

    step: int
    steps: int
    loss: float
    lr: float
    seconds: float
    evaluation: HeldoutEval | None = None


@dataclass
class NormalTrainResult:
    """Outcome of `train_normal_net`."""

    net: NormalNet
    step: int
    seconds: float
    losses: list[tuple[int, float]] = field(default_factory=list)
    """(step, mean training loss since the previous entry)."""
    evaluations: list[HeldoutEval] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------------------------------


def _field(item: Any, name: str) -> Any:
    if isinstance(item, dict):
        return item[name]
    return getattr(item, name)


def collate_normal_samples(items: Sequence[Any]) -> dict[str, torch.Tensor]:
    """Stack dataset items into boundary-layout tensors: rgb (B,S,S,3) uint8, mask (B,S,S) bool, normals (B,S,S,3)."""
    batch = {}
    for name in SAMPLE_FIELDS:
        batch[name] = torch.stack([torch.as_tensor(np.asarray(_field(it, name))) for it in items])
    batch["mask"] = batch["mask"].bool()
    for name in SAMPLE_FIELDS[2:]:
        batch[name] = batch[name].float()
    return batch


def mirror_batch(
    tensors: Sequence[torch.Tensor], normal_maps: Sequence[bool], flip: torch.Tensor
) -> list[torch.Tensor]:
    """Mirror the images of a channels-first batch left-right where `flip` (B,) is True.

    Mirroring the scene about the camera's vertical plane maps a camera-space normal (x, y, z) to (-x, y, z), so the
    x channel of normal maps is negated as well.
    """
    out = []
    sel = flip[:, None, None, None]
    sign = torch.tensor([-1.0, 1.0, 1.0], device=flip.device)[None, :, None, None]
    for t, is_normal in zip(tensors, normal_maps, strict=True):
        mirrored = t.flip(-1) * sign if is_normal else t.flip(-1)
        out.append(torch.where(sel, mirrored, t))
    return out


def _net_batch(
    batch: dict[str, torch.Tensor], size: int, device: torch.device, augment: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, ...]:
    """Boundary batch → (rgb, mask, body_front, body_back, gt_front, gt_back), channels-first at size×size.

    With ``augment``, half of the batch is mirrored; the coin flips come from ``generator`` (CPU) when given, so a
    step's augmentation does not depend on what ran before it (see `train_normal_net`'s chunked runs).
    """
    b = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    rgb, mask, bf, bb = prepare_inputs(b["rgb"], b["mask"], b["body_normal_front"], b["body_normal_back"], (size, size))
    # Ground truth goes through the same resize and is masked with the network's mask.
    _, _, gf, gb = prepare_inputs(b["rgb"], b["mask"], b["normal_front"], b["normal_back"], (size, size))
    tensors = (rgb, mask, bf, bb, gf, gb)
    if augment:
        flip = (torch.rand(rgb.shape[0], generator=generator) < 0.5).to(device)
        tensors = tuple(mirror_batch(tensors, (False, False, True, True, True, True), flip))
    return tensors


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s own random numbers (data order of its epoch, augmentation): a pure function of
    (seed, step), so a run cut into chunks draws exactly what one long run draws."""
    return (seed * 1_000_003 + step * 7_919) % (2**63 - 1)


def step_batch_indices(n: int, batch_size: int, seed: int, start_step: int) -> Iterator[list[int]]:
    """Dataset indices of each step's batch from ``start_step`` on: epochs of one seeded permutation each
    (`step_seed(seed, -1 - epoch)`), ``n // batch_size`` full batches per epoch (one batch of all ``n`` when
    ``n < batch_size``). Step ``k`` gets the same indices whether the run started at 0 or resumed at ``k``."""
    per_epoch = max(1, n // batch_size)
    take = min(n, batch_size)
    step = start_step
    while True:
        epoch, pos = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(step_seed(seed, -1 - epoch)))
        for p in range(pos, per_epoch):
            yield order[p * take : (p + 1) * take].tolist()
        step = (epoch + 1) * per_epoch


def _step_batches(
    dataset: Dataset, batch_size: int, seed: int, start_step: int, num_workers: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Collated batches in `step_batch_indices` order, loaded by a DataLoader (``num_workers`` processes)."""
    loader = DataLoader(
        dataset,
        batch_sampler=step_batch_indices(len(dataset), batch_size, seed, start_step),  # type: ignore[arg-type]
        collate_fn=collate_normal_samples,
        num_workers=num_workers,
    )
    return iter(loader)


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_normal_net(
    net: NormalNet,
    dataset: Dataset,
    batch_size: int = 16,
    max_frames: int | None = None,
    step: int = -1,
) -> HeldoutEval:
    """Mean angular error of the body normals and of the net's predictions vs ground truth on `dataset`.

    Errors are computed at the dataset's resolution (`predict_normals` resizes to the net's size and back), per frame
    inside the clothed silhouette, then averaged over frames (frames with an empty mask are skipped).
    """
    n = len(dataset)  # type: ignore[arg-type]
    if max_frames is not None:
        n = min(n, max_frames)
    if n == 0:
        raise ValueError("the held-out dataset is empty: generate held-out samples first")
    errs: dict[str, list[torch.Tensor]] = {"bf": [], "bb": [], "pf": [], "pb": []}
    for i in range(0, n, batch_size):
        batch = collate_normal_samples([dataset[j] for j in range(i, min(i + batch_size, n))])
        mask = batch["mask"]
        front, back = predict_normals(
            net, batch["rgb"], mask, batch["body_normal_front"], batch["body_normal_back"], batch_size=batch_size
        )
        errs["bf"].append(angular_error_deg(batch["body_normal_front"], batch["normal_front"], mask))
        errs["bb"].append(angular_error_deg(batch["body_normal_back"], batch["normal_back"], mask))
        errs["pf"].append(angular_error_deg(front, batch["normal_front"], mask))
        errs["pb"].append(angular_error_deg(back, batch["normal_back"], mask))
    means = {k: float(torch.cat(v).nanmean()) for k, v in errs.items()}
    return HeldoutEval(step, n, means["bf"], means["bb"], means["pf"], means["pb"])


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------


def save_optimizer_state(path: str | Path, optimizer: torch.optim.Optimizer) -> None:
    """Adam (or any optimizer with tensor/number state) → safetensors: tensors flattened, the rest in metadata JSON."""
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    meta = {"param_groups": json.dumps(sd["param_groups"]), "scalars": json.dumps(scalars)}
    save_file(tensors, str(path), metadata=meta)


def load_optimizer_state(path: str | Path, optimizer: torch.optim.Optimizer) -> None:
    """Inverse of `save_optimizer_state` (tensors are moved to the parameters' device by `load_state_dict`)."""
    from safetensors import safe_open

    state: dict[int, dict[str, Any]] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata()
        for name in f.keys():
            pid, key = name.split(".", 1)
            state.setdefault(int(pid), {})[key] = f.get_tensor(name)
    for pid, values in json.loads(meta["scalars"]).items():
        state.setdefault(int(pid), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})


def save_checkpoint(
    checkpoint_dir: Path,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    save_weights: Callable[[Path, Any], Any] = save_normal_net,
) -> None:
    """Write weights (with `save_weights(path, net)`), optimizer state and the JSON `state` to `checkpoint_dir`."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    # Write everything to temporaries first so a run killed mid-save leaves the previous checkpoint intact;
    # the state file is replaced last and names the step the weights belong to.
    save_weights(checkpoint_dir / f"{_WEIGHTS_FILE}.tmp", net)
    save_optimizer_state(checkpoint_dir / f"{_OPTIMIZER_FILE}.tmp", optimizer)
    (checkpoint_dir / f"{_STATE_FILE}.tmp").write_text(json.dumps(state, indent=1))
    for name in (_WEIGHTS_FILE, _OPTIMIZER_FILE, _STATE_FILE):
        os.replace(checkpoint_dir / f"{name}.tmp", checkpoint_dir / name)


def read_checkpoint_state(checkpoint_dir: str | Path) -> dict[str, Any] | None:
    """The JSON state of the last checkpoint in `checkpoint_dir` (step, lr, losses, evaluations), or None."""
    path = Path(checkpoint_dir) / _STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------


def learning_rate(step: int, steps: int, lr: float, warmup: int, final_fraction: float = 0.05) -> float:
    """Linear warm-up for `warmup` steps, then cosine decay from `lr` to `final_fraction` of it at `steps`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * t)))


def _resume_normal_training(
    ckpt: Path, state: dict[str, Any], config: NormalNetConfig, lr: float, device: torch.device
) -> tuple[NormalNet, torch.optim.Adam, int, list[tuple[int, float]], list[HeldoutEval], float]:
    """Net, optimiser, step, loss curve, evaluations and seconds so far of the checkpoint in ``ckpt`` (its state.json
    is ``state``).

    Raises:
        ValueError: the checkpoint was trained with another architecture than ``config``.
    """
    saved = NormalNetConfig.model_validate(state["config"])
    if saved != config:
        raise ValueError(
            f"checkpoint in {ckpt} was trained with {saved!r}, not {config!r}: pass the same config, another "
            "checkpoint directory, or resume=False to start over"
        )
    net = load_normal_net(ckpt / _WEIGHTS_FILE, device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    load_optimizer_state(ckpt / _OPTIMIZER_FILE, optimizer)
    step = int(state["step"])
    losses = [tuple(x) for x in state.get("losses", [])]
    evaluations = [HeldoutEval(**e) for e in state.get("evaluations", [])]
    log.info("resuming normal-net training from %s at step %d", ckpt, step)
    return net, optimizer, step, losses, evaluations, float(state.get("seconds", 0.0))  # type: ignore[return-value]


def _train_step(
    net: NormalNet,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    image_size: int,
    device: torch.device,
    augment: bool,
    w_gradient: float,
    generator: torch.Generator | None = None,
) -> float:
    """One Adam step on a batch of samples (front + back normal loss); returns the loss."""
    rgb, mask, bf, bb, gf, gb = _net_batch(batch, image_size, device, augment, generator)
    front, back = net(rgb, mask, bf, bb)
    loss = normal_loss(front, gf, mask, w_gradient) + normal_loss(back, gb, mask, w_gradient)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _checkpoint_state(
    step: int, steps: int, lr: float, batch_size: int, w_gradient: float, augment: bool, seconds: float,
    config: NormalNetConfig, losses: list, evaluations: list[HeldoutEval],
) -> dict[str, Any]:
    """The JSON state written next to a checkpoint (what a resumed run reads back)."""
    return {
        "step": step, "steps": steps, "lr": lr, "batch_size": batch_size, "w_gradient": w_gradient,
        "augment": augment, "seconds": seconds, "config": config.model_dump(), "losses": losses,
        "evaluations": [asdict(e) for e in evaluations],
    }  # fmt: skip


def _evaluate_heldout(
    net: NormalNet, heldout_dataset: Dataset | None, step: int, batch_size: int, max_frames: int | None,
    evaluations: list[HeldoutEval],
) -> HeldoutEval | None:
    """Evaluate on the held-out set (None: nothing to do), append to ``evaluations``, put the net back in train mode."""
    if heldout_dataset is None:
        return None
    ev = evaluate_normal_net(net, heldout_dataset, batch_size=batch_size, max_frames=max_frames)
    ev.step = step
    evaluations.append(ev)
    net.train()
    log.info(
        "step %d held-out angular error: body %.2f/%.2f deg, predicted %.2f/%.2f deg (front/back)",
        step, ev.body_front_deg, ev.body_back_deg, ev.pred_front_deg, ev.pred_back_deg,
    )  # fmt: skip
    return ev


def _start_normal_training(
    config: NormalNetConfig, lr: float, device: torch.device, seed: int, ckpt: Path | None, resume: bool
) -> tuple[NormalNet, torch.optim.Adam, int, list[tuple[int, float]], list[HeldoutEval], float]:
    """A fresh seeded net and optimiser, or the checkpoint in ``ckpt`` when resuming (`_resume_normal_training`)."""
    torch.manual_seed(seed)
    net = NormalNet(config).to(device)
    state = read_checkpoint_state(ckpt) if (ckpt is not None and resume) else None
    if state is not None:
        return _resume_normal_training(ckpt, state, config, lr, device)
    return net, torch.optim.Adam(net.parameters(), lr=lr), 0, [], [], 0.0


def _check_training_args(train_dataset: Dataset, steps: int, batch_size: int, lr: float) -> None:
    if steps < 0 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need steps >= 0, batch_size >= 1, lr > 0; got {steps}, {batch_size}, {lr}")
    if len(train_dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("the training dataset is empty: generate samples first (scripts/make_synth.py)")


@dataclass
class _Run:
    """What the training loop of `train_normal_net` carries from step to step."""

    net: NormalNet
    optimizer: torch.optim.Adam
    step: int
    losses: list[tuple[int, float]]
    evaluations: list[HeldoutEval]
    elapsed_before: float
    t0: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0


def train_normal_net(
    train_dataset: Dataset,
    heldout_dataset: Dataset | None,
    config: NormalNetConfig,
    steps: int,
    batch_size: int = 8,
    lr: float = 2e-3,
    out_path: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    resume: bool = True,
    progress: Callable[[TrainProgress], None] | None = None,
    *,
    eval_every: int = 250,
    checkpoint_every: int = 100,
    log_every: int = 10,
    max_eval_frames: int | None = None,
    w_gradient: float = 0.5,
    augment: bool = True,
    warmup: int | None = None,
    seed: int = 0,
    num_workers: int = 0,
    stop_at: int | None = None,
    time_budget_s: float | None = None,
) -> NormalTrainResult:
    """Train a `NormalNet` (front and back) with Adam on (body normals, image) → clothed normals.

    A run can be cut into chunks (``stop_at`` / ``time_budget_s``, e.g. ≤ 10 minutes on a lent GPU): each chunk ends
    with a checkpoint and the next call with the same arguments continues from it. Data order and augmentation of
    step k depend only on (seed, k) (`step_batch_indices`, `step_seed`), and the checkpoint holds the weights and
    Adam's moments exactly, so the chunks reach the same weights as one long run (bit-identical on CPU).

    Args: ``train_dataset`` items as in the module docstring (resized to `config.image_size`); ``heldout_dataset``
    evaluated every ``eval_every`` steps and at the end (None: none); ``config`` the architecture (must match a
    resumed checkpoint's); ``steps`` total steps (the lr schedule, `learning_rate`, spans them; a resumed run
    continues up to them); ``out_path`` final weights, written once ``steps`` are done; ``checkpoint_dir`` gets
    weights, optimizer and state.json every ``checkpoint_every`` steps and when the run or chunk ends; ``resume``
    continues from its checkpoint; ``progress`` gets a `TrainProgress` every ``log_every`` steps and after each
    evaluation; ``w_gradient`` weighs the multi-scale gradient loss (L1 on normals has weight 1); ``augment`` mirrors
    half of each batch (normals' x negated); ``warmup`` linear warm-up steps (default 2 % of ``steps``, ≤ 100);
    ``seed`` seeds initialisation, data order and augmentation; ``stop_at`` ends this chunk after that step;
    ``time_budget_s`` ends it after the first step finishing past that many seconds of this call. Side effect:
    `torch.set_flush_denormal(True)` (process-wide) keeps CPU training fast.

    Returns: the net (on `device`, eval mode), loss curve and evaluations; ``step < steps`` when a chunk ended early
    (then no held-out evaluation runs and ``out_path`` is not written).
    """
    _check_training_args(train_dataset, steps, batch_size, lr)
    device = torch.device(device)
    warmup = min(100, max(1, steps // 50)) if warmup is None else max(1, warmup)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    end = steps if stop_at is None else min(steps, max(0, stop_at))

    torch.set_flush_denormal(True)  # Adam's subnormal second moments of tiny gradients slow CPU steps 10-50×
    run = _Run(*_start_normal_training(config, lr, device, seed, ckpt, resume))

    def save() -> None:
        state = _checkpoint_state(run.step, steps, lr, batch_size, w_gradient, augment, run.seconds, config,
                                  run.losses, run.evaluations)  # fmt: skip
        save_checkpoint(ckpt, run.net, run.optimizer, state)

    def run_eval() -> HeldoutEval | None:
        return _evaluate_heldout(run.net, heldout_dataset, run.step, max(batch_size, 8), max_eval_frames,
                                 run.evaluations)  # fmt: skip

    def report(ev: HeldoutEval | None) -> None:
        if progress is not None:
            loss = run.losses[-1][1] if run.losses else float("nan")
            progress(TrainProgress(run.step, steps, loss, learning_rate(run.step, steps, lr, warmup), run.seconds, ev))

    run.net.train()
    batches = _step_batches(train_dataset, batch_size, seed, run.step, num_workers)
    running, running_n = 0.0, 0
    while run.step < end and (time_budget_s is None or time.perf_counter() - run.t0 < time_budget_s):
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate(run.step, steps, lr, warmup)
        flips = torch.Generator().manual_seed(step_seed(seed, run.step))  # this step's own augmentation
        running += _train_step(run.net, run.optimizer, next(batches), config.image_size, device, augment, w_gradient,
                               flips)  # fmt: skip
        run.step += 1
        running_n += 1
        ev = run_eval() if eval_every > 0 and run.step % eval_every == 0 and run.step < steps else None
        if run.step % log_every == 0 or run.step == steps or ev is not None:
            run.losses.append((run.step, running / max(1, running_n)))
            running, running_n = 0.0, 0
            report(ev)
        if ckpt is not None and checkpoint_every > 0 and run.step % checkpoint_every == 0 and run.step < end:
            save()

    evaluated = bool(run.evaluations) and run.evaluations[-1].step == run.step
    if (finished := run.step >= steps) and not evaluated and (ev := run_eval()) is not None:
        report(ev)
    if ckpt is not None:
        save()
    if finished and out_path is not None:
        save_normal_net(out_path, run.net)
    if not finished:
        log.info("chunk ended at step %d of %d after %.0f s: run again to continue", run.step, steps, run.seconds)
    run.net.eval()
    return NormalTrainResult(run.net, run.step, run.seconds, run.losses, run.evaluations)
