"""Box encoding on the feature grid, decoding, IoU (+1 pixel convention)."""

import math

import torch

from snmn.boxes import BoxGrid, box_iou, decode_boxes, encode_boxes, predict_boxes

GRID = BoxGrid()  # 14×14 over 480×320


def test_grid_strides_are_the_official_ones():
    assert GRID.stride_x == 480 / 14 and GRID.stride_y == 320 / 14


def test_encode_then_decode_returns_the_box():
    generator = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 400, (500, 2), generator=generator)
    wh = torch.randint(1, 80, (500, 2), generator=generator)
    boxes = torch.cat([xy, wh], dim=1)  # integer pixel boxes, as in CLEVR-Ref
    cells, offsets = encode_boxes(boxes, GRID)
    assert cells.dtype == torch.int64 and cells.min() >= 0 and cells.max() < 14 * 14
    decoded = decode_boxes(cells, offsets, GRID)
    assert torch.allclose(decoded, boxes.double(), rtol=0, atol=1e-9)


def test_encode_a_hand_computed_box():
    # x = 100..149, y = 50..89; grid x1 = 100/(480/14) - .5, x2 = 149/(480/14) - .5, etc.
    cells, offsets = encode_boxes([100, 50, 50, 40], GRID)
    gx1, gx2 = 100 * 14 / 480 - 0.5, 149 * 14 / 480 - 0.5
    gy1, gy2 = 50 * 14 / 320 - 0.5, 89 * 14 / 320 - 0.5
    xc, yc = round((gx1 + gx2) / 2), round((gy1 + gy2) / 2)
    assert cells.item() == yc * 14 + xc == 3 * 14 + 3  # centre (3.13, 2.54)
    expected = [gx1 - xc, gy1 - yc, gx2 - xc, gy2 - yc]
    assert all(math.isclose(a, b) for a, b in zip(offsets.tolist(), expected, strict=True))


def test_the_centre_cell_is_clamped_to_the_grid():
    cells, _ = encode_boxes([[0, 0, 1, 1], [479, 319, 1, 1]], GRID)
    assert cells.tolist() == [0, 14 * 14 - 1]


def test_iou_uses_the_plus_one_pixel_convention():
    box = [0, 0, 10, 10]  # pixels 0..9
    assert box_iou(box, box).item() == 1.0
    assert math.isclose(box_iou(box, [5, 0, 10, 10]).item(), 50 / 150)
    assert box_iou(box, [10, 0, 10, 10]).item() == 0.0  # touching, no shared pixel
    assert math.isclose(box_iou(box, [9, 9, 10, 10]).item(), 1 / 199)  # one shared pixel


def test_predict_boxes_decodes_the_best_cell():
    boxes = torch.tensor([[100.0, 50.0, 50.0, 40.0], [300.0, 200.0, 30.0, 60.0]])
    cells, offsets = encode_boxes(boxes, GRID)
    scores = torch.zeros(2, 196)
    scores[torch.arange(2), cells] = 1.0
    box_offsets = torch.randn(2, 196, 4)
    box_offsets[torch.arange(2), cells] = offsets.float()
    predicted = predict_boxes(scores, box_offsets, GRID)
    assert (box_iou(predicted, boxes) > 0.999).all()
