"""Command-line interface (`avatarize ...`)."""

import os
from pathlib import Path
from typing import Annotated

import typer

# One intra-op thread per process unless the user says otherwise: on small CPU boxes torch's OpenMP threads stall
# badly whenever another process (the Prefect server, a Dask worker) competes for the cores (measured 5-10x slower
# steps with 2 threads on 2 shared cores); parallelism comes from the task runners instead. Must precede torch's import.
os.environ.setdefault("OMP_NUM_THREADS", "1")

app = typer.Typer(no_args_is_help=True, help="Turn a video of a person into an animatable clothed 3D avatar.")


@app.command()
def version() -> None:
    """Print the avatarize version."""
    from importlib.metadata import version as _v

    typer.echo(_v("avatarize"))


# ------------------------------------------------------------------------------------------------- pipeline commands
def _load_cfg(config: str, fps: float | None, max_frames: int | None):
    from flows.config import ConfigError, load_config

    frames: dict = {}
    if fps is not None:
        frames.update(fps=fps, every_nth=None)
    if max_frames is not None:
        frames["max_frames"] = max_frames
    try:
        return load_config(config, {"frames": frames} if frames else None)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config/--fps/--max-frames") from e


def _runner_cfg(runner: str, devices: str | None, workers: int | None, dask_address: str | None):
    from pydantic import ValidationError

    from flows.runners import RunnerConfig

    try:
        return RunnerConfig(kind=runner, devices=devices or [], workers=workers, address=dask_address)
    except (ValidationError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--runner/--devices/--workers/--dask-address") from e


_CONFIG_HELP = "Preset (fast, default, quality) or a YAML file."
_RUNNER_HELP = "Task runner: thread (default), process (one worker per --devices entry) or dask."
_DEVICES_HELP = "Devices the frame tasks lease, e.g. cpu,cpu or cuda:0,cuda:1."


@app.command()
def run(
    source: Annotated[Path, typer.Argument(help="A video file, or a folder scanned recursively for videos.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    config: Annotated[str, typer.Option("--config", "-c", help=_CONFIG_HELP)] = "default",
    fps: Annotated[float | None, typer.Option("--fps", min=0.001, help="Sample this many frames per second.")] = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", min=1, help="Stop after this many frames.")] = None,
    runner: Annotated[str, typer.Option("--runner", help=_RUNNER_HELP)] = "thread",
    devices: Annotated[str | None, typer.Option("--devices", help=_DEVICES_HELP)] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Workers (default: one per device).")] = None,
    dask_address: Annotated[str | None, typer.Option("--dask-address", help="Running Dask scheduler.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Frames per frame task.")] = 8,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rebuild an existing store.")] = False,
    settle_seconds: Annotated[float, typer.Option("--settle", min=0, help="Folder mode: settle time (s).")] = 0.0,
) -> None:
    """Process one video (or every new/changed video of a folder) into run stores with previews."""
    cfg = _load_cfg(config, fps, max_frames)
    runner_cfg = _runner_cfg(runner, devices, workers, dask_address)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows import pipeline
    from flows.video import VideoError

    console = Console(stderr=True)
    bars: dict[str, int] = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:

        def on_event(event: str, data: dict) -> None:
            key = data["video"]
            if key not in bars:
                bars[key] = progress.add_task(Path(key).name, total=None)
            if event == "video":
                progress.update(bars[key], description=f"{Path(key).name} [dim]{data['stage']}[/]")
            elif event == "frames":
                progress.update(bars[key], total=data["total"], completed=data["finished"])

        pipeline.add_progress_listener(on_event)
        try:
            if source.is_dir():
                result = pipeline.process_directory(
                    source, out, cfg, runner_cfg, batch_size, settle_seconds=settle_seconds
                )
            else:
                result = pipeline.process_video(source, out, cfg, runner_cfg, batch_size, overwrite=overwrite)
        except (VideoError, pipeline.RunStoreMismatchError, pipeline.PathEscapeError, pipeline.RunStoreBusyError) as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(1) from e
        finally:
            pipeline.remove_progress_listener(on_event)
    if source.is_dir():
        typer.echo(result.message)
        for r in result.processed:
            typer.echo(f"  {r.video}: {r.message} -> {r.store}")
        for p, msg in result.failed.items():
            typer.echo(f"  {p}: FAILED {msg}")
        failed = bool(result.failed) or any(r.n_failed for r in result.processed)
    else:
        typer.echo(f"{result.video}: {result.message}")
        typer.echo(f"  store: {result.store}")
        typer.echo(f"  contact sheet: {result.contact_sheet or '(none)'}")
        failed = result.n_failed > 0
    raise typer.Exit(1 if failed else 0)


@app.command()
def serve(
    video_dir: Annotated[Path, typer.Argument(help="Folder to scan for new or changed videos.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (holds the ledger).")],
    cron: Annotated[str, typer.Option("--cron", help="Cron schedule of the scans (UTC).")] = "*/15 * * * *",
    config: Annotated[str, typer.Option("--config", "-c", help=_CONFIG_HELP)] = "default",
    runner: Annotated[str, typer.Option("--runner", help=_RUNNER_HELP)] = "thread",
    devices: Annotated[str | None, typer.Option("--devices", help=_DEVICES_HELP)] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Number of workers.")] = None,
    settle_seconds: Annotated[float, typer.Option("--settle", min=0, help="Seconds a file must stop changing.")] = 30.0,
    name: Annotated[str, typer.Option("--name", help="Deployment name.")] = "watch-videos",
) -> None:
    """Serve process_directory on a cron schedule from this process (needs a Prefect server; Ctrl-C stops)."""
    cfg = _load_cfg(config, None, None)
    runner_cfg = _runner_cfg(runner, devices, workers, None)
    from flows.pipeline import process_directory

    process_directory.serve(
        name=name,
        cron=cron,
        parameters={
            "video_dir": str(video_dir.absolute()),
            "out_dir": str(out.absolute()),
            "config": cfg.model_dump(mode="json"),
            "runner": runner_cfg.model_dump(mode="json"),
            "settle_seconds": settle_seconds,
        },
        global_limit=1,
        tags=["avatarize"],
    )


@app.command()
def frames(
    video: Annotated[Path, typer.Argument(help="The video.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; files go to <out>/<video-stem>/.")],
    config: Annotated[str, typer.Option("--config", "-c", help=_CONFIG_HELP)] = "default",
    fps: Annotated[float | None, typer.Option("--fps", min=0.001, help="Sample this many frames per second.")] = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", min=1, help="Stop after this many frames.")] = None,
) -> None:
    """Crops, masks, keypoints, body fit and a contact sheet of a short clip as plain files (no store, no server)."""
    cfg = _load_cfg(config, fps, max_frames)
    from flows.extract_files import extract_to_files
    from flows.video import VideoError

    try:
        folder = extract_to_files(video, out, cfg)
    except VideoError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(str(folder))


_REPO = Path(__file__).resolve().parent.parent


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("out/demo"),
    config: Annotated[str, typer.Option("--config", "-c", help=_CONFIG_HELP)] = "fast",
) -> None:
    """Run the pipeline on the embedded example clip (assets/demo.mp4) and print where the results are."""
    import time

    cfg = _load_cfg(config, None, None)
    video = _REPO / "assets" / "demo.mp4"
    if not video.is_file():
        typer.echo(f"error: {video} is missing; regenerate it with `python scripts/make_demo_clip.py`", err=True)
        raise typer.Exit(1)
    from flows import pipeline

    typer.echo(
        f"avatarize demo: {video.name} (a synthetic clothed person turning around), preset '{config}': "
        f"frames sampled at {cfg.frames.fps} fps, at most {cfg.frames.max_frames} frames, "
        f"{cfg.person.crop_size}px crops."
    )
    t0 = time.perf_counter()
    result = pipeline.process_video(video, out, cfg, replace_mismatched=True)
    typer.echo(f"{result.message} in {time.perf_counter() - t0:.0f} s")
    typer.echo(f"  store (open with flows.store.open_run or xarray.open_zarr): {result.store}")
    typer.echo(f"  contact sheet (crops with the fitted body overlaid): {result.contact_sheet}")
    typer.echo(f"  per-frame clothed meshes: in the store's /meshes group ({result.n_done} frames done)")
    typer.echo(f"  HTML report (opens from disk): {Path(result.store).with_suffix('.report') / 'index.html'}")
    if result.avatar_dir:
        typer.echo(f"  avatar: {result.avatar_dir}")
        typer.echo(f"  avatar re-posed with the bundled wave motion: {result.avatar_video}")
        typer.echo(f"  rigged glTF (open in Blender: File > Import > glTF 2.0): {result.avatar_gltf}")
    elif result.avatar_error:
        typer.echo(f"  avatar: failed ({result.avatar_error})")
    raise typer.Exit(1 if result.n_failed or result.avatar_error else 0)


# ------------------------------------------------------------------------------------------------- training commands
train_app = typer.Typer(no_args_is_help=True, help="Train the learned parts on synthetic data (scripts/make_synth.py).")
app.add_typer(train_app, name="train")


@train_app.command("implicit")
def train_implicit_cmd(
    data: Annotated[Path, typer.Option("--data", help="Folder of training shards (scripts/make_synth.py --out).")],
    heldout: Annotated[
        Path | None, typer.Option("--heldout", help="Folder of held-out shards (make_synth.py --heldout).")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", min=0, help="Optimiser steps.")] = 1500,
    out: Annotated[Path, typer.Option("--out", "-o", help="Final weights (safetensors).")] = Path(
        "weights/implicit_net.safetensors"
    ),
    checkpoints: Annotated[
        Path, typer.Option("--checkpoints", help="Checkpoint folder; an existing checkpoint is resumed.")
    ] = Path("out/checkpoints/implicit"),
    hidden: Annotated[str, typer.Option("--hidden", help="Hidden widths, e.g. 512,256,128 (ICON).")] = "256,128,64",
    refined: Annotated[
        Path | None,
        typer.Option("--refined", help="Refined fits + predicted normals of --data (scripts/refine_synth.py --out); "
                     "train on those fits instead of the generator's perturbed ones (others dropped)."),
    ] = None,
    heldout_refined: Annotated[
        Path | None, typer.Option("--heldout-refined", help="Likewise for --heldout.")
    ] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Persons per step.")] = 8,
    points: Annotated[int, typer.Option("--points", min=1, help="Points per person per step.")] = 2048,
    cached_points: Annotated[int, typer.Option("--cached-points", min=1, help="Cached points per person.")] = 8000,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate.")] = 1e-3,
    eval_every: Annotated[int, typer.Option("--eval-every", min=1, help="Steps between held-out evals.")] = 500,
    reconstructions: Annotated[
        int, typer.Option("--reconstructions", min=0, help="Held-out persons reconstructed at the end.")
    ] = 4,
    resolution: Annotated[int, typer.Option("--resolution", min=16, help="Marching-cubes resolution.")] = 256,
    max_samples: Annotated[int | None, typer.Option("--max-samples", min=1, help="Use the first N persons.")] = None,
    device: Annotated[str, typer.Option("--device", help="Torch device, e.g. cpu or cuda:0.")] = "cpu",
) -> None:
    """Train the implicit occupancy net (ICON's implicit stage) on synthetic occupancy samples."""
    import json
    import os

    os.environ.setdefault("WARP_CACHE_PATH", str(Path(__file__).resolve().parents[1] / ".cache" / "warp"))
    from pydantic import ValidationError

    from body.model import BodyModel
    from icon.implicit import ImplicitConfig
    from icon.synth.shards import SynthDataset
    from icon.train_implicit import ImplicitTrainConfig, load_refined_fits, train_implicit, with_refined_fits

    try:
        net_config = ImplicitConfig(hidden=tuple(int(w) for w in hidden.split(",") if w.strip()))
        config = ImplicitTrainConfig(
            steps=steps, batch_samples=batch, points_per_sample=points, cached_points=cached_points, lr=lr,
            eval_every=eval_every, reconstructions=reconstructions, eval_resolution=resolution,
        )  # fmt: skip
    except (ValidationError, ValueError) as e:
        raise typer.BadParameter(str(e)) from e
    train_set = SynthDataset(_shard_paths(data, "--data"), with_mesh=False)
    train_items = [train_set[i] for i in range(min(len(train_set), max_samples or len(train_set)))]
    held_items = None
    if heldout is not None:
        held_set = SynthDataset(_shard_paths(heldout, "--heldout"), with_mesh=True)
        held_items = [held_set[i] for i in range(len(held_set))]
    try:
        if refined is not None:
            train_items = with_refined_fits(train_items, load_refined_fits(refined))
            typer.echo(f"training on the refined fits of {len(train_items)} persons from {refined}")
        if heldout_refined is not None and held_items is not None:
            held_items = with_refined_fits(held_items, load_refined_fits(heldout_refined))
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    if not train_items:
        raise typer.BadParameter(f"no training person has a refined fit in {refined}", param_hint="--refined")
    result = train_implicit(
        train_items, held_items, BodyModel(), config, net_config, out_path=out, checkpoint_dir=checkpoints,
        device=device, on_log=typer.echo,
    )  # fmt: skip
    summary = {
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "cache_seconds": round(result.cache_seconds, 1),
    }
    if result.occupancy:
        e = result.occupancy[-1]
        summary.update(heldout_accuracy=e.accuracy, heldout_iou=e.iou, body_accuracy=e.body_accuracy,
                       body_iou=e.body_iou)  # fmt: skip
    if result.reconstruction is not None:
        r = result.reconstruction
        summary.update(
            chamfer_cm=r.chamfer, p2s_cm=r.p2s, normal_consistency=r.normal_consistency, body_chamfer_cm=r.body_chamfer,
            body_p2s_cm=r.body_p2s, body_normal_consistency=r.body_normal_consistency, seeds=r.seeds,
            chamfer_reduction=r.chamfer_reduction, seconds_per_reconstruction=r.seconds_per_reconstruction,
        )  # fmt: skip
    typer.echo(json.dumps(summary, indent=1))

def _shard_paths(folder: Path, option: str) -> list[Path]:
    """The *.zarr shards of `folder`; a usage error naming `option` when there are none."""
    from icon.synth.shards import shard_paths

    shards = shard_paths(folder)
    if not shards:
        raise typer.BadParameter(
            f"no *.zarr shards in {folder}; make them with scripts/make_synth.py", param_hint=option
        )
    return shards


def _normal_items(folder: Path, preload: bool, option: str):
    """Shards of `folder` as a dataset; preloaded to memory (normals as float16) unless `preload` is False."""
    import numpy as np

    from icon.synth.shards import SynthDataset
    from icon.train_normal import SAMPLE_FIELDS

    dataset = SynthDataset(_shard_paths(folder, option), with_mesh=False)
    if not preload:
        return dataset
    half = {name: np.float16 for name in SAMPLE_FIELDS if "normal" in name}
    return [
        {name: np.asarray(getattr(s, name), dtype=half.get(name)) for name in SAMPLE_FIELDS}
        for s in (dataset[i] for i in range(len(dataset)))
    ]


@train_app.command("normal-net")
def train_normal_net_cmd(
    data: Annotated[Path, typer.Option("--data", help="Folder of training shards (scripts/make_synth.py --out).")],
    heldout: Annotated[
        Path | None, typer.Option("--heldout", help="Folder of held-out shards (make_synth.py --heldout).")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", min=0, help="Optimiser steps.")] = 3000,
    size: Annotated[int, typer.Option("--size", min=16, help="Working image size of the net (px).")] = 128,
    out: Annotated[Path, typer.Option("--out", "-o", help="Final weights (safetensors).")] = Path(
        "weights/normal_net.safetensors"
    ),
    checkpoints: Annotated[
        Path, typer.Option("--checkpoints", help="Checkpoint folder (weights, optimizer, state.json).")
    ] = Path("out/checkpoints/normal_net"),
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the checkpoint if any.")] = True,
    device: Annotated[str, typer.Option("--device", help="Torch device, e.g. cpu or cuda:0.")] = "cpu",
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per step.")] = 8,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Peak Adam learning rate (cosine decay).")] = 2e-3,
    base_channels: Annotated[int, typer.Option("--base-channels", min=4, help="Full-resolution channels.")] = 16,
    max_channels: Annotated[int, typer.Option("--max-channels", min=4, help="Channel cap per level.")] = 64,
    depth: Annotated[int, typer.Option("--depth", min=1, help="Down-sampling levels.")] = 4,
    eval_every: Annotated[int, typer.Option("--eval-every", min=0, help="Steps between held-out evals.")] = 500,
    preload: Annotated[bool, typer.Option("--preload/--stream", help="Hold the shards in memory.")] = True,
) -> None:
    """Train the body-guided normal net (front + back) on synthetic clothed humans."""
    import json

    from pydantic import ValidationError

    from icon.normal_net import NormalNetConfig
    from icon.train_normal import train_normal_net

    try:
        config = NormalNetConfig(base_channels=base_channels, max_channels=max_channels, depth=depth, image_size=size)
    except ValidationError as e:
        raise typer.BadParameter(str(e)) from e
    train_set = _normal_items(data, preload, "--data")
    held_set = _normal_items(heldout, preload, "--heldout") if heldout is not None else None

    def on_progress(p) -> None:
        line = f"step {p.step}/{p.steps}  loss {p.loss:.4f}  lr {p.lr:.2e}  {p.seconds:.0f} s"
        if p.evaluation is not None:
            e = p.evaluation
            line += (
                f"  held-out deg body {e.body_front_deg:.2f}/{e.body_back_deg:.2f} -> "
                f"net {e.pred_front_deg:.2f}/{e.pred_back_deg:.2f} (front/back)"
            )
        typer.echo(line)

    result = train_normal_net(
        train_set, held_set, config, steps=steps, batch_size=batch, lr=lr, out_path=out, checkpoint_dir=checkpoints,
        device=device, resume=resume, progress=on_progress, eval_every=eval_every, log_every=50,
    )  # fmt: skip
    summary: dict = {"steps": result.step, "seconds": round(result.seconds, 1), "weights": str(out)}
    if result.evaluations:
        e = result.evaluations[-1]
        summary.update(
            heldout_frames=e.frames, body_front_deg=e.body_front_deg, body_back_deg=e.body_back_deg,
            pred_front_deg=e.pred_front_deg, pred_back_deg=e.pred_back_deg,
            improvement_front=e.improvement_front, improvement_back=e.improvement_back,
        )  # fmt: skip
    typer.echo(json.dumps(summary, indent=1))


# --------------------------------------------------------------------------------------------------- avatar commands
def _avatar_cfg(config: str):
    """AvatarConfig of a preset (fast, default, quality) or a YAML file: its ``avatar:`` section when the pipeline
    config has one, else ``AvatarConfig.fast()`` for "fast" and ``AvatarConfig()`` otherwise."""
    from avatar.config import AvatarConfig
    from flows.config import ConfigError, load_config

    try:
        pipeline_cfg = load_config(config)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from e
    section = getattr(pipeline_cfg, "avatar", None)
    if isinstance(section, AvatarConfig):
        return section
    return AvatarConfig.fast() if config == "fast" else AvatarConfig()


@app.command()
def avatar(
    store: Annotated[Path, typer.Argument(help="A run store (<out>/<stem>.zarr) with reconstructed frames.")],
    config: Annotated[str, typer.Option("--config", "-c", help=_CONFIG_HELP)] = "default",
    motion: Annotated[
        Path | None, typer.Option("--motion", help="Preview motion (default: assets/motions/wave.npz).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Avatar folder (default <stem>.avatar).")] = None,
    preview: Annotated[bool, typer.Option("--preview/--no-preview", help="Re-pose the avatar as a preview.")] = True,
    device: Annotated[str, typer.Option("--device", help="Torch device: auto, cpu or cuda:N.")] = "auto",
) -> None:
    """Train an animatable avatar from a run store (resumes from its checkpoints) and re-pose it as a preview.

    Holds the store's run lock while it writes the store's /avatar group: a store a pipeline run is writing is refused
    (run this again when that run has finished).
    """
    cfg = _avatar_cfg(config)
    from flows.avatar_flow import train_avatar_flow
    from flows.store import RunStoreError, lock_run

    try:
        with lock_run(store, timeout_s=0):
            result = train_avatar_flow(store, cfg, motion_path=motion, preview=preview, out_dir=out, device=device)
    except (RunStoreError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(f"avatar: {result.avatar_dir} ({result.seconds['total']:.0f} s)")
    typer.echo(f"  training curves: {result.curves_png or '(none)'}")
    if result.preview is not None:
        typer.echo(f"  preview video: {result.preview.video_path}")
        typer.echo(f"  preview glTF: {result.preview.gltf_path}")


@app.command()
def repose(
    avatar_dir: Annotated[Path, typer.Argument(help="Avatar folder (written by `avatarize avatar`).")],
    motion: Annotated[Path, typer.Argument(help="Motion file: AMASS or plain SMPL .npz.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    fps: Annotated[float | None, typer.Option("--fps", min=0.001, help="Resample the motion to this rate.")] = None,
    quality: Annotated[str, typer.Option("--quality", help="fast (skinned mesh) or full (per-pose surface).")] = "fast",
    max_frames: Annotated[int | None, typer.Option("--max-frames", min=1, help="Pose the first N frames.")] = None,
    device: Annotated[str, typer.Option("--device", help="Torch device: auto, cpu or cuda:N.")] = "auto",
    fbx: Annotated[bool, typer.Option("--fbx", help="Also write avatar.fbx through Blender (needs bpy).")] = False,
) -> None:
    """Pose an avatar with a motion: per-frame PLY meshes, an MP4 render and a rigged, animated avatar.glb."""
    if quality not in ("fast", "full"):
        raise typer.BadParameter(f"expected fast or full, got {quality!r}", param_hint="--quality")
    if fbx:
        from flows.blender import bpy_available

        if not bpy_available():
            typer.echo("error: --fbx needs Blender's Python module: `make blender` (bpy==5.0.1, Python 3.11)", err=True)
            raise typer.Exit(1)
    from flows.avatar_flow import repose as repose_flow

    try:
        result = repose_flow(avatar_dir, motion, out, fps=fps, quality=quality, max_frames=max_frames, device=device)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(f"{result.n_frames} frames at {result.fps:g} fps ({result.quality}) in {result.seconds['total']:.1f} s")
    typer.echo(f"  meshes: {result.out_dir / 'meshes'} ({len(result.mesh_paths)} PLY)")
    typer.echo(f"  video: {result.video_path}")
    typer.echo(f"  glTF: {result.gltf_path}")
    if fbx:
        from flows.blender import glb_to_fbx

        typer.echo(f"  FBX (via Blender): {glb_to_fbx(result.gltf_path, result.gltf_path.with_suffix('.fbx'))}")


@app.command()
def view(
    path: Annotated[Path, typer.Argument(help="A run store (<stem>.zarr) or the output folder holding it.")],
    video: Annotated[str | None, typer.Option("--video", help="Stem of the store when the folder has several.")] = None,
    motion: Annotated[Path | None, typer.Option("--motion", help="Motion the avatar plays (default: wave).")] = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port on 127.0.0.1.")] = 8080,
) -> None:
    """Interactive viewer of a run in the browser (read-only; works while a run is still writing the store)."""
    import time

    from flows.viewer import find_store, start_viewer

    try:
        viewer = start_viewer(find_store(path, video), motion, host="127.0.0.1", port=port)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(f"avatarize viewer: {viewer.url} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()


@app.command("reconstruct")
def reconstruct_cmd(
    source: Annotated[Path, typer.Argument(help="An image, or a folder of images (each reconstructed on its own).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    config: Annotated[str, typer.Option("--config", "-c", help=_CONFIG_HELP)] = "default",
    mask: Annotated[Path | None, typer.Option("--mask", help="Person mask image (single image only).")] = None,
) -> None:
    """ICON on images: *_recon.obj, *_body.obj, *_fit.npz and an overlay PNG per image."""
    cfg = _load_cfg(config, None, None)
    from flows.reconstruct_files import reconstruct_images

    try:
        results = reconstruct_images(source, out, cfg, mask=mask)
    except (FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    for r in results:
        if r.skipped:
            typer.echo(f"{r.image}: skipped ({r.skipped})")
        else:
            typer.echo(f"{r.image}: {r.recon}, {r.body}, {r.fit}, {r.overlay}")
    raise typer.Exit(0 if any(not r.skipped for r in results) else 1)


if __name__ == "__main__":
    app()
