"""Tests for the deployment side: prefect.yaml (schema, entrypoint, parameters, schedule) and `avatarize serve`.

These need no Prefect server; the real server + worker run of the deployment is in test_deployment_server.py.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def test_schema_is_what_prefect_deploy_reads(prefect_yaml):
    models = pytest.importorskip("prefect.cli.deploy._models")  # private; skip rather than break on a rename
    model = models.PrefectYamlModel.model_validate(prefect_yaml)
    (dep,) = model.deployments
    assert dep.work_pool.name == "avatarize-process"
    assert dep.concurrency_limit.limit == 1 and dep.concurrency_limit.collision_strategy == "CANCEL_NEW"


def test_entrypoint_parameters_and_schedule(prefect_yaml):
    from prefect.client.schemas.schedules import CronSchedule

    (dep,) = prefect_yaml["deployments"]
    path, name = dep["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name)
    assert flow.name == "process-directory"
    params = flow.validate_parameters(dep["parameters"])  # raises on unknown or badly typed parameters
    assert {"video_dir", "out_dir"} <= set(params)
    assert params["runner"].kind == "process"
    (schedule,) = dep["schedules"]
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # raises on a bad cron string


def test_serve_command_passes_valid_parameters(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from flows import pipeline
    from flows.cli import app

    seen = {}
    monkeypatch.setattr(pipeline.process_directory, "serve", lambda **kw: seen.update(kw))
    res = CliRunner().invoke(
        app,
        ["serve", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--cron", "0 * * * *", "-c", "fast",
         "--runner", "process", "--devices", "cpu,cpu"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert seen["cron"] == "0 * * * *" and seen["global_limit"] == 1
    params = pipeline.process_directory.validate_parameters(seen["parameters"])
    assert params["runner"].devices == ["cpu", "cpu"]
    assert pipeline.resolve_config(params["config"]).person.crop_size == 256
    assert Path(params["video_dir"]).is_absolute()
