"""Exceptions meant for people: the CLI prints them as one line, without a traceback."""

from __future__ import annotations


class CosimError(Exception):
    """Expected bad input or environment: the message says what, where and what to do."""


class ConfigError(CosimError):
    """A scenario/config file is wrong; the message names the file and the key."""


class SumoDied(CosimError):
    """SUMO stopped answering (crash, error in its inputs, killed) in the middle of a run."""
