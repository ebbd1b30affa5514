"""The tokenise stage end to end on small hand-made CLEVR / CLEVR-Ref files."""

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import tables
from pipeline.clevr.world import CLEVR_ANSWERS
from pipeline.config import TokenizeConfig
from pipeline.data.schema import SCHEMA
from pipeline.data.tokenization import encode_boxes, tokenize
from pipeline.errors import ConfigError, DataError
from pipeline.tables import padded, read_parquet, write_parquet_atomic
from tests.conftest import REAL_CLEVR_SAMPLE

REAL_TEST_QUESTIONS = REAL_CLEVR_SAMPLE / "questions" / "CLEVR_test_questions.json"
T, GRID = 9, (14, 14)


def node(function, *inputs, value=None):
    return {"function": function, "inputs": list(inputs), "value_inputs": [value] if value else []}


LARGE_CUBE = [
    node("scene"),
    node("filter_size", 0, value="large"),
    node("filter_shape", 1, value="cube"),
    node("unique", 2),
]
WHAT_COLOR = LARGE_CUBE + [node("query_color", 3)]
MORE_CUBES = [
    node("scene"),
    node("filter_shape", 0, value="cube"),
    node("count", 1),
    node("scene"),
    node("filter_shape", 3, value="sphere"),
    node("count", 4),
    node("greater_than", 2, 5),
]
HOW_MANY = [node("scene"), node("count", 0)]
TWO_HOP = [node("scene"), node("filter_shape", 0, value="cube"), node("unique", 1)]
for _ in range(2):  # Find, then Transform, Filter twice
    n = len(TWO_HOP)
    TWO_HOP += [node("relate", n - 1, value="left")]
    TWO_HOP += [node("filter_shape", n, value="sphere"), node("unique", n + 1)]
TOO_LONG = TWO_HOP + [node("query_size", len(TWO_HOP) - 1)]
TOO_LONG += [dict(n, inputs=[i + len(TOO_LONG) for i in n["inputs"]]) for n in TOO_LONG]
TOO_LONG += [node("equal_size", len(TOO_LONG) // 2 - 1, len(TOO_LONG) - 1)]  # 11 modules


def question(index, split, text, answer=None, program=None, family=None, **extra):
    entry = {
        "split": split,
        "image_index": index,
        "image_filename": f"CLEVR_{split}_{index:06d}.png",
        "question_index": index,
        "question": text,
        **extra,
    }
    if answer is not None:
        entry["answer"] = answer
    if program is not None:
        entry["program"] = program
        entry["question_family_index"] = family
    return entry


def splits():
    return {
        "train": [
            question(0, "train", "What color is the large cube?", "red", WHAT_COLOR, 1),
            question(1, "train", "Are there more cubes than spheres?", True, MORE_CUBES, 2),
            question(2, "train", "How many things are there?", 3, HOW_MANY, 3),
        ],
        "val": [
            question(0, "val", "What color is the large zebra?", "red", WHAT_COLOR, 1),
            question(1, "val", "How many things are there?", "7", HOW_MANY, 3),
        ],
        "test": [question(0, "test", "How many things are there?")],
        "loc_train": [
            question(0, "loc_train", "The large cube.", [], LARGE_CUBE, bbox=[100, 50, 40, 30])
        ],
        "loc_val": [
            question(0, "loc_val", "the large cube", [], LARGE_CUBE, bbox=[470, 310, 20, 20])
        ],
        "loc_test": [question(0, "loc_test", "the large cube", [], LARGE_CUBE)],
    }


def write_dataset(tmp_path, data=None):
    questions_dir = tmp_path / "questions"
    questions_dir.mkdir(exist_ok=True)
    for split, entries in (data or splits()).items():
        path = questions_dir / f"CLEVR_{split}_questions.json"
        path.write_text(json.dumps({"info": {"split": split}, "questions": entries}))
    return TokenizeConfig(
        questions_dir=str(questions_dir),
        output_dir=str(tmp_path / "tokens"),
        summary_path=str(tmp_path / "metrics" / "tokenize.json"),
    )


def rows(config, split):
    return pq.read_table(Path(config.output_dir) / f"{split}.parquet").to_pylist()


def vocabulary(config, kind):
    return json.loads((Path(config.output_dir) / f"vocab_{kind}.json").read_text())


@pytest.fixture
def done(tmp_path):
    config = write_dataset(tmp_path)
    summary = tokenize(config, num_steps=T, grid=GRID)
    return config, summary


def test_outputs_and_schema(done):
    config, summary = done
    names = sorted(p.name for p in Path(config.output_dir).iterdir())
    assert names == sorted(
        [f"{s}.parquet" for s in splits()]
        + ["vocab_answer.json", "vocab_layout.json", "vocab_question.json"]
    )
    table = pq.read_table(Path(config.output_dir) / "train.parquet")
    assert table.schema.remove_metadata() == SCHEMA
    metadata = json.loads(table.schema.metadata[b"snmn"])
    assert metadata["num_steps"] == T and metadata["grid"] == list(GRID)
    assert json.loads(Path(config.summary_path).read_text()) == summary


def test_vqa_rows(done):
    config, _ = done
    words, answers = vocabulary(config, "question"), vocabulary(config, "answer")
    assert words[:2] == ["<pad>", "<unk>"]
    assert answers == sorted(CLEVR_ANSWERS) and len(answers) == 28  # whatever train answers
    assert vocabulary(config, "layout")[:2] == ["NoOp", "Find"]
    cube, more, how_many = rows(config, "train")
    assert [words[i] for i in cube["tokens"]] == [
        "what",
        "color",
        "is",
        "the",
        "large",
        "cube",
        "?",
    ]
    assert cube["length"] == 7 and cube["position"] == 0 and cube["split"] == "train"
    assert (cube["answer"], answers[cube["answer_id"]]) == ("red", "red")
    assert cube["layout"] == [1, 7, 0, 0, 0, 0, 0, 0, 0] and cube["layout_length"] == 2
    assert cube["question_type"] == "query_attribute" and cube["family"] == 1
    assert more["layout"][:3] == [1, 1, 8] and more["question_type"] == "compare_number"
    assert more["answer"] == "yes"
    assert how_many["layout"][:2] == [6, 7] and how_many["question_type"] == "count"
    assert cube["bbox"] is None and cube["target_cell"] is None and cube["offsets"] is None


def test_unseen_words_are_counted_not_fatal_and_every_clevr_answer_has_an_id(done):
    config, summary = done
    zebra, seven = rows(config, "val")
    words, answers = vocabulary(config, "question"), vocabulary(config, "answer")
    assert "zebra" not in words
    assert zebra["tokens"][5] == 1  # <unk>
    assert seven["answer"] == "7" and answers[seven["answer_id"]] == "7"  # no train question says 7
    counts = summary["splits"]["val"]
    assert counts["unknown_tokens"] == 1 and counts["questions_with_unknown_tokens"] == 1
    assert summary["splits"]["train"]["unknown_tokens"] == 0


@pytest.mark.parametrize("split", ["train", "val"])
def test_an_answer_outside_clevrs_28_is_one_line_naming_the_file(tmp_path, split):
    data = splits()
    data[split][1]["answer"] = "maybe"
    config = write_dataset(tmp_path, data)
    with pytest.raises(DataError) as caught:
        tokenize(config, num_steps=T, grid=GRID)
    message = str(caught.value)
    assert message.startswith(
        f"{config.questions_dir}/CLEVR_{split}_questions.json: question 1: answer 'maybe' is not "
        "one of CLEVR's 28 answers"
    )
    assert "\n" not in message and not Path(config.output_dir).exists()


def test_test_split_without_answers_and_programs(done):
    config, summary = done
    (row,) = rows(config, "test")
    assert row["answer"] is None and row["answer_id"] is None
    assert row["layout"] is None and row["question_type"] is None and row["family"] is None
    assert row["length"] == 6
    assert summary["splits"]["test"]["without_program"] == 1


def test_ref_rows_carry_box_cell_and_offsets(done):
    config, _ = done
    (row,) = rows(config, "loc_train")
    assert row["layout"][:2] == [1, 0]  # Find
    assert row["answer"] is None and row["question_type"] is None
    assert row["bbox"] == [100, 50, 40, 30]
    # stride 480/14 and 320/14: x1 = 100·14/480 − .5 = 2.4167, x2 = 139·14/480 − .5 = 3.5542,
    # y1 = 50·14/320 − .5 = 1.6875, y2 = 79·14/320 − .5 = 2.9563; centre (2.985, 2.322) → (3, 2)
    assert row["target_cell"] == 2 * 14 + 3
    np.testing.assert_allclose(row["offsets"], [-0.58333, -0.3125, 0.55417, 0.95625], atol=1e-4)
    (corner,) = rows(config, "loc_val")
    assert corner["target_cell"] == 13 * 14 + 13  # centre past the last cell: clamped
    (no_box,) = rows(config, "loc_test")
    assert no_box["bbox"] is None and no_box["target_cell"] is None


def test_box_encoding_on_a_stride_ten_grid_and_back():
    boxes = np.array([[30, 50, 10, 10], [0, 0, 140, 140], [131, 0, 9, 20]], float)
    cells, offsets = encode_boxes(boxes, image_size=(140, 140), grid=(14, 14))
    # box 0: x 2.5..3.4 → column 3, y 4.5..5.4 → row 5; box 1: centre 6.45 → 6
    assert cells.tolist() == [5 * 14 + 3, 6 * 14 + 6, 0 * 14 + 13]
    np.testing.assert_allclose(offsets[0], [-0.5, -0.5, 0.4, 0.4])
    # decoding (official feat_grid2bbox): x1 = (xc + o + .5)·stride, w = x2 − x1 + 1
    columns, grid_rows = cells % 14, cells // 14
    x1 = (columns + offsets[:, 0] + 0.5) * 10
    y1 = (grid_rows + offsets[:, 1] + 0.5) * 10
    x2 = (columns + offsets[:, 2] + 0.5) * 10
    y2 = (grid_rows + offsets[:, 3] + 0.5) * 10
    np.testing.assert_allclose(np.stack([x1, y1, x2 - x1 + 1, y2 - y1 + 1], 1), boxes)


def test_summary_counts(done):
    _, summary = done
    assert summary["vocabulary"] == {"words": 2 + 16, "answers": 28, "modules": 9}
    train = summary["splits"]["train"]
    assert train["questions"] == train["rows"] == 3 and train["dropped_long_layouts"] == 0
    assert train["max_length"] == 7


def test_long_layouts_stop_the_stage_or_are_dropped(tmp_path, capsys):
    data = splits()
    data["val"].append(question(2, "val", "Is the cube the same size as ...?", "yes", TOO_LONG))
    config = write_dataset(tmp_path, data)
    with pytest.raises(DataError) as caught:
        tokenize(config, num_steps=T, grid=GRID)
    assert str(caught.value) == (
        f"{config.questions_dir}/CLEVR_val_questions.json: question 2: expert layout has 11 "
        "modules, more than T=9 (tokenize.drop_long_layouts: true drops such questions)"
    )
    assert not Path(config.output_dir).exists()  # nothing written

    summary = tokenize(replace(config, drop_long_layouts=True), num_steps=T, grid=GRID)
    assert summary["splits"]["val"]["dropped_long_layouts"] == 1
    assert summary["splits"]["val"]["rows"] == 2
    assert [r["position"] for r in rows(config, "val")] == [0, 1]
    assert "dropping question 2" in capsys.readouterr().out
    summary = tokenize(config, num_steps=11, grid=GRID)  # fits with T = 11
    assert rows(config, "val")[2]["layout_length"] == 11


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "question 1: empty question"),
        ("  ", "question 1: empty question"),
        ("cube " * 10_000, "question 1: question has 10000 tokens, more than "),
    ],
)
def test_empty_and_overlong_questions(tmp_path, text, message):
    data = splits()
    data["train"][1]["question"] = text
    config = write_dataset(tmp_path, data)
    with pytest.raises(DataError, match=message) as caught:
        tokenize(config, num_steps=T, grid=GRID)
    assert "CLEVR_train_questions.json" in str(caught.value)


def test_the_question_length_cap_is_a_parameter(tmp_path):
    data = splits()
    data["train"][1]["question"] = "cube " * 10_000
    config = replace(write_dataset(tmp_path, data), max_question_tokens=10_000)
    summary = tokenize(config, num_steps=T, grid=GRID)
    assert summary["splits"]["train"]["max_length"] == 10_000


def test_missing_answers(tmp_path):
    data = splits()
    del data["train"][2]["answer"]
    config = write_dataset(tmp_path, data)
    with pytest.raises(DataError, match="train_questions.json: question 2: missing answer \\(the"):
        tokenize(config, num_steps=T, grid=GRID)
    data = splits()
    del data["val"][0]["answer"]
    config = write_dataset(tmp_path, data)
    with pytest.raises(DataError, match="val_questions.json: question 0: missing answer \\(other"):
        tokenize(config, num_steps=T, grid=GRID)


def test_bad_program_names_the_question(tmp_path):
    data = splits()
    data["val"][1]["program"] = [node("scene"), node("count", 0), node("exist", 0)]
    config = write_dataset(tmp_path, data)
    with pytest.raises(DataError, match="val_questions.json: question 1: program has 2 candidate"):
        tokenize(config, num_steps=T, grid=GRID)


def test_a_failing_split_writes_nothing_and_keeps_old_outputs(tmp_path):
    config = write_dataset(tmp_path)
    tokenize(config, num_steps=T, grid=GRID)
    before = {p.name: p.read_bytes() for p in Path(config.output_dir).iterdir()}
    (Path(config.questions_dir) / "CLEVR_loc_test_questions.json").write_text('{"info": {}, "qu')
    with pytest.raises(DataError, match="loc_test_questions.json: malformed JSON"):
        tokenize(config, num_steps=11, grid=GRID)
    after = {p.name: p.read_bytes() for p in Path(config.output_dir).iterdir()}
    assert after == before


def test_missing_split_file(tmp_path):
    config = write_dataset(tmp_path)
    (Path(config.questions_dir) / "CLEVR_loc_val_questions.json").unlink()
    with pytest.raises(DataError, match="CLEVR_loc_val_questions.json: file not found"):
        tokenize(config, num_steps=T, grid=GRID)


def test_bad_configs(tmp_path):
    config = write_dataset(tmp_path)
    with pytest.raises(ConfigError, match="vocab_split: 'trian' is not a listed split"):
        tokenize(replace(config, vocab_split="trian"), num_steps=T, grid=GRID)
    with pytest.raises(ConfigError, match="must be a VQA split"):
        tokenize(replace(config, vocab_split="loc_train"), num_steps=T, grid=GRID)
    with pytest.raises(ConfigError, match="listed twice"):
        tokenize(replace(config, ref_splits=("val",)), num_steps=T, grid=GRID)


def test_real_clevr_sample_tokenises(tmp_path):
    config = write_dataset(tmp_path, {"train": splits()["train"]})
    shutil.copy(REAL_TEST_QUESTIONS, Path(config.questions_dir) / "CLEVR_test_questions.json")
    config = replace(config, vqa_splits=("train", "test"), ref_splits=())
    summary = tokenize(config, num_steps=T, grid=GRID)
    test_rows = rows(config, "test")
    assert len(test_rows) == 10 and all(r["layout"] is None for r in test_rows)
    assert summary["splits"]["test"]["unknown_tokens"] > 0  # a 3-question vocabulary
    assert test_rows[2]["question"].startswith("There is a purple object")
    assert ";" in test_rows[2]["question"] and test_rows[2]["length"] > 30


def test_atomic_parquet_write_leaves_no_half_file(tmp_path, monkeypatch):
    def crash(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(tables.pq, "write_table", crash)
    target = tmp_path / "out" / "train.parquet"
    with pytest.raises(KeyboardInterrupt):
        write_parquet_atomic(SCHEMA.empty_table(), target)
    assert list(target.parent.iterdir()) == []


def test_padded_token_matrix_and_reader(done):
    config, _ = done
    table = read_parquet(Path(config.output_dir) / "train.parquet", columns=["tokens", "layout"])
    tokens = padded(table["tokens"])  # [N, S]
    assert tokens.shape == (3, 7) and tokens.dtype == np.int32
    assert tokens[2, 6] == 0  # "How many things are there?" has 6 tokens, then <pad>
    assert padded(table["layout"], width=T).shape == (3, T)
    with pytest.raises(DataError, match="file not found"):
        read_parquet(Path(config.output_dir) / "nope.parquet")


def test_cli_turns_bad_data_into_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from stages import cli

    config = write_dataset(tmp_path)
    (Path(config.questions_dir) / "CLEVR_val_questions.json").write_text("{")
    params = tmp_path / "params.yaml"
    params.write_text(
        f"tokenize:\n  questions_dir: {config.questions_dir}\n  output_dir: {config.output_dir}\n"
        f"  summary_path: {config.summary_path}\n"
    )
    monkeypatch.setattr(sys, "argv", ["snmn", "tokenize", "--params", str(params)])
    with pytest.raises(SystemExit) as caught:
        cli.main()
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "CLEVR_val_questions.json: malformed JSON" in error
    assert error.count("\n") == 1


@pytest.mark.parametrize("split", ["train", "val", "loc_val"])
def test_a_questions_file_without_questions_is_one_line_and_exit_2(
    tmp_path, monkeypatch, capsys, split
):
    """What `snmn generate` with questions_per_image: 0 used to leave behind."""
    from stages import cli

    data = splits()
    data[split] = []
    config = write_dataset(tmp_path, data)
    params = tmp_path / "params.yaml"
    params.write_text(
        f"tokenize:\n  questions_dir: {config.questions_dir}\n  output_dir: {config.output_dir}\n"
        f"  summary_path: {config.summary_path}\n"
    )
    monkeypatch.setattr(sys, "argv", ["snmn", "tokenize", "--params", str(params)])
    with pytest.raises(SystemExit) as caught:
        cli.main()
    assert caught.value.code == 2
    error = capsys.readouterr().err
    path = Path(config.questions_dir) / f"CLEVR_{split}_questions.json"
    assert error.startswith(f"error: {path}: no questions in the file")
    assert error.count("\n") == 1
    assert not Path(config.output_dir).exists() and not Path(config.summary_path).exists()


def test_a_vocabulary_split_with_every_question_dropped_builds_no_empty_vocabulary(tmp_path):
    data = splits()
    data["train"] = [question(0, "train", "Is the cube the same size as ...?", "yes", TOO_LONG)]
    config = replace(write_dataset(tmp_path, data), drop_long_layouts=True)
    with pytest.raises(DataError) as caught:
        tokenize(config, num_steps=T, grid=GRID)
    assert str(caught.value).startswith(
        f"{config.questions_dir}/CLEVR_train_questions.json: all 1 questions were dropped"
    )
    assert "vocabularies would be empty" in str(caught.value)
    assert not Path(config.output_dir).exists()


def test_box_targets_match_the_models_encoding():
    torch = pytest.importorskip("torch")
    from snmn.boxes import BoxGrid
    from snmn.boxes import encode_boxes as model_encode_boxes

    rng = np.random.default_rng(0)
    boxes = np.concatenate([rng.uniform(-20, 480, (2000, 2)), rng.uniform(1, 200, (2000, 2))], 1)
    boxes[:500] = np.round(boxes[:500])  # integer boxes hit the half-way rounding cases
    cells, offsets = encode_boxes(boxes, image_size=(320, 480), grid=(14, 14))
    model_cells, model_offsets = model_encode_boxes(torch.tensor(boxes), BoxGrid())
    np.testing.assert_array_equal(cells, model_cells.numpy())
    np.testing.assert_allclose(offsets, model_offsets.numpy(), atol=1e-12)
