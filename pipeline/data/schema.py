"""The tokens table: one row per question, its Parquet schema, and what tokenize writes beside it.

"What color is the large cube?" becomes one row: question_index, its token ids [S], answer id,
the expert layout [T] (Find, DescribeOne, then NoOp), its question type query_attribute; a
CLEVR-Ref row carries its box, the grid cell of the box centre and the offsets from that cell.
The schema's metadata ("snmn") records how the rows were made: TOKENS_FORMAT, the questions'
info.version, T, the (H, W) grid and the (height, width) image size the boxes refer to, the
vocabulary split and the module names. datasets.py reads the rows, tokenization.py writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

BOX = pa.list_(pa.float32())  # 4 floats; not fixed_size_list: pyarrow 25 misreads its nulls
TOKENS_FORMAT = "snmn-tokens/2"  # 2: image_size is (height, width), as everywhere else

SCHEMA = pa.schema(
    [
        ("question_index", pa.int64()),
        ("position", pa.int64()),  # index of the question in its JSON file
        ("split", pa.string()),
        ("image_index", pa.int64()),
        ("image_filename", pa.string()),
        ("question", pa.string()),
        ("tokens", pa.list_(pa.int32())),  # [S] word ids, no padding
        ("length", pa.int32()),
        ("answer", pa.string()),  # null on test and CLEVR-Ref splits
        ("answer_id", pa.int32()),  # null also when the answer is not in the vocabulary
        ("layout", pa.list_(pa.int8())),  # [T] module ids padded with NoOp; null: no program
        ("layout_length", pa.int8()),  # modules before the NoOp padding
        ("family", pa.int32()),  # question_family_index
        ("question_type", pa.string()),  # count | exist | compare_number | ... ; null: no program
        ("bbox", BOX),  # CLEVR-Ref target [x, y, w, h] in pixels
        ("target_cell", pa.int32()),  # row * W + column of the box centre on the H×W grid
        ("offsets", BOX),  # (x1 - xc, y1 - yc, x2 - xc, y2 - yc) in grid units
    ]
)


def tokens_metadata(path: str | Path) -> dict[str, Any]:
    """What `snmn tokenize` wrote into a tokens file's schema ({} if it is not there)."""
    try:
        schema = pq.read_schema(path)
        return json.loads((schema.metadata or {}).get(b"snmn", b"{}"))
    except (OSError, ValueError, pa.ArrowException):
        return {}
