"""Evaluation metrics on hand-made predictions: counts, type routing, IoU 0.5, faithfulness."""

import json

import numpy as np
import pytest
import torch

from pipeline.clevr.readers import ProgramNode, Scene, SceneObject
from pipeline.clevr.render import object_ids, run_lengths
from pipeline.clevr.world import CAMERA_FOV_DEGREES
from pipeline.config import TokenizeConfig
from pipeline.data.datasets import QuestionTable, read_question_table
from pipeline.data.tokenization import tokenize
from pipeline.evaluation.baseline import (
    QuestionOnlyModel,
    predict_question_only,
    train_question_only,
)
from pipeline.evaluation.evaluate import log_numbers
from pipeline.evaluation.faithfulness import FaithfulnessMeter, layout_with_nodes
from pipeline.evaluation.metrics import (
    SplitPredictions,
    layout_metrics,
    module_usage,
    question_type,
    ref_metrics,
    vqa_metrics,
)
from pipeline.evaluation.paper import comparison, comparison_markdown, describe_dataset
from snmn.boxes import BoxGrid
from snmn.config import ModelConfig
from snmn.layout import MODULE_INDEX, program_to_layout

T = 4
NAN_BOX = [np.nan] * 4


def node(function, *inputs, value=None):
    return {"function": function, "inputs": list(inputs), "value_inputs": [value] if value else []}


# "How many cubes?", "Any spheres?", "More cubes than spheres?", "What color is the cube?",
# "Is the cube the same size as the sphere?" — one of each question type, by the last function.
CUBES = [node("scene"), node("filter_shape", 0, value="cube")]
SPHERES = [node("scene"), node("filter_shape", 0, value="sphere")]
PROGRAMS = {
    "count": CUBES + [node("count", 1)],
    "exist": SPHERES + [node("exist", 1)],
    "compare_number": CUBES
    + [node("count", 1), *SPHERES[:1], node("filter_shape", 3, value="sphere")]
    + [node("count", 4), node("greater_than", 2, 5)],
    "query_attribute": CUBES + [node("unique", 1), node("query_color", 2)],
    "compare_attribute": CUBES
    + [node("unique", 1), node("query_size", 2), node("scene")]
    + [node("filter_shape", 4, value="sphere"), node("unique", 5), node("query_size", 6)]
    + [node("equal_size", 3, 7)],
}


def table(types, families, answers, layouts=None, boxes=None):
    size = len(types)
    return QuestionTable(
        split="val",
        image_index=np.zeros(size, np.int64),
        tokens=np.ones((size, 3), np.int64),
        lengths=np.full(size, 3, np.int64),
        answers=np.asarray(answers, np.int64),
        layouts=np.asarray(layouts if layouts is not None else -np.ones((size, T)), np.int64),
        target_cells=np.full(size, -1, np.int64),
        offsets=np.full((size, 4), np.nan, np.float32),
        boxes=np.asarray(boxes if boxes is not None else [NAN_BOX] * size, np.float32),
        question_types=list(types),
        families=np.asarray(families, np.int64),
        box_grid=BoxGrid(),
    )


def predictions(rows, answers=None, boxes=None, modules=None):
    size = len(rows)
    return SplitPredictions(
        rows=np.asarray(rows, np.int64),
        answers=np.asarray(answers if answers is not None else [-1] * size, np.int64),
        boxes=np.asarray(boxes if boxes is not None else [NAN_BOX] * size, np.float64),
        modules=np.asarray(modules if modules is not None else np.zeros((size, T)), np.int64),
    )


def test_question_types_route_from_the_last_program_function():
    for expected, program in PROGRAMS.items():
        assert question_type(program[-1]["function"]) == expected
    assert question_type("less_than") == question_type("equal_integer") == "compare_number"
    assert question_type("equal_color") == "compare_attribute"
    assert question_type("query_material") == "query_attribute"
    assert question_type(None) == "unknown"


def test_vqa_counts_overall_per_type_and_per_family():
    types = ["count", "count", "exist", "compare_number", "query_attribute", "query_attribute"]
    truth = table(types, families=[0, 0, 1, 2, 3, 3], answers=[3, 1, 0, 0, 5, -1])
    # right, wrong, right, wrong, right, unknown answer (a test-split row: never counted)
    found = vqa_metrics(predictions(range(6), answers=[3, 2, 0, 1, 5, 5]), truth, {3: "query"})
    assert (found["correct"], found["total"], found["questions"]) == (3, 5, 6)
    assert found["accuracy"] == pytest.approx(0.6)
    per_type = {name: (e["correct"], e["total"]) for name, e in found["per_type"].items()}
    assert per_type == {
        "count": (1, 2),
        "exist": (1, 1),
        "compare_number": (0, 1),
        "query_attribute": (1, 1),
    }
    assert list(found["per_type"]) == ["count", "exist", "compare_number", "query_attribute"]
    assert found["per_family"]["3"] == {"correct": 1, "total": 1, "accuracy": 1.0, "name": "query"}
    assert sum(e["total"] for e in found["per_family"].values()) == found["total"]


def test_tokenised_questions_route_their_type_from_the_last_function(tmp_path):
    """The real path: questions JSON → tokenize → table → per-type counts."""
    entries = []
    for index, (kind, program) in enumerate(PROGRAMS.items()):
        answer = {"count": "2", "query_attribute": "red"}.get(kind, "yes")
        entries.append(
            {
                "split": "train",
                "image_index": index,
                "image_filename": f"CLEVR_train_{index:06d}.png",
                "question": f"question {kind}?",
                "answer": answer,
                "program": program,
                "question_family_index": index,
            }
        )
    folder = tmp_path / "questions"
    folder.mkdir()
    (folder / "CLEVR_train_questions.json").write_text(
        json.dumps({"info": {"version": "1.0"}, "questions": entries})
    )
    config = TokenizeConfig(
        questions_dir=str(folder),
        output_dir=str(tmp_path / "tokens"),
        summary_path=str(tmp_path / "summary.json"),
        vqa_splits=("train",),
        ref_splits=(),
    )
    tokenize(config, num_steps=9, grid=(4, 4))
    questions = read_question_table(tmp_path / "tokens", "train", 9)
    assert questions.question_types == list(PROGRAMS)
    answers = questions.answers.copy()
    answers[[1, 3]] = (answers[[1, 3]] + 1) % 3  # exist and query_attribute answered wrong
    rows = list(range(len(questions)))
    found = vqa_metrics(predictions(rows, answers=answers, modules=np.zeros((5, 9))), questions)
    right = {name: entry["correct"] for name, entry in found["per_type"].items()}
    assert right == {
        "count": 1,
        "exist": 0,
        "compare_number": 1,
        "query_attribute": 0,
        "compare_attribute": 1,
    }


def test_p_at_1_counts_iou_of_exactly_one_half():
    truth = [[0, 0, 10, 10]] * 5  # +1 convention: 100 pixels
    guesses = [
        [0, 0, 10, 10],  # IoU 1
        [0, 0, 10, 5],  # IoU 50 / 100 = 0.5 exactly: found
        [0.5, 0, 10, 5],  # IoU 47.5 / 102.5 < 0.5: missed
        [20, 20, 5, 5],  # no overlap
        NAN_BOX,  # no prediction: missed
    ]
    found = ref_metrics(
        predictions(range(5), boxes=guesses),
        table(["unknown"] * 5, [-1] * 5, [-1] * 5, None, truth),
    )
    assert (found["correct"], found["total"]) == (2, 5)
    assert found["p_at_1"] == pytest.approx(0.4)
    assert found["mean_iou"] == pytest.approx((1 + 0.5 + 47.5 / 102.5) / 5)


def test_vqa_rows_without_a_box_are_not_counted_for_p_at_1():
    truth = table(["count"] * 2, [0, 0], [1, 1], None, [[0, 0, 4, 4], NAN_BOX])
    found = ref_metrics(predictions([0, 1], boxes=[[0, 0, 4, 4], [0, 0, 4, 4]]), truth)
    assert (found["correct"], found["total"], found["questions"]) == (1, 1, 2)


def test_layout_agreement_per_step_and_whole_layout():
    find, describe, noop = MODULE_INDEX["Find"], MODULE_INDEX["DescribeOne"], MODULE_INDEX["NoOp"]
    expert = [[find, describe, noop, noop], [find, find, describe, noop], [-1] * T]
    chosen = [[find, describe, noop, noop], [find, describe, describe, noop], [find] * T]
    truth = table(["count"] * 3, [0] * 3, [0] * 3, layouts=expert)
    found = layout_metrics(predictions(range(3), modules=chosen), truth)
    assert (found["step_correct"], found["step_total"]) == (7, 8)  # row 2 has no layout
    assert [step["correct"] for step in found["per_step"]] == [2, 1, 2, 2]
    assert found["exact"] == {"correct": 1, "total": 2, "accuracy": 0.5}


def test_module_usage_counts_the_argmax_module_of_every_step():
    find, scene = MODULE_INDEX["Find"], MODULE_INDEX["Scene"]
    found = module_usage(predictions(range(3), modules=[[find] * T, [find] * T, [scene] * T]))
    first = found["per_step"][0]
    assert first["counts"]["Find"] == 2 and first["counts"]["Scene"] == 1
    assert sum(first["counts"].values()) == 3
    assert first["shares"]["Find"] == pytest.approx(2 / 3)


def test_a_question_counted_twice_is_an_error():
    with pytest.raises(ValueError, match="twice"):
        predictions([0, 1, 1])


# ---------------------------------------------------------------------------------------------
# Faithfulness
# ---------------------------------------------------------------------------------------------


def structure(program):
    return [(n["function"], tuple(n["inputs"])) for n in program]


def test_layout_steps_name_their_program_nodes():
    red_cube_left_of_sphere = [
        node("scene"),
        node("filter_shape", 0, value="sphere"),
        node("unique", 1),
        node("relate", 2, value="left"),
        node("filter_color", 3, value="red"),
        node("filter_shape", 4, value="cube"),
        node("exist", 5),
    ]
    steps = layout_with_nodes(structure(red_cube_left_of_sphere))
    # the Filter after Transform names the last filter (the narrowest set)
    assert steps == [("Find", 1), ("Transform", 3), ("Filter", 5), ("DescribeOne", 6)]
    for program in [*PROGRAMS.values(), red_cube_left_of_sphere]:
        modules = [module for module, _ in layout_with_nodes(structure(program))]
        assert modules == program_to_layout(structure(program))
    compare = layout_with_nodes(structure(PROGRAMS["compare_number"]))
    assert compare == [("Find", 1), ("Find", 4), ("DescribeTwo", 6)]


def thing(color, shape, x, y, depth=10.0, size="large"):
    return SceneObject(shape, color, "rubber", size, (0.0, 0.0, 0.0), (x, y, depth), 0.0, None)


def scene_with_masks(objects, ids):
    masks = tuple(run_lengths(ids, len(objects)))
    return Scene(0, "val", 0, "x.png", tuple(objects), {}, {}, masks)


def test_attention_share_on_the_objects_a_find_selects():
    """8×4 image on a 2×2 grid (cells of 4×2 pixels): the red cube fills 2 of the 8 pixels of
    the top-left cell, the blue sphere 4 pixels of the bottom-right cell."""
    ids = np.zeros((4, 8), np.int64)
    ids[0, 0:2] = 1  # red cube
    ids[2:4, 6:8] = 2  # blue sphere
    scene = scene_with_masks([thing("red", "cube", 1, 0), thing("blue", "sphere", 7, 3)], ids)
    program = tuple(
        ProgramNode(n["function"], tuple(n["inputs"]), tuple(n["value_inputs"]))
        for n in [node("scene"), node("filter_color", 0, value="red"), node("exist", 1)]
    )
    meter = FaithfulnessMeter(
        programs=[program, None],
        scenes={0: scene},
        image_index=np.zeros(2, np.int64),
        grid=(2, 2),
        image_size=(4, 8),
    )
    attention = np.zeros((2, 3, 4))  # [B, T, N]: step 0 is Find, step 1 DescribeOne
    attention[:, :, 0] = 0.5  # half on the top-left cell (a quarter of it is red cube)
    attention[:, :, 3] = 0.5
    meter.add(np.array([0, 1]), attention)
    summary = meter.summary()
    assert summary["questions"] == 1 and summary["skipped_questions"] == 1
    assert summary["objects_from"] == "scene masks"
    find = summary["per_module"]["Find"]
    assert find["steps"] == 1  # DescribeOne pushes no attention: not scored
    assert find["attention_on_objects"] == pytest.approx(0.5 * 2 / 8)
    assert find["uniform_attention_on_objects"] == pytest.approx((2 / 8) / 4)
    assert summary["per_module"]["all"]["steps"] == 1


def test_objects_without_masks_are_discs_nearer_over_farther():
    far = thing("red", "cube", 100, 100, depth=12.0)
    near = thing("blue", "sphere", 130, 100, depth=8.0, size="small")
    labels = object_ids(Scene(0, "val", 0, "x.png", (far, near), {}, {}, None), (320, 480), "x")
    focal_pixels = 240 / np.tan(np.radians(CAMERA_FOV_DEGREES / 2))  # 480 pixels wide
    far_radius = focal_pixels * 0.7 / 12.0  # about 31 pixels
    assert labels[100, 100] == 1 and labels[100, int(100 - far_radius) + 2] == 1
    assert labels[100, int(100 - far_radius) - 2] == 0
    assert labels[100, 128] == 2  # inside both discs: the nearer one is seen


# ---------------------------------------------------------------------------------------------
# The paper table, MLflow names, the question-only baseline
# ---------------------------------------------------------------------------------------------


def test_the_comparison_places_the_run_in_its_own_setting_and_says_which_dataset():
    mini = describe_dataset({"version": "mini-clevr 1.0"}, "val", {"pretrained": False})
    assert not mini["comparable"] and "mini-CLEVR" in mini["name"]
    table_ = comparison("vqa", True, {"vqa_accuracy": 0.5, "ref_p_at_1": None}, mini)
    mine = [row for row in table_["rows"] if row["this_run"] is not None]
    assert [(r["setting"], r["paper"], r["port"], r["this_run"]) for r in mine] == [
        ("vqa_gt_layout", 96.6, 96.1, 50.0)
    ]
    text = comparison_markdown(table_)
    assert "mini-CLEVR" in text and "NOT comparable" in text and "ronghanghu/snmn" in text
    real = describe_dataset(
        {"version": "1.0"}, "val", {"pretrained": True, "backbone": "resnet101"}
    )
    assert real["comparable"] and real["name"] == "CLEVR v1.0"
    joint = comparison("joint", False, {"vqa_accuracy": 0.9, "ref_p_at_1": 0.8}, real)
    assert [r["this_run"] for r in joint["rows"] if r["this_run"]] == [90.0, 80.0]


def test_the_note_says_what_the_model_was_trained_on_where_the_paper_differs():
    features = {"pretrained": True, "backbone": "resnet101"}
    offline = {"dataset_version": "mini-clevr 1.0", "split": "train", "iterations": 2400}
    on_real = describe_dataset({"version": "1.0"}, "val", features, training=offline)
    assert not on_real["comparable"] and on_real["name"] == "CLEVR v1.0"
    assert on_real["reasons"] == [
        "the model was trained on mini-CLEVR (mini-clevr 1.0, train), not on CLEVR v1.0 train",
        "the model was trained for 2,400 iterations; the paper's for 200,000",
    ]
    official = {"dataset_version": "1.0", "split": "train", "iterations": 200_000}
    assert describe_dataset({"version": "1.0"}, "val", features, training=official)["comparable"]


class Collecting:
    def __init__(self):
        self.metrics = {}

    def log_metrics(self, metrics, step):
        self.metrics.update(metrics)


def test_every_number_becomes_one_mlflow_metric_named_by_its_path():
    tracker = Collecting()
    results = {"vqa": {"accuracy": 0.5, "split": "val", "per_step": [{"correct": 2}], "ok": True}}
    log_numbers(tracker, "eval", results, step=3)
    assert tracker.metrics == {"eval.vqa.accuracy": 0.5, "eval.vqa.per_step.1.correct": 2.0}


def test_the_question_only_baseline_learns_answers_from_words(one_torch_thread):
    """Answer = the question's second word: a blind model can learn that, and must."""
    generator = np.random.default_rng(0)
    tokens = generator.integers(2, 6, size=(64, 3))
    questions = table(["query_attribute"] * 64, [0] * 64, answers=tokens[:, 1] - 2)
    questions.tokens = tokens
    config = ModelConfig(
        vocab_size=6, num_answers=4, embed_dim=8, lstm_dim=16, vqa_hidden_dim=16, dropout_keep=1.0
    )
    assert isinstance(
        QuestionOnlyModel(config)(torch.from_numpy(tokens[:2]), torch.tensor([3, 3])), torch.Tensor
    )
    model = train_question_only(config, questions, 150, 32, 1e-2, seed=0, device="cpu")
    found = vqa_metrics(
        predict_question_only(model, questions, list(range(64)), 16, "cpu"), questions
    )
    assert found["accuracy"] == 1.0
