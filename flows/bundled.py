"""Files shipped inside the packages (presets, default weights, the demo clip, the bundled motion, the body model),
found through ``importlib.resources`` so a plain (non-editable) wheel install finds them too."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: Preset names; each is ``flows/presets/<name>.yaml`` (overrides of the pydantic defaults in flows/config.py).
PRESETS = ("fast", "default", "quality")
#: Default network weights shipped in ``icon/weights/`` (README there says how each was trained and measured).
WEIGHTS = ("normal_net", "implicit_net")


def _package_file(package: str, *parts: str) -> Path:
    return Path(str(resources.files(package).joinpath(*parts)))


def preset_path(name: str) -> Path:
    """YAML file of a preset (one of ``PRESETS``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return _package_file("flows", "presets", f"{name}.yaml")


def weights_path(name: str) -> Path:
    """Shipped safetensors file of a network (one of ``WEIGHTS``)."""
    if name not in WEIGHTS:
        raise ValueError(f"unknown network {name!r}; expected one of {', '.join(WEIGHTS)}")
    return _package_file("icon", "weights", f"{name}.safetensors")


def demo_clip_path() -> Path:
    """The embedded example clip (a synthetic clothed person turning around; scripts/make_demo_clip.py)."""
    return _package_file("flows", "demo", "demo.mp4")


def demo_truth_path() -> Path:
    """Ground truth of the demo clip (per-frame body parameters, camera, outfit seed) for benchmarks."""
    return _package_file("flows", "demo", "demo_truth.npz")


def default_motion_path() -> Path:
    """The bundled 3 s right-hand wave (body/data/motions/README.md), used for avatar previews."""
    return _package_file("body", "data", "motions", "wave.npz")


def body_model_path() -> Path:
    """The embedded Anny-derived body model (body/data/BODY_MODEL.md)."""
    from body.model import embedded_model_path  # the body package owns its file; imports torch, hence lazily

    return embedded_model_path()


def default_files() -> dict[str, Path]:
    """Every file the defaults need, by a short name (for install checks)."""
    files = {f"preset {p}": preset_path(p) for p in PRESETS}
    files.update({f"weights {w}": weights_path(w) for w in WEIGHTS})
    files.update(demo_clip=demo_clip_path(), demo_truth=demo_truth_path(), motion=default_motion_path(),
                 body_model=body_model_path())  # fmt: skip
    return files
