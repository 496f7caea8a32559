"""`ml-platform status` on a fresh home and without MLflow; every command's help text."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from ml_platform.cli.main import main, parser
from tests.e2e import loans


def test_status_on_a_fresh_home_says_nothing_happened_yet(
    loans_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", loans.MODEL]) == 0
    output = capsys.readouterr().out
    assert "champion       no champion yet (train one: ml-platform run loan_default)" in output
    assert "last training  no training run yet" in output
    assert "gates          no evaluation yet" in output
    assert "drift          no drift report yet" in output


def test_status_says_mlflow_is_unreachable_and_exits_1(
    loans_spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:secret@127.0.0.1:{port}")
    assert main(["status", loans.MODEL]) == 1
    captured = capsys.readouterr()
    assert f"MLflow at http://127.0.0.1:{port} is unreachable" in captured.err
    assert "secret" not in captured.err + captured.out
    # What does not need MLflow is still shown.
    assert "last training  no training run yet" in captured.out


def test_status_refuses_an_unknown_model(
    loans_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "loan_defualt"]) == 2
    assert "unknown model 'loan_defualt' (did you mean 'loan_default'" in capsys.readouterr().err


def test_every_command_and_option_has_a_paragraph_and_an_example() -> None:
    (commands,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {
        "run",
        "status",
        "init",
        "validate",
        "demo",
        "drift-alert",
        "calls",
        "serve",
    }
    for name, command in commands.choices.items():
        assert command.description and len(command.description.split()) > 30, name
        assert f"\nexamples:\n  ml-platform {name}" in command.description, name
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.dest}"
            if action.option_strings and action.dest not in ("model",):
                assert "Example" in action.help, f"{name} {action.option_strings}"
