"""Metrics pushed to a real Prometheus Pushgateway and read back from its /metrics."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.server import EmulatorServer
from aitems_sync.spec.model import MetricsConfig
from aitems_sync.sync.metrics import push_run_metrics
from aitems_sync.sync.report import FAILED, OK, AmbiguousBatch, DatasetReport, RunReport
from tests import pushgateway
from tests.conftest import require_server
from tests.shop import Shop, customer_rows, write_spec


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    require_server(pushgateway.find_binary() is not None, "prometheus-pushgateway")
    with pushgateway.running_pushgateway() as url:
        yield url


def scrape(url: str) -> dict[str, float]:
    """The gateway's samples as {'name{labels}': value}, job and instance labels dropped."""
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("aitems_sync_"):
            name, value = line.rsplit(" ", 1)
            samples[name.replace('instance="",', "").replace(',job="nightly"', "")] = float(value)
    return samples


def report(status: str, read: int) -> RunReport:
    users = DatasetReport("users", status=status, read=read, sent=read - 2, unchanged=1,
                          invalid=1, batches=3, seconds=1.5,
                          ambiguous=[AmbiguousBatch(10, "a", "b", "lost answer")])
    return RunReport(run_id="r1", datasets=[users])


def test_a_run_pushes_per_dataset_figures(gateway: str) -> None:
    push_run_metrics(report(OK, 100), MetricsConfig(pushgateway=gateway, job="nightly"),
                     now=1_800_000_000.0)

    samples = scrape(gateway)

    assert samples['aitems_sync_rows_read{dataset="users"}'] == 100
    assert samples['aitems_sync_rows_sent{dataset="users"}'] == 98
    assert samples['aitems_sync_rows_unchanged{dataset="users"}'] == 1
    assert samples['aitems_sync_rows_invalid{dataset="users"}'] == 1
    assert samples['aitems_sync_batches{dataset="users"}'] == 3
    assert samples['aitems_sync_ambiguous_batches{dataset="users"}'] == 1
    assert samples['aitems_sync_duration_seconds{dataset="users"}'] == 1.5
    assert samples['aitems_sync_last_run_ok{dataset="users"}'] == 1
    assert samples['aitems_sync_last_success_timestamp_seconds{dataset="users"}'] == 1.8e9


def test_a_failed_run_keeps_the_last_success_timestamp(gateway: str) -> None:
    config = MetricsConfig(pushgateway=gateway, job="nightly")
    push_run_metrics(report(OK, 100), config, now=1_800_000_000.0)

    push_run_metrics(report(FAILED, 7), config, now=1_800_003_600.0)

    samples = scrape(gateway)
    assert samples['aitems_sync_rows_read{dataset="users"}'] == 7
    assert samples['aitems_sync_last_run_ok{dataset="users"}'] == 0
    assert samples['aitems_sync_last_success_timestamp_seconds{dataset="users"}'] == 1.8e9


def test_an_unreachable_gateway_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    push_run_metrics(report(OK, 1), MetricsConfig(pushgateway="http://127.0.0.1:9"),
                     now=0.0, timeout=2)

    assert "could not push metrics for users" in caplog.text


def test_run_pushes_its_figures_when_a_pushgateway_is_configured(
        gateway: str, tmp_path: Path, emulator: EmulatorServer) -> None:
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}")
    shop.add_customers(customer_rows(12))
    spec = write_spec(tmp_path / "sync.yaml", endpoint=emulator.base_url, source_url=shop.url,
                      state_url=f"sqlite:///{tmp_path / 'state.db'}")
    spec.write_text(spec.read_text() + f"metrics: {{pushgateway: '{gateway}', job: e2e}}\n")

    result = CliRunner().invoke(main_group, ["--config", str(spec), "run", "users"])

    assert result.exit_code == 0, result.output
    text = urllib.request.urlopen(gateway + "/metrics", timeout=5).read().decode()
    assert 'aitems_sync_rows_sent{dataset="users",instance="",job="e2e"} 12' in text
    shop.close()
