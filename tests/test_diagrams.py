"""docs/state-machines.md is what scripts/diagrams.py draws from the tables; every table is whole.

The documentation cannot drift: change or add a table without running
``scripts/diagrams.py --write`` and the first test fails, saying so.
"""

from __future__ import annotations

import importlib.util
import sys
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from softswitch import fsm

ROOT = Path(__file__).resolve().parent.parent


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("diagrams", ROOT / "scripts" / "diagrams.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("diagrams", module)
    spec.loader.exec_module(module)
    return module


diagrams = load_script()


def test_committed_doc_is_what_the_tables_draw() -> None:
    committed = (ROOT / "docs" / "state-machines.md").read_text(encoding="utf-8")
    assert committed == diagrams.render(), (
        "docs/state-machines.md is out of date: run .venv/bin/python scripts/diagrams.py --write"
    )


def test_every_table_in_the_package_is_found() -> None:
    """As many tables per file as the source builds (none made where the script cannot see)."""
    in_source: dict[str, int] = {}
    for path in sorted((ROOT / "softswitch").rglob("*.py")):
        count = path.read_text(encoding="utf-8").count("fsm.Table(")
        if count and path.name != "fsm.py":
            in_source[path.relative_to(ROOT).as_posix()] = count
    found: dict[str, int] = {}
    for machine in diagrams.machines():
        where = str(machine.where).split(":")[0]
        found[where] = found.get(where, 0) + 1
    assert found == in_source


def test_the_project_machines_are_all_drawn() -> None:
    where = {str(m.where) for m in diagrams.machines()}
    assert where >= {
        "softswitch/service/callflow.py: TABLE",
        "softswitch/service/trigger.py: TABLE",
        "softswitch/store/repos/callbacks.py: TABLE",
        "softswitch/node/outbound.py: TABLE",
        "softswitch/node/testline.py: TABLE",
        "softswitch/sip/dialog.py: TABLE",
        "softswitch/sip/registration.py: TABLE",
        "softswitch/sip/registration.py: KEEPALIVE_TABLE",
        "softswitch/sip/transaction.py: InviteClientTransaction.TABLE",
        "softswitch/sip/transaction.py: NonInviteClientTransaction.TABLE",
        "softswitch/sip/transaction.py: InviteServerTransaction.TABLE",
        "softswitch/sip/transaction.py: NonInviteServerTransaction.TABLE",
        "softswitch/demo/carrier.py: PHONE_TABLE",
    }
    text = diagrams.render()
    for machine in diagrams.machines():
        assert f"## {machine.title}\n" in text and machine.table.mermaid() in text


@pytest.mark.parametrize("machine", diagrams.machines(), ids=lambda m: str(m.where))
def test_every_table_is_whole(machine: Any) -> None:
    """Every state of the Enum is in the table and reachable; the diagram names each one."""
    table: fsm.Table[Any, Any, Any] = machine.table
    states: type[Enum] = type(next(iter(table.initial)))
    assert table.reachable() == table.states() == frozenset(list(states))
    assert issubclass(table.error, fsm.TransitionError)
    lines = table.mermaid().splitlines()
    for state in states:
        assert any(state.name in line.split(":")[0].split() for line in lines), state


def test_write_and_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "docs" / "state-machines.md"
    monkeypatch.setattr(diagrams, "DOC", target)
    assert diagrams.main(["--write"]) == 0
    assert target.read_text(encoding="utf-8") == diagrams.render()
    assert capsys.readouterr().out == f"wrote {target}\n"
    assert diagrams.main([]) == 0
    assert capsys.readouterr().out == diagrams.render()
