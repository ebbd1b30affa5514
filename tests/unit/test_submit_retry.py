"""`snmn submit` waits for a head node's job agent instead of failing on its first answer, and
stops with one line when nothing answers at --address or the inputs are missing."""

import sys

import pytest
import ray.job_submission

from pipeline import distributed
from pipeline.errors import ConfigError
from stages import cli
from tests.conftest import REPO, error_line, run_snmn


class FakeClient:
    """Answers like a head node whose job agent comes up after `busy` refusals."""

    busy = 2

    def __init__(self, address: str) -> None:
        self.calls = 0

    def submit_job(self, **job):
        self.calls += 1
        if self.calls <= self.busy:
            raise RuntimeError(
                "Request failed with status code 500: No available agent to submit job, "
                "please try again later.."
            )
        assert job["entrypoint"].endswith("train --params params.yaml")
        return "raysubmit_1"

    def get_job_status(self, job_id: str) -> str:
        return "PENDING"


@pytest.fixture
def fake_ray(monkeypatch):
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", FakeClient)
    monkeypatch.setattr(distributed.time, "sleep", lambda seconds: None)


def test_submission_is_retried_while_the_agent_is_not_up(fake_ray, tmp_path):
    job_id, status = distributed.submit_job("http://head:8265", "params.yaml", tmp_path, False)
    assert (job_id, status) == ("raysubmit_1", "PENDING")


def test_an_agent_that_never_comes_up_is_one_line_after_the_wait(fake_ray, monkeypatch, tmp_path):
    monkeypatch.setattr(FakeClient, "busy", 10**9)
    monkeypatch.setattr(distributed, "AGENT_WAIT_S", -1)
    with pytest.raises(ConfigError, match=r"^--address http://head:8265: the head node's job"):
        distributed.submit_job("http://head:8265", "params.yaml", tmp_path, False)


def test_an_address_where_nothing_listens_is_one_line_naming_it(tmp_path):
    """Before: a 105-line ConnectionError traceback from Ray's job client."""
    address = f"http://127.0.0.1:{distributed.free_port()}"
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    result = run_snmn(
        "submit", "--params", str(params), "--address", address, "--no-check-inputs", timeout=120
    )
    line = error_line(result)
    assert line.startswith(f"error: --address {address}: no Ray job server answers there")


def test_inputs_are_checked_before_anything_is_sent(fake_ray, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(FakeClient, "submit_job", lambda self, **job: pytest.fail("submitted"))
    params = tmp_path / "params.yaml"
    params.write_text(f"train:\n  tokens_dir: {tmp_path / 'no-tokens'}\n")
    argv = ["snmn", "submit", "--params", str(params), "--address", "http://head:8265"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as caught:
        cli.main()
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert error == f"error: {tmp_path / 'no-tokens'}: no such folder (train.tokens_dir); " + (
        "run `snmn tokenize` first\n"
    )
