"""The two errors a user can fix, each one line: stages/cli.py prints it and exits with status 2.

`model.embed_dim: 0` in params.yaml is a ConfigError naming the key; a CLEVR questions file whose
question 17 has no program, or a feature shard whose bytes changed, is a DataError naming the file
and the index. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A params.yaml value that does not fit the Config schema (message names the key)."""


class DataError(ValueError):
    """Malformed dataset input; the message is one line naming the file and the index."""
