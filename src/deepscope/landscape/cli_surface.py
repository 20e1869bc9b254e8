"""CLI sub-commands of deepscope.landscape (argument parsing and printing only).

`deepscope.cli` adds every adder listed in COMMANDS (top-level) and EXPERIMENTS
(`deepscope experiment NAME`); DeepscopeErrors become exit code 2 with one line.
"""
from __future__ import annotations

COMMANDS: list = []
EXPERIMENTS: list = []
