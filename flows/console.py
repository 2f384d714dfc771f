"""The command line's console: third-party start-up noise kept off the screen, logging routed and filtered, private
Prefect server settings, rich progress bars fed by the flows' progress events, and one clear line for expected errors.

Only the CLI calls :func:`configure_console`; libraries keep logging through ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

#: Loggers of third-party libraries shown only at --verbose (their warnings included): start-up chatter, not results.
NOISY_LOGGERS = ("absl", "mediapipe", "numba", "matplotlib", "PIL", "urllib3", "httpx", "httpcore", "docket", "uvicorn",
                 "prefect.server", "prefect._internal", "prefect.events", "distributed", "asyncio")  # fmt: skip


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors a user can act on (bad input file, bad config, a busy or foreign store, a path outside the roots):
    a command ends with their one-line message and exit code 1, no traceback."""
    from flows.cli_options import OverrideError
    from flows.config import ConfigError
    from flows.ledger import LedgerError
    from flows.paths import PathEscapeError
    from flows.results import RunStoreMismatchError
    from flows.store import RunStoreError
    from flows.video import VideoError

    return (VideoError, ConfigError, OverrideError, RunStoreError, RunStoreMismatchError, PathEscapeError, LedgerError)


def private_prefect_env(out_dir: Path | None) -> dict[str, str]:
    """Environment for a Prefect server this process may start (the temporary one of ``avatarize run``): analytics
    off, and its own SQLite database under ``<out_dir>/.prefect/`` (else under PREFECT_HOME) so concurrent runs of
    other folders never share (and lock) one database. Settings the user already set are kept; a server named by
    PREFECT_API_URL is used as it is."""
    env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    has_db = any(k in os.environ for k in ("PREFECT_SERVER_DATABASE_CONNECTION_URL",
                                           "PREFECT_API_DATABASE_CONNECTION_URL"))  # fmt: skip
    if out_dir is not None and not has_db:
        db = Path(out_dir).absolute() / ".prefect" / "prefect.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{db}"
    return {k: v for k, v in env.items() if k not in os.environ}


class _ProjectOnly(logging.Filter):
    """Drops the Prefect engine's own chatter below WARNING ("Finished in state Completed()", "Beginning flow run")
    and its tracebacks of expected errors (the command prints their one line); the flows' own lines pass."""

    def __init__(self, expected: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.expected = expected
        self.names = tuple(e.__name__ for e in expected)

    def filter(self, record: logging.LogRecord) -> bool:
        from_engine = f"{os.sep}prefect{os.sep}" in record.pathname
        if not from_engine:
            return True
        if record.levelno < logging.WARNING:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and isinstance(exc, self.expected):
            return False
        return not any(name in record.getMessage() for name in self.names)


class _LineFormatter(logging.Formatter):
    """Project lines as plain sentences ("demo.mp4: 15 frames extracted"); warnings and errors prefixed with their
    level, DEBUG lines and --verbose third-party lines with the logger's name."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno == logging.INFO and record.name.split(".")[0] in ("flows", "icon", "avatar", "body",
                                                                             "geometry", "prefect"):  # fmt: skip
            return text
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return f"{record.levelname.lower()} {record.name}: {text}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (the terminal copy made by the native redirect, or a test
    runner's capture), never to a stream closed since."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class ConsoleState:
    """What :func:`configure_console` set up: the verbosity and where native (C/C++) stderr lines went."""

    def __init__(self, verbose: bool, level: int, native_log: Path | None) -> None:
        self.verbose = verbose
        self.level = level
        self.native_log = native_log


_state: ConsoleState | None = None
_native_log: Path | None = None


def _redirect_native_stderr() -> Path:
    """Point file descriptor 2 at a temp file (MediaPipe/TF-Lite/absl and other C++ code write there directly) and
    give Python's ``sys.stderr`` a copy of the terminal, so the project's lines and progress bars stay on screen."""
    fd, name = tempfile.mkstemp(prefix="avatarize-native-", suffix=".log")
    terminal = os.dup(2)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr.flush()
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    return Path(name)


def _stderr_is_fd2() -> bool:
    """True when Python's stderr is the process's own fd 2 (the real command line, not a test runner's capture)."""
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def _forget_native_log(path: Path) -> None:
    """Delete the native-output file at exit (kept when :func:`fail` pointed the user at it)."""
    path.unlink(missing_ok=True)


def configure_console(verbose: bool = False, log_level: str | None = None) -> ConsoleState:
    """Set up logging and third-party output for one command (call before prefect/torch/warp are imported).

    Args:
        verbose: show everything: third-party start-up lines, Warp's banner and CUDA note, Prefect's engine lines and
            tracebacks of every error.
        log_level: level of the project's own loggers (DEBUG/INFO/WARNING/ERROR); default INFO.
    """
    global _state, _native_log
    level = logging.getLevelName((log_level or "INFO").upper())
    if not isinstance(level, int):
        raise ValueError(f"--log-level {log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", logging.getLevelName(level))
    if not verbose:
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if _native_log is None and _stderr_is_fd2():  # once per process, and never under a test runner's capture
            _native_log = _redirect_native_stderr()
            atexit.register(_forget_native_log, _native_log)
        # Warnings torch and friends raise about their own internals (not about the user's input).
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    _quiet_warp(verbose)
    # Third-party loggers: their warnings and errors by default, everything from INFO at --verbose.
    root = logging.getLogger()
    if not any(getattr(h, "_avatarize", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_LineFormatter("%(message)s"))
        handler._avatarize = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in ("flows", "icon", "avatar", "body", "geometry"):
        logging.getLogger(name).setLevel(level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.ERROR)
    _state = ConsoleState(verbose, level, _native_log)
    return _state


def _quiet_warp(verbose: bool) -> None:
    """Warp prints its banner and one line per kernel module at its INFO level (set before ``wp.init``); its
    CUDA-driver note goes to the native stderr (shown at --verbose)."""
    try:
        import warp as wp
    except ImportError:  # pragma: no cover - warp is a dependency
        return
    wp.config.quiet = not verbose  # Warp < 1.10
    if hasattr(wp, "LOG_WARNING"):
        wp.config.log_level = wp.LOG_INFO if verbose else wp.LOG_WARNING


def filter_prefect_logs() -> None:
    """Attach the engine-chatter filter to Prefect's console handlers (after prefect configured its logging)."""
    state = _state
    if state is None or state.verbose:
        return
    import prefect.logging.configuration  # noqa: F401  - configures Prefect's handlers on import

    flt = _ProjectOnly(expected_errors())
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            handler.addFilter(flt)
        logger.addFilter(flt)
    logging.getLogger("prefect").setLevel(logging.WARNING)  # "Starting temporary server ..." and similar


def fail(message: str, exc: BaseException | None = None) -> None:
    """Print one clear error line (plus the traceback at --verbose) to stderr."""
    from rich.console import Console

    console = Console(stderr=True, file=sys.stderr)
    console.print(f"[red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    if exc is not None and _state is not None and _state.verbose:
        import traceback

        console.print("".join(traceback.format_exception(exc)), markup=False, highlight=False)


def keep_native_log() -> None:
    """After an unexpected error: keep the native (C/C++) stderr file and say where it is."""
    path = _native_log
    if path is not None and path.exists() and path.stat().st_size:
        atexit.unregister(_forget_native_log)
        print(f"native library messages of this run: {path}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------- progress bars
@contextmanager
def progress_bars() -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """Rich progress bars driven by the flows' progress events (flows/resources.py ``emit_progress``):

    - ``("video", {video, stage})``: the video's bar names its stage;
    - ``("frames", {video, finished, total})``: frames reconstructed of the video;
    - ``("steps", {label, completed, total})``: one bar per long stage (detection, fit stages, avatar training stages,
      re-posing) with steps/s and ETA; ``total`` None while unknown.

    Only on a terminal: in a non-interactive log the flows' own log lines (one per finished stage) stand instead.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from flows.resources import add_progress_listener, remove_progress_listener

    console = Console(stderr=True, file=sys.stderr)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
    bars: dict[str, int] = {}
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:

        def bar(key: str, description: str) -> int:
            if key not in bars:
                bars[key] = progress.add_task(description, total=None, rate="")
            return bars[key]

        def on_event(event: str, data: dict[str, Any]) -> None:
            if event == "video":
                name = Path(data["video"]).name
                progress.update(bar(data["video"], name), description=f"{name} [dim]{data['stage']}[/]")
            elif event == "frames":
                progress.update(bar(data["video"], Path(data["video"]).name), total=data["total"],
                                completed=data["finished"])  # fmt: skip
            elif event == "steps":
                task = bar(data["label"], data["label"])
                progress.update(task, total=data["total"], completed=data["completed"])
                speed = progress.tasks[task].speed
                if speed:
                    progress.update(task, rate=f"{speed:.1f}/s")

        add_progress_listener(on_event)
        try:
            yield on_event
        finally:
            remove_progress_listener(on_event)
