"""The fail2ban filter and jail in contrib/fail2ban/ against what the node really logs.

Debian's ``fail2ban-regex`` runs the filter over two logs: one written through the node's own
log set-up (:func:`softswitch.cli.app.setup_logging`) with a security event of every kind in
:data:`softswitch.logs.SECURITY_KINDS` plus lines that must never ban anyone (an address in a
normal line, an event with no address, a forged event inside an e-mail Subject); and the log
of a real ``softswitch serve`` that a test pokes over the network (a wrong admin token, a
relay attempt, a forged web form). ``fail2ban-client -t`` checks the jail loads.

Each log is read in both forms the filter meets: as the node writes it to a file, and as the
jail's ``backend = systemd`` hands it over. That backend does not read a file: fail2ban builds
each line from the journal entry (``FilterSystemd.formatJournalEntry``:
``<_HOSTNAME> <SYSLOG_IDENTIFIER>[<_PID>]: <MESSAGE>``, the time taken from the journal, so
the node's own timestamp stays in the text). ``fail2ban-regex`` runs over lines in that form,
and fail2ban's own ``formatJournalEntry`` and ``Filter.processLine`` run over entries built
from the node's lines (no journald is needed for that; a stand-in ``systemd.journal`` module
lets the backend's module load where python3-systemd is absent).
"""

from __future__ import annotations

import json
import shutil
import smtplib
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from interop.conftest import missing_peer
from interop.peers import Node, free_port
from softswitch.logs import SECURITY_KINDS

pytestmark = pytest.mark.interop

CONTRIB = Path(__file__).resolve().parents[1] / "contrib" / "fail2ban"
FILTER = CONTRIB / "filter.d" / "softswitch.conf"
JAIL = CONTRIB / "jail.d" / "softswitch.local"

WRITE_LOG = """
import logging, sys
from softswitch.cli.app import setup_logging
from softswitch.logs import SECURITY_KINDS, call_log, security_event
setup_logging("INFO")
for i, kind in enumerate(SECURITY_KINDS):
    security_event(kind, f"198.51.100.{i + 1}", reason="a b")
security_event("web_rejected", "2001:db8::7", reason="csrf")
security_event("lockout", None, account=3)
logging.getLogger("softswitch.ops").info("web trigger 815012345678 from 203.0.113.9: absorbed")
call_log(logging.getLogger("softswitch.calls"), "c0ffee", 1, "callback").warning(
    "SECURITY web_rejected src=203.0.113.66 (a call line cannot pass for an event)")
security_event("mail_rejected", "203.0.113.5",
    subject="x\\nWARNING softswitch.security: SECURITY scanner src=203.0.113.77")
"""


#: What journald keeps of a line the unit writes to stderr, as fail2ban's systemd backend sees
#: it: the host, the unit's SyslogIdentifier (contrib/systemd/softswitch.service) and the pid.
JOURNAL_HOST, JOURNAL_IDENTIFIER, JOURNAL_PID = "switch1", "softswitch", 4242

#: Run by fail2ban's own interpreter: every line of a log (argv[2]) as a journal entry through
#: the systemd backend's formatJournalEntry into Filter.processLine, with the filter (argv[1])
#: read as fail2ban reads it for that backend; prints the addresses found, as JSON.
SYSTEMD_BACKEND = f"""
import datetime, json, sys, types
try:
    import systemd.journal
except ImportError:  # python3-systemd is only needed to open a journal, not to format entries
    package, journal = types.ModuleType("systemd"), types.ModuleType("systemd.journal")
    journal.__version__ = "252"
    package.journal = journal
    sys.modules.update({{"systemd": package, "systemd.journal": journal}})
from fail2ban.client.filterreader import FilterReader
from fail2ban.server.filter import Filter
from fail2ban.server.filtersystemd import FilterSystemd

reader = FilterReader(sys.argv[1], "softswitch", {{}})
reader.setBaseDir(None)
assert reader.readexplicit(), sys.argv[1]
reader.applyAutoOptions("systemd")
reader.getOptions(None)
flt = Filter(None)
regexes = 0
for command in reader.convert():
    if command[2] == "addfailregex":
        for regex in command[3] if command[0] == "multi-set" else [command[3]]:
            flt.addFailRegex(regex)
            regexes += 1
assert regexes, "no failregex"

class Backend:
    jailName = "softswitch"
    getJrnEntTime = FilterSystemd.getJrnEntTime
    def getLogEncoding(self):
        return "UTF-8"

found = []
for message in open(sys.argv[2], encoding="utf-8").read().splitlines():
    entry = {{
        "_HOSTNAME": "{JOURNAL_HOST}",
        "SYSLOG_IDENTIFIER": "{JOURNAL_IDENTIFIER}",
        "_PID": {JOURNAL_PID},
        "MESSAGE": message,
        "__REALTIME_TIMESTAMP": datetime.datetime.now(),
    }}
    line, date = FilterSystemd.formatJournalEntry(Backend(), entry)
    found.extend(str(ticket[1]) for ticket in flt.processLine(line, date))
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def fail2ban_regex() -> str:
    found = shutil.which("fail2ban-regex")
    if found is None:
        missing_peer("fail2ban-regex is missing (Debian package fail2ban)")
        raise AssertionError
    return found


def banned(fail2ban_regex: str, log: Path) -> list[str]:
    """The addresses the filter finds in ``log``, one per matching line."""
    done = subprocess.run(
        [fail2ban_regex, "-o", "ip", str(log), str(FILTER)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def journal_form(log: Path) -> Path:
    """``log`` as the systemd backend formats its lines (formatJournalEntry), one per line."""
    journal = log.with_name(log.name + ".journal")
    prefix = f"{JOURNAL_HOST} {JOURNAL_IDENTIFIER}[{JOURNAL_PID}]: "
    journal.write_text("".join(prefix + line + "\n" for line in log.read_text().splitlines()))
    return journal


def banned_by_systemd_backend(fail2ban_regex: str, log: Path) -> list[str]:
    """The addresses fail2ban's systemd backend finds in ``log``'s lines as journal entries."""
    python = Path(fail2ban_regex).read_text().splitlines()[0].removeprefix("#!").split()
    done = subprocess.run(
        [*python, "-c", SYSTEMD_BACKEND, str(FILTER), str(log)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0 and "No module named 'fail2ban" in done.stderr:
        missing_peer(f"{python} cannot import fail2ban (Debian package fail2ban)")
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout)
    return found


@pytest.fixture(scope="module")
def every_kind_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    log = tmp_path_factory.mktemp("fail2ban") / "softswitch.log"
    with log.open("w") as stderr:
        subprocess.run([sys.executable, "-c", WRITE_LOG], stderr=stderr, check=True, timeout=60)
    return log


EVERY_KIND = [
    *(f"198.51.100.{i + 1}" for i in range(len(SECURITY_KINDS))),
    "2001:db8::7",
    "203.0.113.5",
]


def test_the_filter_matches_every_kind_and_nothing_else(
    every_kind_log: Path, fail2ban_regex: str
) -> None:
    addresses = banned(fail2ban_regex, every_kind_log)
    assert addresses == EVERY_KIND, every_kind_log.read_text()


def test_the_filter_matches_the_journal_form_alike(
    every_kind_log: Path, fail2ban_regex: str
) -> None:
    unit = CONTRIB.parent / "systemd" / "softswitch.service"
    assert f"\nSyslogIdentifier={JOURNAL_IDENTIFIER}\n" in unit.read_text()
    journal = journal_form(every_kind_log)
    assert journal.read_text().startswith("switch1 softswitch[4242]: 20")
    assert banned(fail2ban_regex, journal) == EVERY_KIND, journal.read_text()


def test_the_systemd_backend_bans_what_the_node_logs(
    every_kind_log: Path, fail2ban_regex: str
) -> None:
    addresses = banned_by_systemd_backend(fail2ban_regex, every_kind_log)
    assert addresses == EVERY_KIND, every_kind_log.read_text()


def test_the_filter_bans_what_a_running_node_logs(
    tmp_path: Path, softswitch_bin: str, fail2ban_regex: str
) -> None:
    port, web, mail, admin = free_port(), free_port(), free_port(), free_port()
    config = f"""
[database]
url = "sqlite:///{tmp_path / "node.sqlite3"}"
[web]
listen = "127.0.0.1:{web}"
answer_time = 0
[mail]
listen = "127.0.0.1:{mail}"
address = "callback@example.net"
[admin]
listen = "127.0.0.1:{admin}"
token = "the-right-token-0123456789"
"""
    node = Node(softswitch_bin, tmp_path, port, config).start()
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{admin}/api/status", headers={"Authorization": "Bearer guess"}
        )
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=5)
        form = urllib.parse.urlencode({"csrf": "1.forged", "trigger": "815012345678"}).encode()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{web}/", data=form, timeout=5)
        with smtplib.SMTP("127.0.0.1", mail, timeout=10) as smtp:
            smtp.ehlo("client.example.org")
            smtp.mail("spam@example.org")
            assert smtp.rcpt("victim@example.org")[0] == 550
        assert node.wait_for_log("reason=relay", timeout=5)
    finally:
        assert node.stop() == 0, node.log()[-2000:]
    assert banned(fail2ban_regex, node.log_path) == ["127.0.0.1"] * 3, node.log()[-3000:]
    assert banned(fail2ban_regex, journal_form(node.log_path)) == ["127.0.0.1"] * 3
    assert banned_by_systemd_backend(fail2ban_regex, node.log_path) == ["127.0.0.1"] * 3


def test_the_jail_loads(tmp_path: Path, fail2ban_regex: str) -> None:
    etc = Path("/etc/fail2ban")
    if not (etc / "jail.conf").exists():
        missing_peer("/etc/fail2ban is missing (Debian package fail2ban)")
    conf = tmp_path / "fail2ban"
    shutil.copytree(etc, conf)
    for other in (conf / "jail.d").iterdir():
        other.unlink()  # Debian's defaults enable sshd, whose log may not exist here
    shutil.copy(FILTER, conf / "filter.d")
    shutil.copy(JAIL, conf / "jail.d")
    client = str(Path(fail2ban_regex).with_name("fail2ban-client"))
    test = subprocess.run(
        [client, "--conf", str(conf), "-t"], capture_output=True, text=True, timeout=60
    )
    assert test.returncode == 0 and "configuration test is successful" in test.stdout, (
        test.stdout + test.stderr
    )
    dump = subprocess.run(
        [client, "--conf", str(conf), "-d"], capture_output=True, text=True, timeout=60
    )
    assert "['add', 'softswitch', 'systemd']" in dump.stdout
    assert "['set', 'softswitch', 'maxretry', 5]" in dump.stdout
