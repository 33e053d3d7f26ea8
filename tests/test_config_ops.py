"""Configuration for operations: the example file, check-config, secrets from the environment,
and the [web] [mail] [admin] [limits] tables with their located errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from softswitch.cli.app import app
from softswitch.config import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "softswitch.example.toml"


def test_the_example_file_is_complete_and_loads() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.trunk is not None and config.trunk.password == "change-me"
    assert config.web is not None and config.web.listen == ("127.0.0.1", 8080)
    assert config.mail is not None and config.mail.address == "callback@example.net"
    assert config.mail.senders == {"815012345678": ("alice@example.com", "alice@example.org")}
    assert config.mail.trusted_relays == ("127.0.0.1",)
    assert config.admin.token is not None and config.admin.listen == ("127.0.0.1", 8090)
    assert config.limits.per_source == 10 and config.drain_timeout == 300
    # Every key the loader knows appears in the example (so the example documents them all).
    from softswitch.config import _KEYS

    text = EXAMPLE.read_text()
    for table, keys in _KEYS.items():
        for key in keys:
            forms = (f"{key} =", f"[{key}]", f"[[{key}]]", f"[{table}.{key}]")
            assert any(form in text for form in forms), (table, key)


def test_secrets_from_the_environment_win(tmp_path: Path) -> None:
    env = {
        "SOFTSWITCH_TRUNK_PASSWORD": "from-env",
        "SOFTSWITCH_ADMIN_TOKEN": "env-token-0123456789",
        "SOFTSWITCH_WEB_SECRET": "env-secret-0123456789",
        "SOFTSWITCH_DB": "sqlite:////tmp/x.sqlite3",
    }
    config = load_config(EXAMPLE, env=env)
    assert config.trunk is not None and config.trunk.password == "from-env"
    assert config.admin.token == "env-token-0123456789"
    assert config.web is not None and config.web.secret == "env-secret-0123456789"
    assert config.db_url == "sqlite:////tmp/x.sqlite3"
    # A password alone makes no trunk, a secret alone no web page; a token alone is the API.
    bare = load_config(None, env=env)
    assert bare.trunk is None and bare.web is None
    assert bare.admin.token == "env-token-0123456789"


@pytest.mark.parametrize(
    ("text", "line", "where", "message"),
    [
        ('[web]\nlisten = "0.0.0.0:http"\n', 2, "[web] listen", "bad port"),
        ('[web]\nsecret = "short"\n', 2, "[web] secret", "too short"),
        ('[web]\ndefault_language = "fr"\n', 2, "[web] default_language", "unknown language"),
        ('[mail]\nlisten = "127.0.0.1:25"\n', 1, "[mail]", "needs 'address'"),
        ('[mail]\naddress = "no-at-sign"\n', 2, "[mail] address", "not an e-mail"),
        ('[mail]\naddress = "a@b.c"\n[mail.senders]\n"x1" = ["a@b.c"]\n', 3, "[mail] senders", ""),
        (
            '[mail]\naddress = "a@b.c"\ntrusted_relays = ["mx.example.net"]\n',
            3,
            "[mail] trusted_relays",
            "not an address or network",
        ),
        ('[admin]\ntokn = "0123456789abcdef0"\n', 2, "[admin] tokn", "did you mean 'token'"),
        ("[limits]\nper_source = 0\n", 2, "[limits] per_source", "between 1"),
        ("[limits]\nper_trigger = 2.5\n", 2, "[limits] per_trigger", "integer"),
        ("[service]\ndrain_timeout = -1\n", 2, "[service] drain_timeout", "between 0"),
    ],
)
def test_errors_name_the_file_line_and_key(
    tmp_path: Path, text: str, line: int, where: str, message: str
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert (caught.value.path, caught.value.line, caught.value.key) == (str(path), line, where)
    assert message in caught.value.message


def test_check_config_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("SOFTSWITCH_TRUNK_PASSWORD", "SOFTSWITCH_ADMIN_TOKEN", "SOFTSWITCH_DB"):
        monkeypatch.delenv(variable, raising=False)
    runner = CliRunner()
    good = runner.invoke(app, ["check-config", str(EXAMPLE)])
    assert good.exit_code == 0, good.output
    assert good.output.splitlines()[0] == f"{EXAMPLE}: OK"
    assert "web      http://127.0.0.1:8080/" in good.output
    assert "admin    http://127.0.0.1:8090/api/" in good.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[sip]\nlisten = "127.0.0.1:5060"\n\n[trunk]\nusernme = "alice"\n')
    result = runner.invoke(app, ["check-config", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:5: [trunk] usernme: unknown key (did you mean 'username'?" in result.output
    monkeypatch.setenv("SOFTSWITCH_DB", "postgresql://ops:hunter2@db.example.net/ss")
    shown = runner.invoke(app, ["check-config", str(EXAMPLE)])
    assert "postgresql://ops:***@db.example.net/ss" in shown.output
    assert "hunter2" not in shown.output
