"""The paper table's pieces without training: the configurations a recipe makes, the rows built
from each run's headline figures (mean ± half the range, best, "not run"), the section's checks."""

from __future__ import annotations

import pytest

from pipeline.config import PAPER_SETTINGS, PaperTableConfig, load_config
from pipeline.errors import ConfigError
from pipeline.evaluation.paper import PUBLISHED, SETTING_NAMES
from pipeline.evaluation.paper_table import (
    build_table,
    configurations,
    seed_list,
    table_columns,
    table_markdown,
)
from tests.conftest import REPO

RECIPE = REPO / "recipes" / "paper-table.yaml"


def run(seed: int, vqa: float, **figures: float) -> dict[str, float]:
    return {"seed": seed, "vqa_accuracy": vqa, **figures}


def rows_by_key(rows):
    return {(row["setting"], row["metric"]): row for row in rows}


def test_the_six_settings_are_the_papers():
    assert PAPER_SETTINGS == tuple(SETTING_NAMES)
    assert {entry["setting"] for entry in PUBLISHED} == set(PAPER_SETTINGS)


def test_ours_is_the_mean_and_half_the_range_over_seeds_and_the_best_run():
    results = {
        "vqa_scratch": [
            run(1, 0.50, vqa_layout_exact=0.2, question_only_accuracy=0.40, faithfulness_find=2.0),
            run(2, 0.70, vqa_layout_exact=0.4, question_only_accuracy=0.42, faithfulness_find=4.0),
            run(3, 0.60, vqa_layout_exact=0.3, question_only_accuracy=0.44),
        ]
    }
    row = rows_by_key(build_table(results, {"vqa_scratch": 3}))[("vqa_scratch", "vqa_accuracy")]
    assert row["ours"] == pytest.approx({"mean": 60.0, "spread": 10.0, "best": 70.0, "runs": 3})
    assert row["best_seed"] == 2
    assert (row["paper"], row["port"]) == (93.0, 89.5)
    assert row["question_only"]["mean"] == pytest.approx(42.0)
    assert row["layout_exact"]["mean"] == pytest.approx(30.0)
    # faithfulness is a ratio to a uniform map: not scaled; two of the three runs measured it
    assert row["faithfulness"]["faithfulness_find"] == pytest.approx(
        {"mean": 3.0, "spread": 1.0, "best": 4.0, "runs": 2}
    )
    assert row["faithfulness"]["faithfulness_filter"] is None


def test_joint_rows_take_each_metric_from_its_own_split():
    joint = {"seed": 0, "vqa_accuracy": 0.8, "ref_p_at_1": 0.3, "vqa_layout_exact": 0.9}
    joint |= {"ref_layout_exact": 0.1, "question_only_accuracy": 0.4, "faithfulness_find": 5.0}
    rows = rows_by_key(build_table({"joint_gt_layout": [joint]}, {"joint_gt_layout": 1}))
    vqa, ref = rows[("joint_gt_layout", "vqa_accuracy")], rows[("joint_gt_layout", "ref_p_at_1")]
    assert (vqa["ours"]["mean"], ref["ours"]["mean"]) == pytest.approx((80.0, 30.0))
    assert (vqa["layout_exact"]["mean"], ref["layout_exact"]["mean"]) == pytest.approx((90, 10))
    assert ref["question_only"] is None and ref["faithfulness"]["faithfulness_find"] is None
    assert vqa["ours"]["spread"] == 0.0


def test_settings_without_a_finished_run_read_not_run():
    results = {"vqa_gt_layout": [run(0, 0.75)], "vqa_scratch": []}
    rows = build_table(results, {"vqa_gt_layout": 1, "vqa_scratch": 3})
    assert len(rows) == len(PUBLISHED) == 8
    markdown = table_markdown(rows, PaperTableConfig(), ["the run used mini-CLEVR"])
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    assert len(lines) == 8
    assert "**75.0 ± 0.0** (1 of 1 runs)" in lines[0] and "96.6 | 96.1" in lines[0]
    for line in lines[1:]:
        assert line.count("not run") == 2, line
    assert "**NOT comparable** with the published numbers: the run used mini-CLEVR." in markdown
    columns = table_columns(rows)
    assert {len(values) for values in columns.values()} == {8}  # one value per row, every column
    assert columns["ours_mean"][:2] == [pytest.approx(75.0), None]


def test_the_recipe_makes_one_configuration_per_gt_setting_and_one_per_seed_from_scratch():
    recipe = load_config(RECIPE)
    assert {"loc_train", "loc_val"} <= set(recipe.extract.splits)
    items = configurations(recipe)
    assert len(items) == 3 + 3 * recipe.paper_table.seeds == 12
    by_name = {item.name: item for item in items}
    scratch = by_name["joint_scratch_seed2"].config
    assert scratch.model.task == "joint" and scratch.train.seed == 2
    assert not scratch.train.use_layouts
    assert scratch.train.ref_cell_weight == scratch.train.ref_offset_weight == 0.5
    assert scratch.train.output_dir == "runs/paper-table/joint_scratch_seed2/models"
    assert scratch.evaluate.metrics_path == "runs/paper-table/joint_scratch_seed2/evaluate.json"
    assert scratch.evaluate.model_path == "runs/paper-table/joint_scratch_seed2/models/model.pt"
    assert scratch.train.mlflow_experiment == recipe.paper_table.mlflow_experiment
    expert = by_name["loc_gt_layout"].config
    assert (expert.model.task, expert.train.use_layouts) == ("ref", True)
    assert expert.train.ref_cell_weight == recipe.train.ref_cell_weight
    # every configuration trains under its own params, so under its own run name and checkpoints
    fingerprints = {item.config.fingerprint() for item in items}
    assert len(fingerprints) == len(items)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"seeds": 0}, r"paper_table\.seeds: must be >= 1, got 0"),
        ({"settings": ()}, r"paper_table\.settings: must name at least one setting"),
        ({"settings": ("vqa_gt",)}, r"paper_table\.settings: unknown setting 'vqa_gt'"),
        ({"settings": ("loc_scratch",) * 2}, r"paper_table\.settings: a setting is named twice"),
        ({"table_path": ""}, r"paper_table\.table_path: must not be empty"),
    ],
)
def test_the_section_refuses_bad_values_in_one_line_naming_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        PaperTableConfig(**values)


def test_a_params_file_with_a_bad_paper_table_section_fails_when_loaded(tmp_path):
    path = tmp_path / "params.yaml"
    for section, message in [
        ("paper_table: {seeds: many}", r"paper_table\.seeds: expected an integer, got 'many'"),
        ("paper_table: {sedes: 3}", r"paper_table\.sedes: unknown key"),
        ("paper_table: {seeds: 0}", r"^paper_table\.seeds: must be >= 1, got 0$"),
    ]:
        path.write_text(section + "\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    path.write_text("train: {seed: 1}\n")
    assert load_config(path).paper_table == PaperTableConfig()  # absent: the defaults


def test_the_table_names_the_seeds_of_the_runs_without_layouts():
    assert [seed_list(count) for count in (1, 2, 3)] == ["1", "1 and 2", "1, 2 and 3"]
