"""Config fields as CLI options (flows/cli_options.py): ``--set key.path=value`` parsing, the generated key lists, and
the commands that take them."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flows.cli import _load_cfg, app
from flows.cli_options import (
    ImplicitTraining,
    NormalNetTraining,
    OverrideError,
    build_settings,
    config_keys,
    parse_overrides,
)
from flows.config import PipelineConfig


def test_parse_overrides_nests_keys_and_parses_yaml_values():
    got = parse_overrides(["fit.pose_iters=40", "frames.fps=2.5", "device=cuda:1", "net.hidden=[512, 256]",
                           "avatar_motion=null", "fit.use_silhouette=false"])  # fmt: skip
    assert got == {"fit": {"pose_iters": 40, "use_silhouette": False}, "frames": {"fps": 2.5}, "device": "cuda:1",
                   "net": {"hidden": [512, 256]}, "avatar_motion": None}  # fmt: skip
    assert parse_overrides(None) == {}


@pytest.mark.parametrize("item", ["fit.pose_iters", "=3", "fit..x=1"])
def test_parse_overrides_rejects_malformed_items(item):
    with pytest.raises(OverrideError, match="expected key.path=value"):
        parse_overrides([item])


def test_a_value_and_a_section_under_one_key_conflict():
    with pytest.raises(OverrideError, match="used as a section"):
        parse_overrides(["fit=3", "fit.pose_iters=4"])


def test_config_keys_cover_every_leaf_with_its_description():
    keys = config_keys(PipelineConfig)
    assert "fit.pose_iters" in keys and "reconstruct.refine.iterations" in keys and "device" in keys
    assert "fit" not in keys  # sections are not leaves
    assert keys["person.crop_size"].startswith("default 512. Side S of the square person crops")
    assert "train.steps" in config_keys(ImplicitTraining) and "net.image_size" in config_keys(NormalNetTraining)


def test_build_settings_validates_and_suggests_close_keys():
    s = build_settings(ImplicitTraining, ["train.steps=12", "net.hidden=[32,16]", "max_samples=3"])
    assert s.train.steps == 12 and s.net.hidden == (32, 16) and s.max_samples == 3
    assert build_settings(NormalNetTraining, None) == NormalNetTraining()
    with pytest.raises(OverrideError, match=r"train.stepz: .*did you mean train.steps"):
        build_settings(ImplicitTraining, ["train.stepz=12"])
    with pytest.raises(OverrideError, match="steps: Input should be greater than or equal to 0"):
        build_settings(NormalNetTraining, ["steps=-1"])


def test_load_cfg_applies_sets_under_the_common_options():
    cfg = _load_cfg("fast", ["fit.pose_iters=7", "frames.max_frames=9", "device=cpu"], fps=3.0)
    assert cfg.fit.pose_iters == 7 and cfg.frames.max_frames == 9 and cfg.frames.fps == 3.0 and cfg.device == "cpu"
    assert _load_cfg("fast", ["frames.max_frames=9"], max_frames=4).frames.max_frames == 4  # the option wins
    assert cfg.person.crop_size == 256  # the rest of the preset stays


def test_commands_list_their_keys_and_refuse_unknown_ones(tmp_path):
    runner = CliRunner()
    for argv, key in ((["run", "--help"], "reconstruct.refine.iterations"), (["avatar", "--help"], "avatar.skin_steps"),
                      (["train", "implicit", "--help"], "train.eval_resolution"),
                      (["train", "normal-net", "--help"], "net.base_channels")):  # fmt: skip
        res = runner.invoke(app, argv, terminal_width=200)
        assert res.exit_code == 0 and key in res.output and "--set" in res.output, argv
    res = runner.invoke(app, ["frames", "x.mp4", "--out", str(tmp_path), "--set", "fit.pose_iterz=3"],
                        terminal_width=200)
    assert res.exit_code == 2 and "fit.pose_iterz" in res.output
    res = runner.invoke(app, ["train", "implicit", "--data", str(tmp_path), "--set", "lr=1"], terminal_width=200)
    assert res.exit_code == 2 and "did you mean train.lr" in res.output
    res = runner.invoke(app, ["train", "normal-net", "--data", str(tmp_path), "--device", "gpu"],
                        terminal_width=200)
    assert res.exit_code == 2 and "gpu" in res.output
