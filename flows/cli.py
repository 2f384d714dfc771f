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

VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show third-party start-up output, engine logs and full tracebacks.")
]
LogLevelOption = Annotated[
    str | None, typer.Option("--log-level", help="Level of the project's log lines: DEBUG, INFO, WARNING or ERROR.")
]


def _console_command(fn):
    """Give a command ``-v/--verbose`` and ``--log-level``, set the console up before it runs (flows/console.py), and
    end it on an expected error (bad input, bad config, busy store) with one line and exit code 1."""
    import functools
    import inspect

    sig = inspect.signature(fn)
    extra = [inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=VerboseOption),
             inspect.Parameter("log_level", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=LogLevelOption)]

    @functools.wraps(fn)
    def wrapper(*args, verbose: bool = False, log_level: str | None = None, **kwargs):
        from flows.console import configure_console, expected_errors, fail, keep_native_log

        try:
            configure_console(verbose, log_level)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--log-level") from e
        try:
            return fn(*args, **kwargs)
        except expected_errors() as e:
            fail(str(e), e)
            raise typer.Exit(1) from e
        except Exception as e:
            if not type(e).__module__.startswith(("typer", "click")):  # not a usage error or a typer.Exit
                keep_native_log()
            raise

    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])
    wrapper.__annotations__ = {**fn.__annotations__, "verbose": VerboseOption, "log_level": LogLevelOption}
    return wrapper


def _prefect_session(out_dir: Path | None) -> None:
    """Before prefect's import: a private, analytics-free database for any temporary server; after: engine chatter
    filtered off the console."""
    import sys

    from flows.console import filter_prefect_logs, private_prefect_env

    if "prefect" not in sys.modules:  # prefect reads its settings once, on import (already done in-process by tests)
        os.environ.update(private_prefect_env(out_dir))
    import prefect  # noqa: F401

    filter_prefect_logs()


@app.command()
@_console_command
def version() -> None:
    """Print the avatarize version."""
    from importlib.metadata import version as _v

    typer.echo(_v("avatarize"))


# ------------------------------------------------------------------------------------------------- pipeline commands
def _load_cfg(config: str, sets: list[str] | None = None, fps: float | None = None, max_frames: int | None = None):
    """The pipeline config of a preset or YAML file, with ``--set`` overrides and the common frame options."""
    from flows.cli_options import OverrideError, parse_overrides
    from flows.config import ConfigError, load_config

    try:
        overrides = parse_overrides(sets)
    except OverrideError as e:
        raise typer.BadParameter(str(e), param_hint="--set") from e
    frames = {"fps": fps, "every_nth": None} if fps is not None else {}
    if max_frames is not None:
        frames["max_frames"] = max_frames
    if frames:
        overrides["frames"] = {**overrides.get("frames", {}), **frames}
    try:
        return load_config(config, overrides)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config/--set/--fps/--max-frames") from e


def _keys_help(model: str, what: str) -> type:
    """A command class whose help ends with the ``--set`` keys of ``model`` ("module:Class"), imported only when the
    help is shown (the config models import torch)."""
    from typer.core import TyperCommand

    class KeysHelpCommand(TyperCommand):
        def format_help(self, ctx, formatter) -> None:
            import importlib

            from flows.cli_options import keys_epilog

            module, name = model.split(":")
            self.epilog = keys_epilog(getattr(importlib.import_module(module), name), what)
            super().format_help(ctx, formatter)

    return KeysHelpCommand


_PIPELINE_KEYS = _keys_help("flows.config:PipelineConfig", "pipeline config; --config gives the base")
_SET_HELP = "Override a config field: --set key.path=value (repeatable; YAML values). The keys are listed below."
SetOption = Annotated[list[str] | None, typer.Option("--set", "-s", help=_SET_HELP, metavar="KEY=VALUE")]


def _runner_cfg(runner: str, devices: str | None, workers: int | None, dask_address: str | None):
    from pydantic import ValidationError

    from flows.runners import RunnerConfig

    try:
        return RunnerConfig(kind=runner, devices=devices or [], workers=workers, address=dask_address)
    except (ValidationError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--runner/--devices/--workers/--dask-address") from e


_CONFIG_HELP = "Preset (fast, default, quality) or a YAML file."
_RUNNER_HELP = "Task runner: thread (default), process (one worker per --devices entry) or dask."
_DEVICE_HELP = "Torch device: auto (CUDA when available), cpu or cuda:N."
_DEVICES_HELP = "Devices the frame tasks lease, e.g. cpu,cpu or cuda:0,cuda:1."


@app.command(cls=_PIPELINE_KEYS)
@_console_command
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
    sets: SetOption = None,
) -> None:
    """Process one video (or every new/changed video of a folder) into run stores with previews."""
    cfg = _load_cfg(config, sets, fps, max_frames)
    runner_cfg = _runner_cfg(runner, devices, workers, dask_address)
    if not source.is_dir():
        from flows.video import probe_video

        probe_video(source)  # a missing, empty or non-video file fails here, before any server starts
    _prefect_session(out)
    from flows import pipeline
    from flows.console import progress_bars

    with progress_bars():
        if source.is_dir():
            result = pipeline.process_directory(source, out, cfg, runner_cfg, batch_size, settle_seconds=settle_seconds)
        else:
            result = pipeline.process_video(source, out, cfg, runner_cfg, batch_size, overwrite=overwrite)
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


@app.command(cls=_PIPELINE_KEYS)
@_console_command
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
    sets: SetOption = None,
) -> None:
    """Serve process_directory on a cron schedule from this process (needs a Prefect server; Ctrl-C stops)."""
    cfg = _load_cfg(config, sets)
    runner_cfg = _runner_cfg(runner, devices, workers, None)
    _prefect_session(out)
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


@app.command(cls=_PIPELINE_KEYS)
@_console_command
def frames(
    video: Annotated[Path, typer.Argument(help="The video.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; files go to <out>/<video-stem>/.")],
    config: Annotated[str, typer.Option("--config", "-c", help=_CONFIG_HELP)] = "default",
    fps: Annotated[float | None, typer.Option("--fps", min=0.001, help="Sample this many frames per second.")] = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", min=1, help="Stop after this many frames.")] = None,
    sets: SetOption = None,
) -> None:
    """Crops, masks, keypoints, body fit and a contact sheet of a short clip as plain files (no store, no server)."""
    cfg = _load_cfg(config, sets, fps, max_frames)
    from flows.console import progress_bars
    from flows.extract_files import extract_to_files

    with progress_bars():
        folder = extract_to_files(video, out, cfg)
    typer.echo(str(folder))


@app.command(cls=_PIPELINE_KEYS)
@_console_command
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("out/demo"),
    config: Annotated[str, typer.Option("--config", "-c", help=_CONFIG_HELP)] = "fast",
    sets: SetOption = None,
) -> None:
    """Run the pipeline on the embedded example clip (flows/demo/demo.mp4) and print where the results are."""
    import time

    from flows.bundled import demo_clip_path

    cfg = _load_cfg(config, sets)
    video = demo_clip_path()
    if not video.is_file():
        typer.echo(f"error: {video} is missing; regenerate it with `python scripts/make_demo_clip.py`", err=True)
        raise typer.Exit(1)
    _prefect_session(out)
    from flows import pipeline
    from flows.console import progress_bars

    typer.echo(
        f"avatarize demo: {video.name} (a synthetic clothed person turning around), preset '{config}': "
        f"frames sampled at {cfg.frames.fps} fps, at most {cfg.frames.max_frames} frames, "
        f"{cfg.person.crop_size}px crops."
    )
    t0 = time.perf_counter()
    with progress_bars():
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


def _training_settings(model, sets: list[str] | None):
    from flows.cli_options import OverrideError, build_settings

    try:
        return build_settings(model, sets)
    except OverrideError as e:
        raise typer.BadParameter(str(e), param_hint="--set") from e


def _torch_device(device: str) -> str:
    from flows.runners import resolve_device

    if device != "auto" and not device.startswith(("cpu", "cuda", "mps")):
        raise typer.BadParameter(f"expected auto, cpu or cuda:N, got {device!r}", param_hint="--device")
    return resolve_device(device)


@train_app.command("implicit", cls=_keys_help("flows.cli_options:ImplicitTraining", "net architecture, training"))
@_console_command
def train_implicit_cmd(
    data: Annotated[Path, typer.Option("--data", help="Folder of training shards (scripts/make_synth.py --out).")],
    heldout: Annotated[
        Path | None, typer.Option("--heldout", help="Folder of held-out shards (make_synth.py --heldout).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Final weights (safetensors).")] = Path(
        "out/weights/implicit_net.safetensors"
    ),
    checkpoints: Annotated[
        Path, typer.Option("--checkpoints", help="Checkpoint folder; an existing checkpoint is resumed.")
    ] = Path("out/checkpoints/implicit"),
    refined: Annotated[
        Path | None,
        typer.Option("--refined", help="Refined fits + predicted normals of --data (scripts/refine_synth.py --out); "
                     "train on those fits instead of the generator's perturbed ones (others dropped)."),
    ] = None,
    heldout_refined: Annotated[
        Path | None, typer.Option("--heldout-refined", help="Likewise for --heldout.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help=_DEVICE_HELP)] = "auto",
    sets: SetOption = None,
) -> None:
    """Train the implicit occupancy net (ICON's implicit stage) on synthetic occupancy samples."""
    import json

    from flows.cli_options import ImplicitTraining

    settings = _training_settings(ImplicitTraining, sets)
    torch_device = _torch_device(device)
    from body.model import BodyModel
    from icon.synth.shards import SynthDataset
    from icon.train_implicit import load_refined_fits, train_implicit, with_refined_fits

    train_set = SynthDataset(_shard_paths(data, "--data"), with_mesh=False)
    train_items = [train_set[i] for i in range(min(len(train_set), settings.max_samples or len(train_set)))]
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
        train_items, held_items, BodyModel(), settings.train, settings.net, out_path=out, checkpoint_dir=checkpoints,
        device=torch_device, on_log=typer.echo,
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


@train_app.command("normal-net", cls=_keys_help("flows.cli_options:NormalNetTraining", "net architecture, training"))
@_console_command
def train_normal_net_cmd(
    data: Annotated[Path, typer.Option("--data", help="Folder of training shards (scripts/make_synth.py --out).")],
    heldout: Annotated[
        Path | None, typer.Option("--heldout", help="Folder of held-out shards (make_synth.py --heldout).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Final weights (safetensors).")] = Path(
        "out/weights/normal_net.safetensors"
    ),
    checkpoints: Annotated[
        Path, typer.Option("--checkpoints", help="Checkpoint folder (weights, optimizer, state.json).")
    ] = Path("out/checkpoints/normal_net"),
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the checkpoint if any.")] = True,
    device: Annotated[str, typer.Option("--device", help=_DEVICE_HELP)] = "auto",
    sets: SetOption = None,
) -> None:
    """Train the body-guided normal net (front + back) on synthetic clothed humans."""
    import json

    from flows.cli_options import NormalNetTraining

    settings = _training_settings(NormalNetTraining, sets)
    torch_device = _torch_device(device)
    from icon.train_normal import train_normal_net

    train_set = _normal_items(data, settings.preload, "--data")
    held_set = _normal_items(heldout, settings.preload, "--heldout") if heldout is not None else None

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
        train_set, held_set, settings.net, steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
        out_path=out, checkpoint_dir=checkpoints, device=torch_device, resume=resume, progress=on_progress,
        eval_every=settings.eval_every, log_every=settings.log_every, seed=settings.seed,
        time_budget_s=None if settings.chunk_minutes is None else 60.0 * settings.chunk_minutes,
    )  # fmt: skip
    if result.step < settings.steps:
        typer.echo(f"chunk done at step {result.step}/{settings.steps} (checkpoint in {checkpoints}): run the same "
                   "command again to continue")  # fmt: skip
        return
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
@app.command(cls=_PIPELINE_KEYS)
@_console_command
def avatar(
    store: Annotated[Path, typer.Argument(help="A run store (<out>/<stem>.zarr) with reconstructed frames.")],
    config: Annotated[str, typer.Option("--config", "-c", help=_CONFIG_HELP)] = "default",
    motion: Annotated[
        Path | None, typer.Option("--motion", help="Preview motion (default: the bundled wave).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Avatar folder (default <stem>.avatar).")] = None,
    preview: Annotated[bool, typer.Option("--preview/--no-preview", help="Re-pose the avatar as a preview.")] = True,
    device: Annotated[str, typer.Option("--device", help=_DEVICE_HELP)] = "auto",
    sets: SetOption = None,
) -> None:
    """Train an animatable avatar from a run store (resumes from its checkpoints) and re-pose it as a preview.

    Holds the store's run lock while it writes the store's /avatar group: a store a pipeline run is writing is refused
    (run this again when that run has finished).
    """
    cfg = _load_cfg(config, sets).avatar  # the preset's (or file's) avatar section plus `--set avatar.<key>=...`
    _prefect_session(out or store.parent)
    from flows.avatar_flow import train_avatar_flow
    from flows.console import fail, progress_bars
    from flows.store import lock_run

    try:
        with lock_run(store, timeout_s=0), progress_bars():
            result = train_avatar_flow(store, cfg, motion_path=motion, preview=preview, out_dir=out, device=device)
    except ValueError as e:  # the store's own errors and unusable training inputs
        fail(str(e), e)
        raise typer.Exit(1) from e
    typer.echo(f"avatar: {result.avatar_dir} ({result.seconds['total']:.0f} s)")
    typer.echo(f"  training curves: {result.curves_png or '(none)'}")
    if result.preview is not None:
        typer.echo(f"  preview video: {result.preview.video_path}")
        typer.echo(f"  preview glTF: {result.preview.gltf_path}")


@app.command()
@_console_command
def repose(
    avatar_dir: Annotated[Path, typer.Argument(help="Avatar folder (written by `avatarize avatar`).")],
    motion: Annotated[Path, typer.Argument(help="Motion file: AMASS or plain SMPL .npz.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    fps: Annotated[float | None, typer.Option("--fps", min=0.001, help="Resample the motion to this rate.")] = None,
    quality: Annotated[str, typer.Option("--quality", help="fast (skinned mesh) or full (per-pose surface).")] = "fast",
    max_frames: Annotated[int | None, typer.Option("--max-frames", min=1, help="Pose the first N frames.")] = None,
    device: Annotated[str, typer.Option("--device", help=_DEVICE_HELP)] = "auto",
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
    _prefect_session(out)
    from flows.avatar_flow import repose as repose_flow
    from flows.console import fail, progress_bars

    try:
        with progress_bars():
            result = repose_flow(avatar_dir, motion, out, fps=fps, quality=quality, max_frames=max_frames,
                                 device=device)  # fmt: skip
    except ValueError as e:  # unreadable motion or avatar folder
        fail(str(e), e)
        raise typer.Exit(1) from e
    typer.echo(f"{result.n_frames} frames at {result.fps:g} fps ({result.quality}) in {result.seconds['total']:.1f} s")
    typer.echo(f"  meshes: {result.out_dir / 'meshes'} ({len(result.mesh_paths)} PLY)")
    typer.echo(f"  video: {result.video_path}")
    typer.echo(f"  glTF: {result.gltf_path}")
    if fbx:
        from flows.blender import glb_to_fbx

        typer.echo(f"  FBX (via Blender): {glb_to_fbx(result.gltf_path, result.gltf_path.with_suffix('.fbx'))}")


@app.command()
@_console_command
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


@app.command("reconstruct", cls=_PIPELINE_KEYS)
@_console_command
def reconstruct_cmd(
    source: Annotated[Path, typer.Argument(help="An image, or a folder of images (each reconstructed on its own).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    config: Annotated[str, typer.Option("--config", "-c", help=_CONFIG_HELP)] = "default",
    mask: Annotated[Path | None, typer.Option("--mask", help="Person mask image (single image only).")] = None,
    sets: SetOption = None,
) -> None:
    """ICON on images: *_recon.obj, *_body.obj, *_fit.npz and an overlay PNG per image."""
    cfg = _load_cfg(config, sets)
    from flows.console import fail
    from flows.reconstruct_files import reconstruct_images

    try:
        results = reconstruct_images(source, out, cfg, mask=mask)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e), e)
        raise typer.Exit(1) from e
    for r in results:
        if r.skipped:
            typer.echo(f"{r.image}: skipped ({r.skipped})")
        else:
            typer.echo(f"{r.image}: {r.recon}, {r.body}, {r.fit}, {r.overlay}")
    raise typer.Exit(0 if any(not r.skipped for r in results) else 1)


if __name__ == "__main__":
    app()
