"""The demo's JSON API on a real server: the reasoning it returns is the model's, uploads match
the extracted features, bad requests get a clear 4xx and the server keeps serving."""

from __future__ import annotations

import http.client
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from pipeline.data.shards import FeatureStore, manifest_path
from pipeline.data.text import Vocabulary, tokenize_text
from pipeline.demo.service import DemoService, rebuild_backbone, resolve_model_file
from pipeline.errors import ConfigError, DataError
from pipeline.runtime.artifact import load_trained_model
from pipeline.tables import read_parquet
from pipeline.vision.images import image_name
from snmn.layout import MODULE_NAMES
from tests.integration.demo_server import demo_settings, server_process, train_tiny_model

IMAGE = 3
QUESTION = "Are there more cubes than zorblax spheres?"  # "zorblax": not in the vocabulary


@pytest.fixture(scope="module")
def model_path(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_model(tiny_data, tmp_path_factory.mktemp("demo_api"))


@pytest.fixture(scope="module")
def server(tiny_data: Path, model_path: Path) -> str:
    settings = demo_settings(tiny_data, model_path)
    with server_process(settings, model_path.parent / "server.log") as url:
        yield url


def png_bytes(tiny_data: Path, index: int = IMAGE) -> bytes:
    return (tiny_data / "mini-clevr" / "images" / "val" / image_name("val", index)).read_bytes()


def ask(server: str, image_id, question: str) -> requests.Response:
    return requests.post(f"{server}/api/ask", json={"image_id": image_id, "question": question})


def post_json(server: str, text: str) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    return requests.post(f"{server}/api/ask", data=text, headers=headers)


def upload(server: str, data, question: str = "What color is it?", kind: str = "image/png"):
    return requests.post(
        f"{server}/api/ask/upload",
        params={"question": question},
        data=data,
        headers={"Content-Type": kind},
    )


def test_info_listing_png_and_openapi(server: str, tiny_data: Path) -> None:
    info = requests.get(f"{server}/api/info").json()
    assert info["images"] == {"split": "val", "count": 16}
    assert info["model"]["grid"] == [4, 4] and info["uploads"]["enabled"] is True
    page = requests.get(f"{server}/api/images", params={"offset": 2, "limit": 3}).json()
    assert page["total"] == 16 and [entry["id"] for entry in page["images"]] == [2, 3, 4]
    table = read_parquet(tiny_data / "tokens" / "val.parquet", ["image_index", "question"])
    about_3 = [q for i, q in zip(*table.to_pydict().values(), strict=True) if i == IMAGE]
    assert page["images"][1]["questions"] == about_3[:10] and about_3
    response = requests.get(f"{server}/api/images/{IMAGE}")
    assert response.headers["content-type"] == "image/png"
    assert response.content == png_bytes(tiny_data)
    paths = requests.get(f"{server}/openapi.json").json()["paths"]
    assert {"/api/info", "/api/images", "/api/ask", "/api/ask/upload"} <= set(paths)
    assert "image/png" in paths["/api/ask/upload"]["post"]["requestBody"]["content"]


def test_ask_returns_the_models_own_reasoning(server: str, tiny_data: Path, model_path: Path):
    reasoning = ask(server, IMAGE, QUESTION).json()
    words = tokenize_text(QUESTION)
    assert [w["text"] for w in reasoning["words"]] == words
    assert reasoning["unknown_words"] == ["zorblax"]
    assert [w["known"] for w in reasoning["words"]] == [w != "zorblax" for w in words]

    model, payload = load_trained_model(model_path)  # the same computation, in this process
    vocabulary = Vocabulary(tuple(payload["question_words"]), ("<pad>", "<unk>"))
    features = FeatureStore(manifest_path(tiny_data / "features", "val"))[IMAGE]
    with torch.no_grad():
        output = model(
            torch.tensor([vocabulary.encode(words)]),
            torch.tensor([len(words)]),
            torch.from_numpy(np.asarray(features, dtype=np.float32))[None],
        )
    probabilities = output.answer_logits[0].softmax(0)
    assert reasoning["answer"] == payload["answer_words"][int(probabilities.argmax())]
    assert reasoning["top_answers"][0]["probability"] == pytest.approx(
        float(probabilities.max()), abs=1e-4
    )
    chosen = output.module_weights[0].argmax(1).tolist()
    shown = [t + 1 for t, m in enumerate(chosen) if MODULE_NAMES[m] != "NoOp"] or list(range(1, 10))
    assert [step["step"] for step in reasoning["steps"]] == shown
    assert reasoning["folded_steps"], "the tiny model should end this layout with NoOp steps"
    assert sorted(shown + reasoning["folded_steps"]) == list(range(1, 10))
    for step in reasoning["steps"]:
        assert step["module"] == MODULE_NAMES[chosen[step["step"] - 1]]
        assert len(step["word_attention"]) == len(words)
        attention = np.array(step["attention"])
        assert attention.shape == (4, 4) and attention.sum() == pytest.approx(1.0, abs=1e-3)
        assert 0 <= step["stack_depth"] < model.config.stack_length


def test_an_uploaded_png_is_read_like_the_extracted_features(server: str, tiny_data: Path):
    by_id = ask(server, IMAGE, QUESTION).json()
    uploaded = upload(server, png_bytes(tiny_data), QUESTION)
    assert uploaded.status_code == 200, uploaded.text
    uploaded = uploaded.json()
    assert uploaded["answer"] == by_id["answer"]
    assert (uploaded["image_width"], uploaded["image_height"]) == (480, 320)
    for mine, theirs in zip(uploaded["steps"], by_id["steps"], strict=True):
        assert np.allclose(mine["attention"], theirs["attention"], atol=2e-3)


BIG = 50_000_000


@pytest.mark.parametrize(
    ("name", "send", "status", "fragment"),
    [
        ("empty question", lambda s, d: ask(s, IMAGE, ""), 422, "question: empty"),
        ("only spaces", lambda s, d: ask(s, IMAGE, "   "), 422, "question: empty"),
        ("10,000 characters", lambda s, d: ask(s, IMAGE, "a" * 10_000), 422, "at most 1000"),
        ("unknown image", lambda s, d: ask(s, 99, "What?"), 404, "image 99 not found"),
        ("negative image", lambda s, d: ask(s, -1, "What?"), 404, "image -1 not found"),
        ("path as id", lambda s, d: ask(s, "../../etc/passwd", "What?"), 422, "image_id"),
        ("broken JSON", lambda s, d: post_json(s, "{"), 422, "not valid JSON"),
        ("JSON list", lambda s, d: post_json(s, "[3]"), 422, "expected a JSON object"),
        ("form body", lambda s, d: requests.post(f"{s}/api/ask", data="id=3"), 422, "JSON object"),
        ("image id PNG", lambda s, d: requests.get(f"{s}/api/images/99"), 404, "not found"),
        ("id not a number", lambda s, d: requests.get(f"{s}/api/images/x"), 422, "image_id"),
        ("not a PNG", lambda s, d: upload(s, b"GIF89a" + bytes(100)), 415, "not a PNG"),
        ("wrong type", lambda s, d: upload(s, d, kind="image/jpeg"), 415, "image/png"),
        ("empty upload", lambda s, d: upload(s, b""), 400, "empty"),
        ("truncated PNG", lambda s, d: upload(s, d[: len(d) // 2]), 400, "uploaded PNG"),
        ("PNG header only", lambda s, d: upload(s, d[:8] + bytes(40)), 400, "uploaded PNG"),
        ("5000 px wide", lambda s, d: upload(s, wide_png()), 400, "each side must be"),
        ("50 MB upload", lambda s, d: upload(s, bytes(BIG)), 413, "larger than 5,000,000"),
        ("50 MB, chunked", lambda s, d: upload(s, chunks(BIG)), 413, "larger than 5,000,000"),
        ("huge JSON", lambda s, d: ask(s, IMAGE, "a" * 100_000), 413, "larger than 65,536"),
        ("long upload question", lambda s, d: upload(s, d, "a" * 10_000), 422, "at most 1000"),
        ("no question", lambda s, d: requests.post(f"{s}/api/ask/upload", data=d), 422, "question"),
    ],
)
def test_bad_requests_get_a_clear_error_and_the_server_goes_on(
    server: str, tiny_data: Path, name: str, send, status: int, fragment: str
) -> None:
    response = send(server, png_bytes(tiny_data))
    assert response.status_code == status, (name, response.text)
    error = response.json()
    assert error["status"] == status and fragment in error["error"], (name, error)
    assert ask(server, IMAGE, "What color is the cube?").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/images/../../etc/passwd",
        "/api/images/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/static/../../../../etc/passwd",
        "/static/%2E%2E/%2E%2E/pipeline/serve.py",
    ],
)
def test_paths_from_a_request_never_reach_the_file_system(server: str, path: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", path)  # sent verbatim: no client-side ".." clean-up
    response = connection.getresponse()
    body = response.read()
    assert response.status in (404, 422), body
    assert b"root:" not in body and b"def serve" not in body
    assert json.loads(body)["status"] == response.status


def test_concurrent_requests_all_succeed(server: str) -> None:
    questions = ["What color is the cube?", "How many zorblax spheres are there?", "Is it big?"]

    def one(i: int) -> int:
        return ask(server, i % 16, questions[i % 3]).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(one, range(40))) == [200] * 40


# ---------------------------------------------------------------------------------------------
# In process: CLEVR-Ref boxes, MLflow URIs, a backbone that does not match
# ---------------------------------------------------------------------------------------------


def test_a_ref_model_answers_with_a_box(tiny_data: Path, tmp_path: Path) -> None:
    model = train_tiny_model(tiny_data, tmp_path, task="ref")
    service = DemoService(demo_settings(tiny_data, model, split="loc_val"))
    reasoning = service.ask(2, "the large cube left of the zorblax")
    assert reasoning.answer is None and reasoning.top_answers == []
    box = reasoning.box
    assert box is not None and (reasoning.image_width, reasoning.image_height) == (480, 320)
    assert 0 <= box.x and box.x + box.width <= 480 and box.width >= 1
    assert 0 <= box.y and box.y + box.height <= 320 and box.height >= 1
    assert reasoning.unknown_words == ["zorblax"]


def test_models_come_from_mlflow_run_and_registry_uris(model_path: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import start_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = start_run(uri, "demo", "tiny", {}, {})
    client = MlflowClient(tracking_uri=uri)
    client.log_artifact(run_id, str(model_path), artifact_path="training")
    client.create_registered_model("snmn-tiny")
    client.create_model_version("snmn-tiny", f"runs:/{run_id}/model", run_id=run_id)
    expected = model_path.read_bytes()
    for number, reference in enumerate(["runs:/" + run_id, "models:/snmn-tiny/1"]):
        folder = tmp_path / f"download{number}"
        folder.mkdir()
        assert resolve_model_file(reference, uri, folder).read_bytes() == expected
    with pytest.raises(ConfigError, match="not found in MLflow"):
        resolve_model_file("models:/snmn-tiny/7", uri, tmp_path)
    with pytest.raises(ConfigError, match="model.pt files"):
        resolve_model_file(f"runs:/{run_id}/model", uri, tmp_path)
    with pytest.raises(ConfigError, match="model file not found"):
        resolve_model_file(str(tmp_path / "missing.pt"), uri, tmp_path)


def test_uploads_need_the_very_backbone_of_the_features(tiny_data: Path) -> None:
    features = tiny_data / "features"
    manifest = FeatureStore(manifest_path(features, "val")).manifest
    rebuild_backbone(features, manifest)  # the one that extracted them: accepted
    with pytest.raises(DataError, match="digest mismatch"):
        rebuild_backbone(features, {**manifest, "weights_sha256": "0" * 64})


def wide_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (5000, 20)).save(buffer, format="PNG")
    return buffer.getvalue()


def chunks(size: int, chunk: int = 1 << 20):
    for _ in range(size // chunk):
        yield bytes(chunk)


def test_the_serve_stage_takes_params_and_options(tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    import pipeline.demo.app
    from stages.serve import command

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store is asserted
    served = []
    monkeypatch.setattr(
        pipeline.demo.app, "serve", lambda settings, uri: served.append((settings, uri))
    )
    params = tmp_path / "params.yaml"
    params.write_text("serve: {split: loc_val, port: 9000, max_question_chars: 200}\n")
    result = CliRunner().invoke(
        command, ["--params", str(params), "--model", "runs:/abc", "--port", "9100"]
    )
    assert result.exit_code == 0, result.output
    ((settings, uri),) = served
    assert (settings.model, settings.split, settings.port) == ("runs:/abc", "loc_val", 9100)
    assert settings.host == "127.0.0.1" and settings.max_question_chars == 200
    assert uri.startswith("sqlite:///") and uri.endswith("mlflow.db")
    result = CliRunner().invoke(command, ["--params", str(params), "--port", "0"])
    assert isinstance(result.exception, ConfigError) and "serve.port" in str(result.exception)
