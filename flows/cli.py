"""Command-line interface (`avatarize ...`)."""

from pathlib import Path
from typing import Annotated

import typer

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
        except (VideoError, pipeline.RunStoreMismatchError) as e:
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
    from flows.pipeline import extract_to_files
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
    raise typer.Exit(1 if result.n_failed else 0)


if __name__ == "__main__":
    app()
