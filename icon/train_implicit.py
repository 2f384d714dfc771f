"""Training loop of the implicit occupancy net on synthetic clothed humans: cached body features, degraded clothed
normals, BCE + Adam, resumable checkpoints and held-out evaluation (occupancy and full reconstructions).

Samples are any objects with the ``icon.synth.SynthSample`` fields used here (``points``, ``occupancy``, the four
normal maps, ``fit_body``, ``camera``, and for reconstruction metrics ``vertices``/``faces``). Features are computed
from the *perturbed* body fit, as at test time. Files are touched only through the explicit ``out_path`` /
``checkpoint_dir`` arguments.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from body.params import BODY_PARAM_NAMES, BodyParams
from geometry.cameras import OrthographicCamera
from icon.implicit import (
    BodyPointFeatures,
    ImplicitConfig,
    ImplicitNet,
    PointFeatureSampler,
    assemble_features,
    blend_front_back,
    load_implicit_net,
    reconstruct_surface,
    sample_clothed_normals,
    sample_pixels,
    save_implicit_net,
)
from icon.train_normal import (
    _OPTIMIZER_FILE,
    _WEIGHTS_FILE,
    learning_rate,
    load_optimizer_state,
    read_checkpoint_state,
    save_checkpoint,
)

__all__ = [
    "FeatureCache",
    "ImplicitTrainConfig",
    "ImplicitTrainResult",
    "OccupancyEval",
    "ReconstructionEval",
    "build_feature_cache",
    "load_refined_fits",
    "with_refined_fits",
    "sample_degraded_normals",
    "evaluate_occupancy",
    "evaluate_reconstructions",
    "read_checkpoint_state",
    "train_implicit",
]

log = logging.getLogger(__name__)


class ImplicitTrainConfig(BaseModel):
    """Settings of an implicit-net training run (the net's own architecture is an ``ImplicitConfig``)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(4000, ge=0, description="Optimiser steps.")
    batch_samples: int = Field(8, ge=1, description="Persons per step.")
    points_per_sample: int = Field(2048, ge=1, description="Occupancy points drawn per person per step.")
    cached_points: int = Field(
        10000, ge=1, description="Occupancy points per person whose body features are precomputed (a random subset)."
    )
    lr: float = Field(1e-3, gt=0, description="Adam learning rate after warm-up.")
    warmup: int = Field(100, ge=0, description="Linear learning-rate warm-up steps.")
    lr_final_fraction: float = Field(0.05, gt=0, le=1, description="Cosine decay ends at lr times this.")
    gt_normal_probability: float = Field(
        0.3, ge=0, le=1, description="Share of persons seeing exact clothed normals; the rest see degraded ones."
    )
    blend_max: float = Field(
        0.5, ge=0, le=1, description="Degradation: largest pull of clothed normals towards the body fit's normals."
    )
    blur_max_px: float = Field(2.0, ge=0, description="Degradation: largest Gaussian blur sigma (pixels at S).")
    noise_max: float = Field(0.15, ge=0, description="Degradation: largest per-pixel Gaussian noise std.")
    predicted_normal_probability: float = Field(
        0.5, ge=0, le=1, description="Share of the persons not seeing exact normals that see the normal net's own "
        "predictions instead of synthetic degradation (only when the samples carry them: ``with_refined_fits``).",
    )
    checkpoint_every: int = Field(250, ge=1, description="Steps between checkpoints (when a directory is given).")
    eval_every: int = Field(1000, ge=1, description="Steps between held-out occupancy evaluations.")
    reconstructions: int = Field(4, ge=0, description="Held-out persons reconstructed at the end for Chamfer/P2S.")
    eval_resolution: int = Field(256, ge=16, description="Marching-cubes resolution of the held-out reconstructions.")
    seed: int = Field(0, description="Seed of point, batch and degradation sampling.")


# ------------------------------------------------------------------------------------------------------ feature cache
@dataclass
class FeatureCache:
    """Precomputed body features and normal maps of a set of persons sharing one image size S.

    Attributes:
        sdf, normal, visibility, pixels: body features, (M, P), (M, P, 3), (M, P), (M, P, 2).
        occupancy: (M, P) float 0/1 labels.
        normal_front, normal_back: (M, S, S, 3) ground-truth clothed normals.
        body_normal_front, body_normal_back: (M, S, S, 3) normals of the perturbed body fits.
        mask: (M, S, S, 1) float clothed silhouette (where the exact front normals are non-zero).
        image_size: S.
        seeds: (M,) sample seeds (-1 when unknown).
        predicted_front, predicted_back: (M, S, S, 3) float16 clothed normals predicted by the normal net during the
            refinement of the fits (``with_refined_fits``), or None.
    """

    sdf: torch.Tensor
    normal: torch.Tensor
    visibility: torch.Tensor
    pixels: torch.Tensor
    occupancy: torch.Tensor
    normal_front: torch.Tensor
    normal_back: torch.Tensor
    body_normal_front: torch.Tensor
    body_normal_back: torch.Tensor
    mask: torch.Tensor
    image_size: int
    seeds: np.ndarray
    predicted_front: torch.Tensor | None = None
    predicted_back: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.sdf.shape[0])

    def to(self, device: torch.device | str) -> FeatureCache:
        """Copy with every tensor on ``device``."""
        kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return FeatureCache(**kw)

    def body_features(self, index: torch.Tensor, point_index: torch.Tensor | None = None) -> BodyPointFeatures:
        """Body features of persons ``index`` (B,), optionally at points ``point_index`` (B, n)."""

        def take(t: torch.Tensor) -> torch.Tensor:
            t = t[index]
            if point_index is None:
                return t
            idx = point_index.reshape(*point_index.shape, *([1] * (t.ndim - 2))).expand(-1, -1, *t.shape[2:])
            return torch.gather(t, 1, idx)

        return BodyPointFeatures(take(self.sdf), take(self.normal), take(self.visibility), take(self.pixels))


_REFINED_KEYS = ("betas", "global_orient", "body_pose", "transl", "normal_front", "normal_back")


def load_refined_fits(folder: str | Path) -> dict[int, dict[str, np.ndarray]]:
    """Per-seed refined fits and predicted normals written by ``scripts/refine_synth.py`` (``<seed>.npz`` files)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise ValueError(f"no refined fits (<seed>.npz) in {folder}; make them with scripts/refine_synth.py")
    out = {}
    for f in files:
        if not f.stem.isdigit():
            continue
        with np.load(f, allow_pickle=False) as z:
            missing = [k for k in _REFINED_KEYS if k not in z.files]
            if missing:
                raise ValueError(f"{f}: missing {missing}")
            out[int(f.stem)] = {k: z[k] for k in _REFINED_KEYS}
    return out


def with_refined_fits(samples: Sequence[Any], refined: dict[int, dict[str, np.ndarray]]) -> list[Any]:
    """Copies of the samples whose fit is the refined one, carrying the normals predicted for it.

    Each returned sample has ``fit_body`` from ``refined[seed]`` and two
    extra attributes ``predicted_normal_front/back`` ((S, S, 3) float16), so ``build_feature_cache`` computes body
    features from the fit the test-time pipeline would have and ``sample_degraded_normals`` can show the net real
    predictions. Samples without a refined entry are dropped.
    """
    out = []
    for s in samples:
        r = refined.get(int(s.seed))
        if r is None:
            continue
        c = copy.copy(s)
        c.fit_body = BodyParams(*(np.asarray(r[name], np.float32)[None] for name in BODY_PARAM_NAMES))
        c.predicted_normal_front = r["normal_front"]
        c.predicted_normal_back = r["normal_back"]
        out.append(c)
    return out


def _fit_vertices(model, sample) -> torch.Tensor:
    with torch.no_grad():
        out = model(**sample.fit_body.to(model.device, model.dtype).as_dict())
    return out.vertices[0].float()


def _camera(sample, size: int) -> OrthographicCamera:
    c = torch.as_tensor(np.asarray(sample.camera), dtype=torch.float32)
    return OrthographicCamera(scale=c[0:1], cx=c[1:2], cy=c[2:3], width=size, height=size)


def build_feature_cache(
    samples: Sequence[Any],
    model,
    config: ImplicitConfig | None = None,
    max_points: int | None = None,
    seed: int = 0,
    on_sample: Callable[[int], None] | None = None,
) -> FeatureCache:
    """Body features of each person's occupancy points (perturbed fit), plus its normal maps, kept in memory.

    Args:
        samples: Synthetic samples (e.g. a ``SynthDataset``), all with the same image size.
        model: ``BodyModel`` that poses the fit parameters.
        config: Feature settings of the net to train.
        max_points: Keep a random subset of this many points per person (all if None or larger).
        seed: Seed of the subset.
        on_sample: Called with the index after each person.

    Returns:
        FeatureCache on the CPU.
    """
    config = ImplicitConfig() if config is None else config
    if len(samples) == 0:
        raise ValueError("build_feature_cache needs at least one sample")
    rng = np.random.default_rng(seed)
    faces = model.faces.cpu()
    parts: dict[str, list] = {k: [] for k in ("sdf", "normal", "visibility", "pixels", "occupancy")}
    maps: dict[str, list] = {k: [] for k in ("normal_front", "normal_back", "body_normal_front", "body_normal_back")}
    maps["mask"] = []
    predicted: dict[str, list] = {"predicted_front": [], "predicted_back": []}
    seeds, size = [], None
    for i in range(len(samples)):
        s = samples[i]
        s_size = int(np.asarray(s.normal_front).shape[0])
        if size is None:
            size = s_size
        elif s_size != size:
            raise ValueError(f"all samples need one image size: sample {i} has {s_size}, the first has {size}")
        pts = np.asarray(s.points, np.float32)
        occ = np.asarray(s.occupancy, np.float32)
        if max_points is not None and len(pts) > max_points:
            keep = np.sort(rng.choice(len(pts), max_points, replace=False))
            pts, occ = pts[keep], occ[keep]
        if parts["sdf"] and len(pts) != parts["sdf"][0].shape[0]:
            raise ValueError(f"sample {i} has {len(pts)} points, the first {parts['sdf'][0].shape[0]}; use max_points")
        zeros = torch.zeros(1, size, size, 3)
        sampler = PointFeatureSampler(
            _fit_vertices(model, s)[None].cpu(), faces, zeros, zeros, _camera(s, size), config
        )
        with torch.no_grad():
            body = sampler.body_features(torch.from_numpy(pts)[None])
        parts["sdf"].append(body.sdf[0].float())
        parts["normal"].append(body.normal[0].float())
        parts["visibility"].append(body.visibility[0].float())
        parts["pixels"].append(body.pixels[0].float())
        parts["occupancy"].append(torch.from_numpy(occ))
        for k in ("normal_front", "normal_back", "body_normal_front", "body_normal_back"):
            maps[k].append(torch.from_numpy(np.asarray(getattr(s, k), np.float32)))
        maps["mask"].append((maps["normal_front"][-1].abs().sum(-1, keepdim=True) > 0).float())
        if getattr(s, "predicted_normal_front", None) is not None:
            predicted["predicted_front"].append(torch.as_tensor(np.asarray(s.predicted_normal_front, np.float16)))
            predicted["predicted_back"].append(torch.as_tensor(np.asarray(s.predicted_normal_back, np.float16)))
        seeds.append(int(getattr(s, "seed", -1)))
        if on_sample is not None:
            on_sample(i)
    stacked = {k: torch.stack(v) for k, v in {**parts, **maps}.items()}
    n_pred = len(predicted["predicted_front"])
    if n_pred not in (0, len(seeds)):
        raise ValueError(f"{n_pred} of {len(seeds)} samples carry predicted normals: all or none must")
    extra = {k: torch.stack(v) for k, v in predicted.items()} if n_pred else {}
    return FeatureCache(**stacked, **extra, image_size=int(size), seeds=np.asarray(seeds))


# -------------------------------------------------------------------------------------------------------- degradation
def sample_degraded_normals(
    cache: FeatureCache,
    index: torch.Tensor,
    pixels: torch.Tensor,
    visibility: torch.Tensor,
    config: ImplicitTrainConfig,
    generator: torch.Generator | None = None,
    blur_samples: int = 4,
) -> torch.Tensor:
    """Clothed-normal features as a normal net might deliver them: exact normals pulled towards the body fit's,
    blurred, noisy and renormalised inside the exact silhouette; then visibility-blended like
    ``sample_clothed_normals``.

    Each person keeps its exact normals with probability ``config.gt_normal_probability``; when the cache holds the
    normal net's own predictions, the others see those with probability ``config.predicted_normal_probability``; the
    rest get a random blend weight, blur sigma and noise level up to the configured maxima. The blur is a Monte-Carlo
    Gaussian (the mean of ``blur_samples`` bilinear lookups at jittered pixels) and the noise is drawn per point: only
    the looked-up pixels are touched, never whole maps, which keeps a training step cheap.

    Args:
        cache: Feature cache holding the maps.
        index: (B,) persons of the cache.
        pixels: (B, N, 2) pixel positions of the points in the S x S image.
        visibility: (B, N) visibility of the points' closest body points.
        config: Degradation settings.
        generator: CPU random generator (reproducible runs).
        blur_samples: Lookups averaged for the blur.

    Returns:
        (B, N, 3) clothed-normal features.
    """
    b, n = pixels.shape[:2]
    image = (cache.image_size, cache.image_size)
    exact = torch.rand(b, generator=generator) < config.gt_normal_probability
    blend = torch.rand(b, generator=generator) * config.blend_max
    sigma = torch.rand(b, generator=generator) * config.blur_max_px
    noise = torch.rand(b, generator=generator) * config.noise_max
    jitter = torch.randn(b, blur_samples, n, 2, generator=generator).to(pixels)
    eps = torch.randn(b, n, 2, 3, generator=generator).to(pixels)
    predicted = torch.zeros(b, dtype=torch.bool)
    if cache.predicted_front is not None:
        predicted = ~exact & (torch.rand(b, generator=generator) < config.predicted_normal_probability)
    fronts, backs = [], []
    for i, j in enumerate(index.tolist()):
        px = pixels[i : i + 1]
        if exact[i] or predicted[i]:
            front, back = ((cache.normal_front, cache.normal_back) if exact[i] else
                           (cache.predicted_front, cache.predicted_back))  # fmt: skip
            fronts.append(sample_pixels(front[j : j + 1].float(), px, image))
            backs.append(sample_pixels(back[j : j + 1].float(), px, image))
            continue
        pj = (px[:, None] + float(sigma[i]) * jitter[i : i + 1]).reshape(1, -1, 2)

        def blurred(maps: torch.Tensor, pj=pj) -> torch.Tensor:
            return sample_pixels(maps, pj, image).reshape(1, blur_samples, n, 3).mean(dim=1)

        w = float(blend[i])
        front = (1 - w) * blurred(cache.normal_front[j : j + 1]) + w * blurred(cache.body_normal_front[j : j + 1])
        back = (1 - w) * blurred(cache.normal_back[j : j + 1]) + w * blurred(cache.body_normal_back[j : j + 1])
        inside = sample_pixels(cache.mask[j : j + 1], px, image)  # (1, N, 1) soft exact silhouette
        both = torch.stack([front, back], dim=2) + float(noise[i]) * eps[i : i + 1]
        both = torch.nn.functional.normalize(both, dim=-1) * inside[..., None]
        fronts.append(both[:, :, 0])
        backs.append(both[:, :, 1])
    return blend_front_back(torch.cat(fronts), torch.cat(backs), visibility)


# --------------------------------------------------------------------------------------------------------- evaluation
@dataclass
class OccupancyEval:
    """Point-wise occupancy of held-out persons (exact clothed normals); body = inside the naked fitted body."""

    step: int
    persons: int
    points: int
    bce: float
    accuracy: float
    iou: float
    body_accuracy: float
    body_iou: float


@dataclass
class ReconstructionEval:
    """Full reconstructions of held-out persons vs their clothed ground truth (cm), and the naked fit's numbers."""

    seeds: list[int]
    chamfer: list[float]
    p2s: list[float]
    normal_consistency: list[float]
    body_chamfer: list[float]
    body_p2s: list[float]
    body_normal_consistency: list[float]
    seconds_per_reconstruction: float

    @property
    def mean_chamfer(self) -> float:
        return float(np.mean(self.chamfer))

    @property
    def mean_body_chamfer(self) -> float:
        return float(np.mean(self.body_chamfer))

    @property
    def chamfer_reduction(self) -> float:
        """Relative Chamfer reduction vs the naked body (0.3 = 30 % lower)."""
        return 1.0 - self.mean_chamfer / self.mean_body_chamfer


def _iou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    inter = (pred & gt).sum().item()
    union = (pred | gt).sum().item()
    return float(inter / union) if union else 1.0


@torch.no_grad()
def evaluate_occupancy(
    net: ImplicitNet, cache: FeatureCache, step: int = 0, batch_persons: int = 8, device: torch.device | str = "cpu"
) -> OccupancyEval:
    """BCE, accuracy and IoU of the inside class over every cached point, with the exact clothed normals.

    Args:
        net: The net (evaluated in eval mode, restored after).
        cache: Held-out feature cache.
        step: Training step recorded with the result.
        batch_persons: Persons per forward pass.
        device: Device of the evaluation.

    Returns:
        OccupancyEval (the naked body's inside test as the baseline).
    """
    was_training = net.training
    net.eval()
    preds, gts, bodies, bce_sum = [], [], [], 0.0
    try:
        for s in range(0, len(cache), batch_persons):
            idx = torch.arange(s, min(s + batch_persons, len(cache)))
            body = cache.body_features(idx)
            body = BodyPointFeatures(*(t.to(device) for t in (body.sdf, body.normal, body.visibility, body.pixels)))
            front = cache.normal_front[idx].to(device)
            back = cache.normal_back[idx].to(device)
            clothed = sample_clothed_normals(front, back, body.pixels, body.visibility, (cache.image_size,) * 2)
            logits = net(assemble_features(body, clothed, net.config))
            occ = cache.occupancy[idx].to(device)
            bce_sum += torch.nn.functional.binary_cross_entropy_with_logits(logits, occ, reduction="sum").item()
            preds.append((logits > 0).cpu())
            gts.append((occ > 0.5).cpu())
            bodies.append((body.sdf < 0).cpu())
    finally:
        net.train(was_training)
    pred, gt, body_in = torch.cat(preds), torch.cat(gts), torch.cat(bodies)
    n = gt.numel()
    return OccupancyEval(
        step=step, persons=len(cache), points=n, bce=bce_sum / n,
        accuracy=float((pred == gt).float().mean()), iou=_iou(pred, gt),
        body_accuracy=float((body_in == gt).float().mean()), body_iou=_iou(body_in, gt),
    )  # fmt: skip


def evaluate_reconstructions(
    net: ImplicitNet,
    samples: Sequence[Any],
    model,
    resolution: int = 256,
    device: torch.device | str = "cpu",
    n_samples: int = 10000,
) -> ReconstructionEval:
    """Reconstruct each held-out person from its exact clothed normals and perturbed fit; ICON's Chamfer/P2S (cm).

    Args:
        net: The net.
        samples: Samples with ground-truth meshes (``vertices``, ``faces``).
        model: ``BodyModel`` posing the fits.
        resolution: Marching-cubes resolution.
        device: Device of the reconstruction.
        n_samples: Surface samples per mesh for the metrics.

    Returns:
        ReconstructionEval with per-person values.
    """
    from geometry.metrics import reconstruction_metrics

    out: dict[str, list] = {k: [] for k in ("seeds", "chamfer", "p2s", "normal_consistency", "body_chamfer",
                                            "body_p2s", "body_normal_consistency")}  # fmt: skip
    faces = model.faces.to(device)
    seconds = 0.0
    for s in samples:
        if len(s.faces) == 0:
            raise ValueError(f"sample {getattr(s, 'seed', '?')} has no ground-truth mesh; load it with the mesh")
        size = int(np.asarray(s.normal_front).shape[0])
        verts = _fit_vertices(model, s).to(device)
        front = torch.as_tensor(np.asarray(s.normal_front, np.float32), device=device)
        back = torch.as_tensor(np.asarray(s.normal_back, np.float32), device=device)
        t0 = time.perf_counter()
        rv, rf = reconstruct_surface(net, verts, faces, front, back, _camera(s, size).to(device), resolution=resolution)
        seconds += time.perf_counter() - t0
        gv = torch.as_tensor(np.asarray(s.vertices, np.float32), device=device)
        gf = torch.as_tensor(np.asarray(s.faces, np.int64), device=device)
        body = reconstruction_metrics(verts, faces, gv, gf, n_samples=n_samples)
        out["seeds"].append(int(getattr(s, "seed", -1)))
        out["body_chamfer"].append(float(body.chamfer))
        out["body_p2s"].append(float(body.p2s))
        out["body_normal_consistency"].append(float(body.normal_consistency))
        if len(rf) == 0:
            log.warning("held-out person %s: empty reconstruction", out["seeds"][-1])
            out["chamfer"].append(float("inf"))
            out["p2s"].append(float("inf"))
            out["normal_consistency"].append(0.0)
            continue
        rec = reconstruction_metrics(torch.from_numpy(rv).to(device), torch.from_numpy(rf).to(device), gv, gf,
                                     n_samples=n_samples)  # fmt: skip
        out["chamfer"].append(float(rec.chamfer))
        out["p2s"].append(float(rec.p2s))
        out["normal_consistency"].append(float(rec.normal_consistency))
    return ReconstructionEval(**out, seconds_per_reconstruction=seconds / max(1, len(samples)))


# ----------------------------------------------------------------------------------------------------------- training
@dataclass
class ImplicitTrainResult:
    """Outcome of ``train_implicit``.

    Attributes:
        net: The trained net (eval mode).
        steps: Steps done in total (including resumed ones).
        losses: Mean BCE per logged interval, as (step, loss) pairs.
        occupancy: Held-out occupancy evaluations.
        reconstruction: Final held-out reconstruction metrics (None without held-out meshes).
        seconds: Wall time of this call (s), of which ``cache_seconds`` built the feature caches.
        cache_seconds: Feature-cache build time (s).
    """

    net: ImplicitNet
    steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    occupancy: list[OccupancyEval] = field(default_factory=list)
    reconstruction: ReconstructionEval | None = None
    seconds: float = 0.0
    cache_seconds: float = 0.0


def _net_and_optimizer(
    ckpt: Path | None,
    state: dict[str, Any] | None,
    net_config: ImplicitConfig | None,
    lr: float,
    device: torch.device,
    say: Callable[[str], None],
) -> tuple[ImplicitNet, torch.optim.Adam]:
    """The net and its Adam optimiser in training mode: restored from the checkpoint in ``ckpt`` when ``state`` (its
    state.json) is given, else a new net of ``net_config``."""
    if state is not None:
        net = load_implicit_net(ckpt / _WEIGHTS_FILE, device=device).train()
        say(f"resuming from {ckpt} at step {state['step']}")
    else:
        net = ImplicitNet(net_config).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    if state is not None:
        load_optimizer_state(ckpt / _OPTIMIZER_FILE, optimizer)
    return net, optimizer


def _batch_loss(
    net: torch.nn.Module, cache: FeatureCache, config: ImplicitTrainConfig, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Occupancy BCE of one random batch: ``config.batch_samples`` persons of ``cache``, ``points_per_sample`` cached
    points each, clothed normals degraded as at test time (draws from ``gen``)."""
    n_points = cache.sdf.shape[1]
    per = min(config.points_per_sample, n_points)
    idx = torch.randint(len(cache), (min(config.batch_samples, len(cache)),), generator=gen).to(device)
    pidx = torch.rand(len(idx), n_points, generator=gen).argsort(dim=1)[:, :per].to(device)
    body = cache.body_features(idx, pidx)
    clothed = sample_degraded_normals(cache, idx, body.pixels, body.visibility, config, gen)
    logits = net(assemble_features(body, clothed, net.config))
    target = torch.gather(cache.occupancy[idx], 1, pidx)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)


def _heldout_reconstructions(
    net: torch.nn.Module,
    heldout_samples: Any,
    model: Any,
    config: ImplicitTrainConfig,
    device: torch.device,
    say: Callable[[str], None],
) -> ReconstructionEval | None:
    """Chamfer/P2S of the first ``config.reconstructions`` held-out persons (None when off or without meshes)."""
    if heldout_samples is None or config.reconstructions <= 0:
        return None
    chosen = [heldout_samples[i] for i in range(min(config.reconstructions, len(heldout_samples)))]
    if not all(len(s.faces) for s in chosen):
        say("held-out samples have no meshes: reconstruction metrics skipped")
        return None
    recon = evaluate_reconstructions(net, chosen, model, config.eval_resolution, device)
    say(f"held-out reconstructions ({len(chosen)} persons, {config.eval_resolution}^3): Chamfer "
        f"{recon.mean_chamfer:.3f} cm vs naked body {recon.mean_body_chamfer:.3f} cm "
        f"({100 * recon.chamfer_reduction:.1f} % lower), P2S {np.mean(recon.p2s):.3f} vs "
        f"{np.mean(recon.body_p2s):.3f} cm")  # fmt: skip
    return recon


def train_implicit(
    train_samples: Sequence[Any],
    heldout_samples: Sequence[Any] | None,
    model,
    config: ImplicitTrainConfig | None = None,
    net_config: ImplicitConfig | None = None,
    out_path: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    on_log: Callable[[str], None] | None = None,
    log_every: int = 50,
) -> ImplicitTrainResult:
    """Train an ``ImplicitNet`` with BCE on synthetic occupancy samples (resuming from ``checkpoint_dir``).

    Args:
        train_samples: Training persons (see the module docstring), one image size.
        heldout_samples: Held-out persons for evaluation (with meshes for the reconstruction metrics) or None.
        model: ``BodyModel`` that poses the perturbed fits.
        config: Training settings (default ``ImplicitTrainConfig()``).
        net_config: Architecture of a new net (ignored when resuming: the checkpoint's config wins).
        out_path: Where to write the final weights (safetensors), or None.
        checkpoint_dir: Directory of resumable checkpoints, or None.
        device: Training device.
        on_log: Called with human-readable progress lines (the CLI prints them).
        log_every: Steps between loss log lines.

    Returns:
        ImplicitTrainResult.
    """
    config = ImplicitTrainConfig() if config is None else config
    device = torch.device(device)
    say = on_log or (lambda msg: log.info("%s", msg))
    t_start = time.perf_counter()
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    state = read_checkpoint_state(ckpt) if ckpt is not None else None
    net, optimizer = _net_and_optimizer(ckpt, state, net_config, config.lr, device, say)
    step = int(state["step"]) if state else 0
    losses = [tuple(x) for x in state["losses"]] if state else []
    occupancy = [OccupancyEval(**e) for e in state["occupancy"]] if state else []

    t0 = time.perf_counter()
    say(f"caching body features of {len(train_samples)} training persons")
    cache = build_feature_cache(train_samples, model, net.config, config.cached_points, config.seed).to(device)
    held = None
    if heldout_samples is not None and len(heldout_samples):
        held = build_feature_cache(heldout_samples, model, net.config, config.cached_points, config.seed + 1)
    cache_seconds = time.perf_counter() - t0
    say(f"feature caches built in {cache_seconds:.1f} s")

    gen = torch.Generator()

    def make_state() -> dict[str, Any]:
        return {
            "step": step,
            "config": config.model_dump(mode="json"),
            "net_config": net.config.model_dump(mode="json"),
            "losses": losses,
            "occupancy": [asdict(e) for e in occupancy],
        }

    def run_eval() -> None:
        if held is not None:
            e = evaluate_occupancy(net, held, step=step, device=device)
            occupancy.append(e)
            say(f"step {step}: held-out BCE {e.bce:.4f} accuracy {e.accuracy:.4f} IoU {e.iou:.4f} "
                f"(naked body: accuracy {e.body_accuracy:.4f} IoU {e.body_iou:.4f})")  # fmt: skip

    running, count = 0.0, 0
    while step < config.steps:
        gen.manual_seed(config.seed * 1_000_003 + step)  # per-step seed: a resumed run draws what it would have
        lr = learning_rate(step, config.steps, config.lr, config.warmup, config.lr_final_fraction)
        for g in optimizer.param_groups:
            g["lr"] = lr
        loss = _batch_loss(net, cache, config, gen, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        running += float(loss.detach())
        count += 1
        if step % log_every == 0 or step == config.steps:
            losses.append((step, running / count))
            say(f"step {step}/{config.steps}: BCE {running / count:.4f} lr {lr:.2e} "
                f"({time.perf_counter() - t_start:.0f} s)")  # fmt: skip
            running, count = 0.0, 0
        if step % config.eval_every == 0 or step == config.steps:
            run_eval()
        if ckpt is not None and (step % config.checkpoint_every == 0 or step == config.steps):
            save_checkpoint(ckpt, net, optimizer, make_state(), save_implicit_net)
    if not occupancy or occupancy[-1].step != step:
        run_eval()

    net.eval()
    if out_path is not None:
        save_implicit_net(out_path, net)
        say(f"weights written to {out_path}")
    recon = _heldout_reconstructions(net, heldout_samples, model, config, device, say)
    return ImplicitTrainResult(net, step, losses, occupancy, recon, time.perf_counter() - t_start, cache_seconds)
