"""A real two-node Ray cluster, a real `mlflow server`, and `snmn submit` sending the training
as a Ray job: two workers land on different nodes, and the run is read back from the server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.tracking import global_tracking_uri
from tests.conftest import REPO, tiny_config
from tests.distributed.helpers import (
    environment,
    free_port,
    start,
    stop_session,
    wait_for_http,
    write_params,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ITERATIONS = 4


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    log = tmp_path / "mlflow-server.log"
    server = start(
        [
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        log,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", 120, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_session(server)


@pytest.fixture
def two_node_cluster(tmp_path):
    gcs_port, dashboard_port = free_port(), free_port()
    head_log, node_log = tmp_path / "ray-head.log", tmp_path / "ray-node.log"
    temp_dir = f"/tmp/snmn-ray-{gcs_port}"
    head = start(
        [
            "ray",
            "start",
            "--head",
            "--block",
            "--port",
            str(gcs_port),
            "--num-cpus",
            "1",
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard_port),
            "--temp-dir",
            temp_dir,
            "--disable-usage-stats",
        ],
        head_log,
    )
    node = None
    try:
        dashboard = f"http://127.0.0.1:{dashboard_port}"
        wait_for_http(f"{dashboard}/api/version", 120, head_log)
        node = start(
            ["ray", "start", "--block", "--address", f"127.0.0.1:{gcs_port}", "--num-cpus", "1"],
            node_log,
        )
        yield dashboard
    finally:
        if node is not None:
            stop_session(node)
        stop_session(head)


def test_job_on_two_nodes_logs_to_the_mlflow_server(
    tiny_data, tmp_path, mlflow_server, two_node_cluster
):
    from mlflow.tracking import MlflowClient

    config = tiny_config(
        tiny_data,
        tmp_path,
        iterations=ITERATIONS,
        eval_every=ITERATIONS,
        checkpoint_every=2,
        num_workers=2,
        cpus_per_worker=1.0,
        placement_strategy="STRICT_SPREAD",
        mlflow_tracking_uri=mlflow_server,
        mlflow_experiment="cluster-test",
    )
    params = write_params(config, tmp_path / "params.yaml")
    submitted = subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.cli",
            "submit",
            "--address",
            two_node_cluster,
            "--params",
            str(params),
        ],
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, output[-4000:]
    assert "SUCCEEDED" in output
    assert "2 worker(s) on 2 node(s)" in output

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("cluster-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.num_workers"] == "2"
    assert run.data.params["model.kb_dim"] == "64"
    assert run.data.tags["params_fingerprint"] == config.fingerprint()
    losses = client.get_metric_history(run.info.run_id, "vqa_loss_total")
    assert sorted(m.step for m in losses) == list(range(1, ITERATIONS + 1))  # rank 0 only
    assert client.get_metric_history(run.info.run_id, "num_nodes")[0].value == 2
    assert 0 <= run.data.metrics["val_vqa_accuracy"] <= 1
    (model,) = client.search_logged_models(
        [experiment.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    assert model.name == "model"
    import mlflow.pytorch

    with global_tracking_uri(mlflow_server):
        loaded = mlflow.pytorch.load_model(model.model_uri)
    assert sum(p.numel() for p in loaded.parameters()) > 0
    training = {a.path for a in client.list_artifacts(run.info.run_id, "training")}
    assert "training/model.pt" in training
