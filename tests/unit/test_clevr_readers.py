"""Readers of CLEVR / CLEVR-Ref files: both program forms, the release's test split, the real
sample, the streaming JSON walk, and one clear DataError for every kind of bad input."""

import json

import pytest

from pipeline.clevr.readers import (
    ProgramNode,
    check_image_file,
    iter_questions,
    read_questions,
    read_scenes,
    stream_json,
)
from pipeline.errors import DataError
from tests.conftest import REAL_CLEVR_SAMPLE, check_images

REAL_SAMPLE = REAL_CLEVR_SAMPLE
LARGE_CUBE_PROGRAM = [
    {"inputs": [], "function": "scene", "value_inputs": []},
    {"inputs": [0], "function": "filter_size", "value_inputs": ["large"]},
    {"inputs": [1], "function": "filter_shape", "value_inputs": ["cube"]},
    {"inputs": [2], "function": "unique", "value_inputs": []},
    {"inputs": [3], "function": "query_color", "value_inputs": []},
]


def entry(index=0, split="train", **fields):
    base = {
        "split": split,
        "image_index": index,
        "image_filename": f"CLEVR_{split}_{index:06d}.png",
        "question_index": index,
        "question": "What color is the large cube?",
        "answer": "red",
        "question_family_index": 3,
        "program": LARGE_CUBE_PROGRAM,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def write(tmp_path, entries, name="CLEVR_train_questions.json", key="questions", **dump):
    path = tmp_path / name
    path.write_text(json.dumps({"info": {"split": "train"}, key: entries}, **dump))
    return path


def test_official_form(tmp_path):
    path = write(tmp_path, [entry(0), entry(1, question="How many things are there?")])
    first, second = read_questions(path)
    assert (first.index, first.question_index, first.split, first.image_index) == (0, 0, "train", 0)
    assert first.image_filename == "CLEVR_train_000000.png"
    assert first.text == "What color is the large cube?"
    assert first.answer == "red" and first.family == 3 and first.bbox is None
    assert first.program[1] == ProgramNode("filter_size", (0,), ("large",))
    assert [node.function for node in first.program][-1] == "query_color"
    assert second.program[2] is first.program[2]  # one shared node object


def test_generator_raw_form_and_python_typed_answers(tmp_path):
    raw_program = [
        {"type": "scene", "inputs": [], "side_inputs": [], "_output": [0, 1, 2]},
        {"type": "filter_shape", "inputs": [0], "side_inputs": ["cube"], "_output": [1]},
        {"type": "exist", "inputs": [1], "side_inputs": [], "_output": True},
    ]
    entries = [
        entry(0, program=raw_program, answer=True),
        entry(1, program=raw_program, answer=False),
        entry(2, program=raw_program, answer=3),
    ]
    questions = read_questions(write(tmp_path, entries))
    assert [q.answer for q in questions] == ["yes", "no", "3"]
    assert questions[0].program[1] == ProgramNode("filter_shape", (0,), ("cube",))


def test_test_split_has_no_answer_and_no_program(tmp_path):
    path = write(
        tmp_path, [entry(0, "test", answer=None, program=None, question_family_index=None)]
    )
    (question,) = read_questions(path)
    assert question.answer is None and question.program is None and question.family is None


def test_clevr_ref_entry_and_refexps_file(tmp_path):
    ref = entry(0, "loc_train", question="the large cube", answer=[], bbox=[10, 20, 30, 40])
    ref["program"] = LARGE_CUBE_PROGRAM[:4]
    (question,) = read_questions(write(tmp_path, [ref], name="CLEVR_loc_loc_train_questions.json"))
    assert question.answer is None and question.bbox == (10.0, 20.0, 30.0, 40.0)
    refexp = {"refexp": "the large cube", "image_index": 4, "refexp_index": 9, "split": "val"}
    refexp["image_filename"] = "CLEVR_val_000004.png"
    refexp["program"] = LARGE_CUBE_PROGRAM[:4]
    path = write(tmp_path, [refexp], name="clevr_ref+_val_refexps.json", key="refexps")
    (question,) = read_questions(path)
    assert (question.text, question.question_index, question.image_index) == (
        "the large cube",
        9,
        4,
    )


def test_real_clevr_sample_reads():
    questions = read_questions(REAL_SAMPLE / "questions" / "CLEVR_test_questions.json")
    assert len(questions) == 10
    assert all(q.answer is None and q.program is None for q in questions)
    assert questions[0].text.startswith("What size is the brown cylinder")
    assert check_images(REAL_SAMPLE / "images" / "test", questions) == 10


def test_an_unsorted_acyclic_program_is_accepted(tmp_path):
    program = [
        {"function": "exist", "inputs": [2], "value_inputs": []},
        {"function": "scene", "inputs": [], "value_inputs": []},
        {"function": "filter_color", "inputs": [1], "value_inputs": ["red"]},
    ]
    (question,) = read_questions(write(tmp_path, [entry(program=program)]))
    assert question.program[0] == ProgramNode("exist", (2,), ())


# -- the streaming JSON walk ---------------------------------------------------------------------


def test_indented_file_and_keys_after_the_list(tmp_path):
    path = tmp_path / "CLEVR_val_questions.json"
    text = json.dumps({"info": {"split": "val"}, "questions": [entry(0, "val")], "extra": [1]})
    path.write_text(text.replace(", ", " ,\n\t ").replace(": ", " :  "))
    assert [q.split for q in read_questions(path)] == ["val"]


def test_info_after_the_list_is_still_read(tmp_path):
    path = tmp_path / "CLEVR_val_questions.json"
    raw = entry(0, "val")
    del raw["split"]
    path.write_text(json.dumps({"questions": [raw], "info": {"split": "val"}}))
    assert [q.split for q in read_questions(path)] == ["val"]


def test_empty_list_and_byte_order_mark(tmp_path):
    path = tmp_path / "CLEVR_val_questions.json"
    path.write_bytes(b'\xef\xbb\xbf{"info": {}, "questions": []}')
    assert read_questions(path) == []
    info, entries = stream_json(path, "questions")
    assert (info, list(entries)) == ({}, [])


# -- bad input: one line naming the file and the question ----------------------------------------


def node(function, inputs, values=()):
    return {"function": function, "inputs": inputs, "value_inputs": list(values)}


BAD_ENTRIES = {
    "node out of range": (
        entry(program=[node("scene", []), node("count", [7])]),
        "question 1: program node 1 (count): input 7 out of range 0..1",
    ),
    "unknown function": (
        entry(program=[node("scene", []), node("paint", [0])]),
        "question 1: program node 1: unknown function 'paint'",
    ),
    "cycle": (
        entry(program=[node("filter_color", [1], ["red"]), node("filter_shape", [0], ["cube"])]),
        "question 1: program node 1 reads node 0: the program has a cycle",
    ),
    "self loop": (
        entry(program=[node("scene", []), node("unique", [1])]),
        "question 1: program node 1 reads node 1: the program has a cycle",
    ),
    "wrong arity": (
        entry(program=[node("scene", []), node("union", [0])]),
        "question 1: program node 1 (union): expected 2 inputs, got [0]",
    ),
    "missing value input": (
        entry(program=[node("scene", []), node("filter_color", [0])]),
        "question 1: program node 1 (filter_color): expected one value input",
    ),
    "negative input": (
        entry(program=[node("scene", []), node("count", [-1])]),
        "question 1: program node 1 (count): bad input -1",
    ),
    "nested inputs": (
        entry(program=[node("scene", []), node("count", [[0]])]),
        "question 1: program node 1 (count): bad input [0]",
    ),
    "node not an object": (
        entry(program=[node("scene", []), "count"]),
        "question 1: program node 1: expected an object",
    ),
    "empty program": (entry(program=[]), "question 1: program must be a non-empty list"),
    "not an object": ("What?", "question 1: expected an object"),
    "no text": (entry(question=None), "question 1: missing 'question' text"),
    "bad image index": (entry(image_index="7"), "question 1: bad image_index '7'"),
    "file name mismatch": (
        entry(image_filename="CLEVR_train_000009.png"),
        "question 1: image_index 0 does not match file 'CLEVR_train_000009.png'",
    ),
    "bad question index": (entry(question_index="x"), "question 1: bad question_index 'x'"),
    "bad answer": (entry(answer=2.5), "question 1: bad answer 2.5"),
    "bad bbox": (entry(bbox=[1, 2, 3]), "question 1: bad bbox [1, 2, 3]"),
    "bad family": (entry(question_family_index="a"), "question 1: bad question_family_index 'a'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_bad_question_entries(tmp_path, case):
    bad, message = BAD_ENTRIES[case]
    path = write(tmp_path, [entry(0), bad])
    with pytest.raises(DataError) as caught:
        read_questions(path)
    text = str(caught.value)
    assert text == f"{path}: {message}"
    assert "\n" not in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"info": {}, "questions": [{"split": "train"', "malformed JSON"),
        ('{"info": {}, "questions": [, ]}', "malformed JSON: expected a value"),
        ('{"info": {}, "questions": []} trailing', "extra data after the top-level object"),
        ('{"questions": [], "info": {}} {', "extra data after the top-level object"),
        ("[1, 2]", "malformed JSON: expected an object"),
        ('{"info": {}}', "expected an object with a 'questions' list"),
        ('{"info": {}, "questions": {}}', "expected an object with a 'questions' list"),
        ("", "malformed JSON"),
        ("[" * 100_000, "malformed JSON"),
    ],
)
def test_malformed_files(tmp_path, content, message):
    path = tmp_path / "CLEVR_train_questions.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as caught:
        read_questions(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_malformed_after_good_entries_names_the_position(tmp_path):
    path = tmp_path / "CLEVR_train_questions.json"
    good = json.dumps(entry(0))
    path.write_text('{"info": {"split": "train"},\n"questions": [' + good + ",\n" + good + " ]]}")
    with pytest.raises(DataError, match="malformed JSON: expected '}' \\(line 3, char"):
        read_questions(path)


def test_missing_file_and_binary_file(tmp_path):
    with pytest.raises(DataError, match="nope.json: file not found"):
        read_questions(tmp_path / "nope.json")
    binary = tmp_path / "CLEVR_train_questions.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not UTF-8 text"):
        read_questions(binary)
    with pytest.raises(DataError, match="cannot read"):
        read_questions(tmp_path)


def test_iteration_stops_at_the_bad_question(tmp_path):
    path = write(tmp_path, [entry(0), entry(1), entry(2, answer=2.5)])
    seen = []
    with pytest.raises(DataError, match="question 2: bad answer"):
        for question in iter_questions(path):
            seen.append(question.index)
    assert seen == [0, 1]


# -- scenes and images -------------------------------------------------------------------------


def scene(**fields):
    objects = [
        {"shape": "cube", "color": "red", "material": "metal", "size": "large",
         "3d_coords": [0.0, 1.0, 0.7], "pixel_coords": [200, 150, 10.0], "rotation": 30.0},
        {"shape": "sphere", "color": "blue", "material": "rubber", "size": "small",
         "3d_coords": [1.0, -1.0, 0.35], "pixel_coords": [300, 180, 9.0], "rotation": 0.0},
    ]  # fmt: skip
    base = {
        "split": "val",
        "image_index": 5,
        "image_filename": "CLEVR_val_000005.png",
        "objects": objects,
        "relations": {
            "left": [[], [0]],
            "right": [[1], []],
            "front": [[1], []],
            "behind": [[], [0]],
        },
        "directions": {"left": [-1, 0, 0], "right": [1, 0, 0]},
    }
    base.update(fields)
    return base


def test_scenes_with_relations_key(tmp_path):
    path = tmp_path / "CLEVR_val_scenes.json"
    path.write_text(json.dumps({"info": {"split": "val"}, "scenes": [scene()]}))
    (read,) = read_scenes(path)
    assert read.image_index == 5 and read.objects[1].shape == "sphere"
    assert read.relationships["left"] == ((), (0,))
    assert read.objects[0].pixel_coords == (200.0, 150.0, 10.0)
    assert read.directions["right"] == (1.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"objects": [{"shape": "cube"}]}, "scene 0: object 0: missing or bad field"),
        ({"relations": {"left": [[5], []]}}, "relationships\\['left'\\]\\[0\\]"),
        ({"relations": None}, "missing 'relationships'"),
        ({"obj_bbox": [1, 2]}, "obj_bbox must map"),
        ({"directions": {"left": 3}}, "directions must map"),
        ({"image_filename": 7}, "bad image_filename 7"),
    ],
)
def test_bad_scenes(tmp_path, fields, message):
    path = tmp_path / "CLEVR_val_scenes.json"
    path.write_text(json.dumps({"info": {}, "scenes": [scene(**fields)]}))
    with pytest.raises(DataError, match=message):
        read_scenes(path)


def test_image_checks(tmp_path):
    good = tmp_path / "CLEVR_val_000003.png"
    good.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    check_image_file(good, 3)
    with pytest.raises(DataError, match="does not match image_index 4"):
        check_image_file(good, 4)
    with pytest.raises(DataError, match="image file not found"):
        check_image_file(tmp_path / "CLEVR_val_000009.png", 9)
    fake = tmp_path / "CLEVR_val_000001.png"
    fake.write_bytes(b"GIF89a")
    with pytest.raises(DataError, match="not a PNG file"):
        check_image_file(fake, 1)
