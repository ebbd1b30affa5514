"""`snmn submit` waits for a head node's job agent instead of failing on its first answer."""

import pytest
import ray.job_submission

from pipeline import distributed


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


def test_other_errors_and_a_long_wait_still_fail(fake_ray, monkeypatch, tmp_path):
    monkeypatch.setattr(FakeClient, "busy", 10**9)
    monkeypatch.setattr(distributed, "AGENT_WAIT_S", -1)
    with pytest.raises(RuntimeError, match="No available agent"):
        distributed.submit_job("http://head:8265", "params.yaml", tmp_path, False)
