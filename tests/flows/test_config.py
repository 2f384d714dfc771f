"""Config presets and validation errors."""

import pytest
import yaml

from flows.config import PRESETS, ConfigError, PipelineConfig, load_config


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load(name):
    cfg = load_config(name)
    assert isinstance(cfg, PipelineConfig)
    assert len(cfg.digest()) == 16


def test_fast_preset_overrides_defaults():
    fast, default = load_config("fast"), load_config("default")
    assert fast.person.crop_size < default.person.crop_size
    assert fast.frames.max_frames == 16


def test_overrides_apply_and_change_digest():
    a = load_config("fast")
    b = load_config("fast", {"fit": {"pose_iters": 7}})
    assert b.fit.pose_iters == 7 and a.digest() != b.digest()


@pytest.mark.parametrize(
    "override, key",
    [
        ({"fit": {"pose_itres": 3}}, "fit.pose_itres"),  # misspelt key
        ({"person": {"crop_size": "big"}}, "person.crop_size"),  # wrong type
        ({"person": {"crop_margin": 5.0}}, "person.crop_margin"),  # out of range
        ({"framez": {}}, "framez"),  # unknown section
    ],
)
def test_invalid_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("default", override)


def test_yaml_file_and_errors(tmp_path):
    good = tmp_path / "my.yaml"
    good.write_text("person:\n  crop_size: 128\n")
    assert load_config(good).person.crop_size == 128
    bad = tmp_path / "bad.yaml"
    bad.write_text("person: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("nonexistent")


def test_the_fast_avatar_is_defined_once_in_its_preset():
    from avatar.config import AvatarConfig
    from flows.bundled import preset_path
    from flows.config import preset_avatar_config

    assert not hasattr(AvatarConfig, "fast")
    section = yaml.safe_load(preset_path("fast").read_text())["avatar"]
    fast = preset_avatar_config("fast")
    assert fast.model_dump(include=set(section)) == section and fast != AvatarConfig()
    assert preset_avatar_config("fast", skin_steps=5).skin_steps == 5
    with pytest.raises(ConfigError, match="avatar.skin_stepz"):
        preset_avatar_config("fast", skin_stepz=5)
