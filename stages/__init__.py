"""Thin adapters that DVC (and people) call: parse options, build Config, call one pipeline step."""
