"""Following a live log survives dropped connections: resumed with Last-Event-ID, every line
exactly once and in order, against the real backend."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

from iac_cli.client import Api
from iac_cli.config import Config
from iac_cli.logstream import End, Lines, LogStream, Status, open_events
from iac_cli.output import strip_ansi
from tests.backend.platform import TOKEN
from tests.iac_cli.conftest import Platform, json_of
from tests.iac_cli.proxy import cutting_proxy

# About 30 lines over 3 s: the run is still writing while the tests cut its stream.
TICKER_CONFIG = """\
resource "terraform_data" "ticker" {
  provisioner "local-exec" {
    command = "for i in $(seq 1 30); do echo tick-$i; sleep 0.1; done"
  }
}
"""


def start_ticker(platform: Platform, tmp_path: Path, name: str) -> int:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "main.tf").write_text(TICKER_CONFIG)
    platform.iac(
        "deployments", "create", name, "--dir", str(directory), "--label", "provider=gcp"
    ).ok()
    run = json_of(platform.iac("apply", name, "--auto-approve", "--no-follow", "--json"))
    return int(run["id"])


def api_for(url: str) -> Api:
    return Api(Config(url, TOKEN, Path("/nonexistent")))


def stored_lines(platform: Platform, run_id: int) -> list[str]:
    return list(json_of(platform.iac("logs", str(run_id), "--json"))["lines"])


def test_reconnect_with_last_event_id_continues_the_seq(platform: Platform, tmp_path: Path) -> None:
    run_id = start_ticker(platform, tmp_path, "ticker-direct")
    api = api_for(platform.url)
    try:
        # First connection: read until a few batches arrived, then hang up.
        batches: list[Lines] = []
        with closing(open_events(api, run_id, 0)) as events:
            for event in events:
                if isinstance(event, Lines):
                    batches.append(event)
                    if "tick-3" in event.text:
                        break
        assert batches and batches[0].first_seq == 1
        for before, after in zip(batches, batches[1:], strict=False):
            assert after.first_seq == before.last_seq + 1
        last = batches[-1].last_seq

        # Second connection with Last-Event-ID: the next line is last + 1, none repeated.
        statuses: list[str] = []
        ended = False
        with closing(open_events(api, run_id, last)) as events:
            for event in events:
                if isinstance(event, Lines):
                    assert event.first_seq == last + 1, (event.first_seq, last)
                    batches.append(event)
                    last = event.last_seq
                elif isinstance(event, Status):
                    statuses.append(event.status)
                elif isinstance(event, End):
                    ended = True
        assert ended and statuses[-1] == "succeeded", statuses
    finally:
        api.close()
    lines = [strip_ansi(line) for batch in batches for line in batch.text.split("\n")]
    assert lines == stored_lines(platform, run_id)
    ticks = [line.rsplit("tick-", 1)[1] for line in lines if "(local-exec): tick-" in line]
    assert ticks == [str(i) for i in range(1, 31)]


def test_log_stream_resumes_through_dropped_connections(platform: Platform, tmp_path: Path) -> None:
    run_id = start_ticker(platform, tmp_path, "ticker-stream")
    port = urlsplit(platform.url).port
    assert port is not None
    retries: list[str] = []
    with cutting_proxy(port) as proxy:
        api = api_for(proxy.url)
        try:
            stream = LogStream(api, run_id, on_retry=retries.append)
            seen: list[str] = []
            cut_at = {"tick-3", "tick-10", "tick-20"}
            for event in stream:
                if isinstance(event, Lines):
                    got = event.text.split("\n")
                    seen += [strip_ansi(line) for line in got]
                    if any(line.endswith(tuple(cut_at)) for line in got):
                        cut_at = {c for c in cut_at if not any(line.endswith(c) for line in got)}
                        assert proxy.cut() >= 1
        finally:
            api.close()
    assert proxy.cuts >= 3 and stream.reconnects >= 3 and len(retries) >= 3, (proxy.cuts, retries)
    assert seen == stored_lines(platform, run_id)
    assert stream.last_seq == len(seen)


def test_iac_logs_follow_survives_cuts(platform: Platform, tmp_path: Path) -> None:
    run_id = start_ticker(platform, tmp_path, "ticker-cli")
    port = urlsplit(platform.url).port
    assert port is not None
    with cutting_proxy(port) as proxy:
        follower = platform.spawn("--url", proxy.url, "logs", str(run_id), "--follow")
        try:
            follower.wait_for_line(r"tick-4$")
            assert proxy.cut() >= 1
            follower.wait_for_line(r"tick-12$")
            assert proxy.cut() >= 1
            result = follower.finish()
        finally:
            follower.kill()
    assert result.returncode == 0, result
    assert result.stderr.count("resuming after line") >= 2, result.stderr
    assert f"run {run_id} succeeded" in result.stderr
    assert result.stdout.splitlines() == stored_lines(platform, run_id)
