"""The thread policy: OMP_WAIT_POLICY=PASSIVE before torch loads, and one --threads option."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from aniportraitgan.cli import build_parser, main

# Every heavy command (sub-command path); each must take --threads.
HEAVY = [
    ["train"], ["animate"], ["generate"], ["evaluate"], ["demo"], ["data", "synth"], ["data", "prepare"],
    ["facerecon", "train"], ["bench", "generator"], ["bench", "body"], ["bench", "train"], ["serve"],
    ["track"], ["invert"],
]

# Records the wait policy at the moment torch is first imported.
PROBE = """
import importlib.abc, os, sys
seen = []
class Probe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
        return None
sys.meta_path.insert(0, Probe())
import aniportraitgan.cli
assert "torch" in sys.modules
print(seen[0])
"""


def _policy_at_torch_import(env_policy: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_passive_policy_is_set_before_torch_is_imported():
    assert _policy_at_torch_import(None) == "PASSIVE"


def test_a_policy_from_the_environment_is_kept():
    assert _policy_at_torch_import("ACTIVE") == "ACTIVE"


def _subcommands(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


@pytest.mark.parametrize("path", HEAVY, ids=" ".join)
def test_every_heavy_command_takes_threads(path):
    parser = build_parser()
    for name in path:
        choices = _subcommands(parser)
        if name not in choices:
            pytest.skip(f"command {' '.join(path)} not registered yet")
        parser = choices[name]
    assert "--threads" in parser._option_string_actions, f"{' '.join(path)} has no --threads"
    action = parser._option_string_actions["--threads"]
    assert action.type is int and action.default is None and action.dest == "threads"


def test_threads_is_applied_and_checked(capsys):
    before = torch.get_num_threads()
    try:
        assert main(["bench", "body", "--threads", "0"]) == 2
        assert "--threads must be >= 1" in capsys.readouterr().err
        # a run that fails after apply_threads still shows the option took effect
        assert main(["bench", "body", "--threads", "1", "--repeats", "0"]) == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
