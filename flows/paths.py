"""Path confinement for flow parameters: every input is read from inside the input root and every output is written
inside the output root, after resolving ``..`` and symlinks (so neither a ``../..`` parameter nor a symlink planted in
a scanned or output folder can lead a run outside them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PathEscapeError", "Roots", "confine", "roots_for"]


class PathEscapeError(ValueError):
    """A path resolves (after ``..`` and symlinks) outside the root it must stay in."""


def _resolved(path: str | Path) -> Path:
    """Absolute path with every existing symlink and ``..`` resolved (a missing tail is kept as given)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def confine(path: str | Path, root: str | Path, what: str = "path") -> Path:
    """Resolve ``path`` and check that it lies inside ``root`` (or is ``root``).

    Relative paths are taken relative to the current directory, like everywhere else; symlinks and ``..`` are
    resolved in both arguments before the comparison.

    Args:
        path: the path to check.
        root: the folder it must stay in.
        what: what the path is, for the error message (e.g. "video", "output folder").

    Returns:
        The resolved path.

    Raises:
        PathEscapeError: the resolved path is outside the resolved root.
    """
    resolved, base = _resolved(path), _resolved(root)
    if resolved != base and base not in resolved.parents:
        raise PathEscapeError(
            f"{what} {os.fspath(path)!r} resolves to {resolved}, outside the allowed root {base}; "
            "remove the '..' or symlink, or configure a wider root (input_root / output_root)"
        )
    return resolved


@dataclass(frozen=True)
class Roots:
    """The folders a run may read from (``input``) and write to (``output``), both resolved."""

    input: Path
    output: Path

    def input_path(self, path: str | Path, what: str = "input") -> Path:
        """:func:`confine` ``path`` to the input root."""
        return confine(path, self.input, what)

    def output_path(self, path: str | Path, what: str = "output") -> Path:
        """:func:`confine` ``path`` to the output root."""
        return confine(path, self.output, what)


def roots_for(
    input_default: str | Path, output_default: str | Path, input_root: str | Path | None, output_root: str | Path | None
) -> Roots:
    """Roots of a run: the configured ones, else the defaults (the folder the flow was given to read, its out_dir).

    Raises:
        PathEscapeError: a default lies outside a configured root (the flow parameter points elsewhere).
    """
    roots = Roots(_resolved(input_root or input_default), _resolved(output_root or output_default))
    roots.input_path(input_default, "input")
    roots.output_path(output_default, "out_dir")
    return roots
