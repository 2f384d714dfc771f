"""Issue #9, bad configurations: every invalid key or value is a ConfigError naming the key, and the input-size
bounds hold for every preset and hand-written YAML file."""

from __future__ import annotations

import pytest

from flows.config import DEFAULT_MAX_FRAMES, DEFAULT_MAX_SIDE, ConfigError, load_config
from tests.reliability import _inputs_media as media


@pytest.mark.parametrize(
    "case, override, key",
    [
        ("unknown key", {"frames": {"max_frame": 10}}, "frames.max_frame"),
        ("unknown section", {"framez": {}}, "framez"),
        ("wrong type (str for int)", {"person": {"crop_size": "big"}}, "person.crop_size"),
        ("wrong type (list for float)", {"frames": {"fps": [10]}}, "frames.fps"),
        ("wrong type (mapping for a section)", {"fit": 3}, "fit"),
        ("out of range: max_frames 0", {"frames": {"max_frames": 0}}, "frames.max_frames"),
        ("out of range: max_frames 10^9", {"frames": {"max_frames": 10**9}}, "frames.max_frames"),
        ("out of range: fps 0", {"frames": {"fps": 0}}, "frames.fps"),
        ("out of range: fps NaN", {"frames": {"fps": float("nan")}}, "frames.fps"),
        ("out of range: fps inf", {"frames": {"fps": float("inf")}}, "frames.fps"),
        ("out of range: max_side 100000", {"frames": {"max_side": 100_000}}, "frames.max_side"),
        ("bound switched off: max_side null", {"frames": {"max_side": None}}, "frames.max_side"),
        ("out of range: crop_size 16", {"person": {"crop_size": 16}}, "person.crop_size"),
        ("out of range: crop_margin 5", {"person": {"crop_margin": 5.0}}, "person.crop_margin"),
        ("out of range: marching-cubes resolution", {"reconstruct": {"resolution": 4096}}, "reconstruct.resolution"),
        ("out of range: negative iterations", {"fit": {"pose_iters": -1}}, "fit.pose_iters"),
        ("inconsistent: fps and every_nth", {"frames": {"fps": 5, "every_nth": 2}}, "frames"),
        ("inconsistent: end_s before start_s", {"frames": {"start_s": 5, "end_s": 1}}, "frames"),
        ("bad device name", {"device": "gpu0"}, "device"),
    ],
)
def test_invalid_override_names_the_key(case, override, key, reliability_row):
    with pytest.raises(ConfigError) as err:
        load_config("default", override)
    message = str(err.value)
    lines = message.splitlines()
    assert any(line.strip().startswith(f"{key}:") for line in lines[1:]), message
    assert "overrides" in lines[0]  # says the override, not the preset file, was wrong
    reliability_row(f"config: {case}", f"ConfigError naming {key!r}", " / ".join(line.strip() for line in lines[1:]))


def test_bad_yaml_files_name_the_problem(tmp_path, reliability_row):
    seen = []
    cases = {
        "typo.yaml": ("frames:\n  fsp: 5\n", "frames.fsp"),
        "type.yaml": ("person:\n  crop_size: 1e3\n", "person.crop_size"),  # YAML 1.1 reads 1e3 as a string
        "list.yaml": ("- fast\n- default\n", "must hold a mapping"),
        "broken.yaml": ("person: [1, 2\n", "cannot parse"),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError, match=expected.replace(".", r"\.")) as err:
            load_config(path)
        assert name in str(err.value)
        lines = [line.strip() for line in str(err.value).splitlines()]
        detail = lines[1] if len(lines) > 1 and not lines[0].startswith("cannot parse") else lines[0]
        seen.append(media.short_error(ValueError(detail))[len("ValueError: ") :][:90])
    reliability_row("config: bad YAML files (typo, type, not a mapping, syntax)", "ConfigError naming file and key",
                    "; ".join(seen))  # fmt: skip


def test_input_bounds_apply_without_a_frames_section(tmp_path, reliability_row):
    path = tmp_path / "mine.yaml"
    path.write_text("person:\n  crop_size: 128\n")
    frames = load_config(path).frames
    assert (frames.max_side, frames.max_frames) == (DEFAULT_MAX_SIDE, DEFAULT_MAX_FRAMES)
    presets = {name: (load_config(name).frames.max_side, load_config(name).frames.max_frames)
               for name in ("fast", "default", "quality")}  # fmt: skip
    assert all(side <= 8192 and n <= 100_000 for side, n in presets.values())
    reliability_row("config: YAML without a frames section", "input-size bounds still on",
                    f"max_side {frames.max_side}, max_frames {frames.max_frames}; presets (max_side, max_frames): "
                    f"{presets}")  # fmt: skip
