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
    batch: dict[str, torch.Tensor], size: int, device: torch.device, augment: bool = False
) -> tuple[torch.Tensor, ...]:
    """Boundary batch → (rgb, mask, body_front, body_back, gt_front, gt_back), channels-first at size×size."""
    b = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    rgb, mask, bf, bb = prepare_inputs(b["rgb"], b["mask"], b["body_normal_front"], b["body_normal_back"], (size, size))
    # Ground truth goes through the same resize and is masked with the network's mask.
    _, _, gf, gb = prepare_inputs(b["rgb"], b["mask"], b["normal_front"], b["normal_back"], (size, size))
    tensors = (rgb, mask, bf, bb, gf, gb)
    if augment:
        flip = torch.rand(rgb.shape[0], device=device) < 0.5
        tensors = tuple(mirror_batch(tensors, (False, False, True, True, True, True), flip))
    return tensors


def _infinite_batches(
    dataset: Dataset, batch_size: int, seed: int, num_workers: int
) -> Iterator[dict[str, torch.Tensor]]:
    epoch = 0
    while True:
        gen = torch.Generator().manual_seed(seed + epoch)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            drop_last=len(dataset) >= batch_size,  # type: ignore[arg-type]
            generator=gen,
            collate_fn=collate_normal_samples,
            num_workers=num_workers,
            persistent_workers=False,
        )
        yield from loader
        epoch += 1


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
) -> float:
    """One Adam step on a batch of samples (front + back normal loss); returns the loss."""
    rgb, mask, bf, bb, gf, gb = _net_batch(batch, image_size, device, augment)
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
) -> NormalTrainResult:
    """Train a `NormalNet` (front and back) with Adam on (body normals, image) → clothed normals.

    Args:
        train_dataset: items as described in the module docstring; resized to `config.image_size` if needed.
        heldout_dataset: evaluated every `eval_every` steps and at the end (None: no evaluation).
        config: the architecture (must match the checkpoint's when resuming).
        steps: total optimisation steps (a resumed run continues up to this count).
        batch_size, lr: Adam batch size and peak learning rate (cosine-decayed, see `learning_rate`).
        out_path: where the final weights go (safetensors, `save_normal_net`); None: not written.
        checkpoint_dir: directory for `weights.safetensors`, `optimizer.safetensors`, `state.json`, written every
            `checkpoint_every` steps and at the end; None: no checkpoints.
        device: torch device for training.
        resume: continue from the checkpoint in `checkpoint_dir` if there is one.
        progress: called with a `TrainProgress` every `log_every` steps and after each evaluation.
        w_gradient: weight of the multi-scale gradient loss (the L1 on normals has weight 1).
        augment: mirror half of each batch left-right (normals' x negated), doubling the effective data.
        warmup: linear warm-up steps (default: 2 % of `steps`, at most 100).
        seed: seeds initialisation and data order (the order of a resumed run is re-seeded from its step).
        num_workers: DataLoader workers.

    Side effect: turns on `torch.set_flush_denormal(True)` (process-wide) to keep CPU training fast.

    Returns:
        `NormalTrainResult` with the trained net (on `device`, eval mode), loss curve and evaluations.
    """
    _check_training_args(train_dataset, steps, batch_size, lr)
    device = torch.device(device)
    warmup = min(100, max(1, steps // 50)) if warmup is None else max(1, warmup)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None

    # Adam's second moments of tiny gradients become subnormal floats, which slow CPU steps down 10-50×.
    torch.set_flush_denormal(True)
    net, optimizer, step, losses, evaluations, elapsed_before = _start_normal_training(config, lr, device, seed, ckpt,
                                                                                        resume)  # fmt: skip

    def make_state() -> dict[str, Any]:
        return _checkpoint_state(step, steps, lr, batch_size, w_gradient, augment,
                                 elapsed_before + (time.perf_counter() - t0), config, losses, evaluations)  # fmt: skip

    def run_eval() -> HeldoutEval | None:
        return _evaluate_heldout(net, heldout_dataset, step, max(batch_size, 8), max_eval_frames, evaluations)

    t0 = time.perf_counter()
    net.train()
    batches = _infinite_batches(train_dataset, batch_size, seed + step, num_workers)
    running, running_n = 0.0, 0
    current_lr = learning_rate(step, steps, lr, warmup)
    while step < steps:
        current_lr = learning_rate(step, steps, lr, warmup)
        for group in optimizer.param_groups:
            group["lr"] = current_lr
        running += _train_step(net, optimizer, next(batches), config.image_size, device, augment, w_gradient)
        step += 1
        running_n += 1
        ev = None
        if eval_every > 0 and step % eval_every == 0 and step < steps:
            ev = run_eval()
        if step % log_every == 0 or step == steps or ev is not None:
            losses.append((step, running / max(1, running_n)))
            running, running_n = 0.0, 0
            if progress is not None:
                seconds = elapsed_before + time.perf_counter() - t0
                progress(TrainProgress(step, steps, losses[-1][1], current_lr, seconds, ev))
        if ckpt is not None and checkpoint_every > 0 and step % checkpoint_every == 0 and step < steps:
            save_checkpoint(ckpt, net, optimizer, make_state())

    ev = run_eval() if not evaluations or evaluations[-1].step != step else None
    if ev is not None and progress is not None:
        progress(TrainProgress(step, steps, losses[-1][1] if losses else float("nan"), current_lr,
                               elapsed_before + time.perf_counter() - t0, ev))  # fmt: skip
    if ckpt is not None:
        save_checkpoint(ckpt, net, optimizer, make_state())
    if out_path is not None:
        save_normal_net(out_path, net)
    net.eval()
    return NormalTrainResult(net, step, elapsed_before + time.perf_counter() - t0, losses, evaluations)
