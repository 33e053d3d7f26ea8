"""The operations listeners of a real node: admin API, /metrics, the web page, SMTP, drain, SIGHUP.

Each test starts a node in-process with the service on a SQLite store and its trunk a local
UDP socket (the carrier of :mod:`tests.aio.test_service`), with the web page, the SMTP
listener and the admin API on free loopback ports, and talks to them as their clients would:
aiohttp for HTTP, smtplib for SMTP. What the carrier receives (the callback INVITE, a CANCEL)
is the evidence that a trigger reached the node.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import smtplib
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from softswitch.aio.server import Server
from softswitch.config import AdminConfig, LimitsConfig, MailConfig, WebConfig
from softswitch.logs import recent_security_events
from softswitch.store import Store
from softswitch.store.models import CallbackState, Location, Rate
from tests.aio.test_service import CUSTOMER, TRIGGER, Carrier, reply, ring_and_hang_up, start_node

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SENDER = "alice@example.com"
BOB_TRIGGER = "815087654321"


async def ops_node(
    tmp_path: Path, rtp: tuple[int, int], **config: Any
) -> tuple[Server, Carrier, asyncio.DatagramTransport, str]:
    config.setdefault("web", WebConfig(listen=("127.0.0.1", 0), answer_time=0.3))
    config.setdefault("mail", MailConfig(address="callback@example.net", listen=("127.0.0.1", 0)))
    config.setdefault("admin", AdminConfig(listen=("127.0.0.1", 0), token=TOKEN))
    config.setdefault("callback_attempts", 1)
    return await start_node(tmp_path, rtp, **config)


def url(server: Server, listener: str, path: str) -> str:
    assert server.ops is not None
    host, port = server.ops.bound[listener]
    return f"http://{host}:{port}{path}"


async def get_json(server: Server, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url(server, "admin", path), **kwargs) as response,
    ):
        return response.status, await response.json()


DASHBOARD = (
    Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "softswitch-dashboard.json"
)


async def metrics_text(server: Server) -> str:
    async with (
        aiohttp.ClientSession(headers=AUTH) as http,
        http.get(url(server, "admin", "/metrics")) as response,
    ):
        assert response.status == 200
        return await response.text()


async def metric(server: Server, name: str) -> float:
    """One sample of /metrics (``name`` with its labels, as Prometheus prints it)."""
    text = await metrics_text(server)
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


async def test_admin_api_status_calls_hangup_and_metrics(tmp_path: Path) -> None:
    server, carrier, transport, db_url = await ops_node(tmp_path, (33000, 33999))
    # Another account's callback waits in the queue (a retry due in an hour).
    store = await Store.open(db_url)
    try:
        bob = await store.accounts.add(
            "Bob", triggers=[BOB_TRIGGER], location=Location("819087654321")
        )
        waiting, _ = await store.callbacks.enqueue(
            bob.id, BOB_TRIGGER, time.time() + 3600, now=time.time()
        )
    finally:
        await store.close()
    try:
        status, body = await get_json(server, "/api/status")
        assert status == 401 and body == {"error": "unauthorized"}
        status, body = await get_json(server, "/api/status", headers={"Authorization": "Bearer x"})
        assert status == 401
        assert (await get_json(server, "/api/callbacks"))[0] == 401
        status, events = await get_json(server, "/api/security-events", headers=AUTH)
        assert [e["kind"] for e in events["events"][:2]] == ["admin_unauthorized"] * 2
        assert (await get_json(server, "/health"))[1] == {"status": "ok"}

        await ring_and_hang_up(server, transport)
        invite = await carrier.next_request("INVITE")
        transport.sendto(reply(invite, 180), ("127.0.0.1", server.config.listen[0][1]))
        await asyncio.sleep(0.1)
        status, body = await get_json(server, "/api/calls", headers=AUTH)
        assert status == 200
        [call] = body["calls"]
        assert call["trigger"] == TRIGGER and call["account_name"] == "Alice"
        assert call["state"] == "CALLING_BACK"
        assert [(leg["name"], leg["state"]) for leg in call["legs"]] == [("callback", "ringing")]
        assert call["duration"] >= 0.1
        status, body = await get_json(server, "/api/status", headers=AUTH)
        assert body["calls"] == 1 and body["legs"] == 1 and body["trigger_numbers"] == 1
        # The callback leg's media, in the node's one worker (workers = "auto" on 2 cores).
        media = body["media"]
        assert media["legs"] == 1 and media["workers"] == len(media["per_worker"]) >= 1
        assert sum(w["legs"] for w in media["per_worker"]) == 1 and media["restarts"] == 0
        assert body["pending_callbacks"] == 1
        node_id = body["node"]
        # The queue: Bob's callback waiting, Alice's claimed by this node while it rings.
        status, queue = await get_json(server, "/api/callbacks", headers=AUTH)
        assert status == 200
        by_trigger = {c["trigger"]: c for c in queue["callbacks"]}
        assert set(by_trigger) == {TRIGGER, BOB_TRIGGER}
        pending = by_trigger[BOB_TRIGGER]
        assert (pending["id"], pending["account_id"], pending["state"]) == (
            waiting.id,
            bob.id,
            "pending",
        )
        assert (pending["attempts"], pending["claimed_by"]) == (0, None)
        assert pending["due_at"] == waiting.due_at
        claimed = by_trigger[TRIGGER]
        assert (claimed["state"], claimed["claimed_by"], claimed["attempts"]) == (
            "claimed",
            node_id,
            1,
        )
        assert body["trunk"] == {
            "configured": True,
            "proxy": "127.0.0.1:{}".format(transport.get_extra_info("sockname")[1]),
            "ip_auth": True,
            "registered": True,
            "state": "ip_auth",
        }
        assert set(body["listeners"]) == {"sip", "admin", "web", "mail"}
        assert await metric(server, "softswitch_active_calls") == 1
        assert await metric(server, "softswitch_asyncio_tasks") >= 1
        # The garbage collector runs on the loop's clock, young generation every 0.1 s.
        assert await metric(server, 'softswitch_gc_collections_total{kind="young"}') >= 1
        assert await metric(server, 'softswitch_active_legs{leg="callback"}') == 1
        assert (
            await metric(server, 'softswitch_triggers_total{channel="phone",outcome="scheduled"}')
            == 1
        )

        async with aiohttp.ClientSession(headers=AUTH) as http:
            hangup = url(server, "admin", "/api/calls/{}/hangup")
            async with http.post(hangup.format("nosuchcall")) as response:
                assert response.status == 404
            async with http.post(hangup.format(call["sid"][:8])) as response:
                assert response.status == 200
        cancel = await carrier.next_request("CANCEL")
        assert cancel.call_id == invite.call_id
        for _ in range(100):
            if not server.node.calls or not server.node.calls.calls(server.loop.time()):
                break
            await asyncio.sleep(0.02)
        assert (await get_json(server, "/api/calls", headers=AUTH))[1] == {"calls": []}
        # The hung-up callback is settled (its queue row written a moment after the call
        # ends); the waiting one stays.
        for _ in range(100):
            _, queue = await get_json(server, "/api/callbacks", headers=AUTH)
            if len(queue["callbacks"]) < 2:
                break
            await asyncio.sleep(0.02)
        assert [(c["trigger"], c["state"]) for c in queue["callbacks"]] == [
            (BOB_TRIGGER, "pending")
        ]
        assert await metric(server, "softswitch_active_calls") == 0
        assert await metric(server, "softswitch_trigger_to_callback_seconds_count") == 1
        assert await metric(server, "softswitch_trigger_to_callback_seconds_sum") < 1.0
        assert (
            await metric(server, 'softswitch_security_events_total{kind="admin_unauthorized"}') >= 2
        )
        assert (
            await metric(server, 'softswitch_store_request_seconds_count{request="WriteCdr"}') >= 1
        )
    finally:
        await server.shutdown()
        transport.close()


#: The series names a metric family gives Prometheus, by its ``# TYPE`` (prometheus-client
#: names a counter's family without ``_total`` and its samples with it).
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "gauge": ("",),
    "untyped": ("",),
}


def dashboard_metrics() -> dict[str, list[str]]:
    """Every metric name in the Grafana dashboard's PromQL, with the panels that graph it."""
    dashboard = json.loads(DASHBOARD.read_text())
    graphed: dict[str, list[str]] = {}
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))  # rows may hold panels of their own
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            names = re.findall(r"\b(softswitch_[A-Za-z0-9_:]+)", expr)
            assert names, f"panel {panel.get('title')!r} graphs no softswitch metric: {expr!r}"
            for name in names:
                graphed.setdefault(name, []).append(str(panel.get("title")))
    return graphed


def exported_series(text: str) -> set[str]:
    """The series names a /metrics body offers: the samples it holds, and for every family
    its type declares (a labelled counter no event has touched yet has no sample, but its
    ``_total`` series is what a query names)."""
    series: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()
            base = family.removesuffix("_total") if kind == "counter" else family
            series.update(base + suffix for suffix in SERIES_SUFFIXES[kind])
        elif line and not line.startswith("#"):
            series.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return series


async def test_every_metric_the_grafana_dashboard_graphs_is_exported(tmp_path: Path) -> None:
    server, carrier, transport, _ = await ops_node(tmp_path, (45000, 45999))
    try:
        await ring_and_hang_up(server, transport)
        invite = await carrier.next_request("INVITE")
        transport.sendto(reply(invite, 180), ("127.0.0.1", server.config.listen[0][1]))
        await asyncio.sleep(0.1)
        assert await metric(server, "softswitch_active_calls") == 1  # a call is live
        text = await metrics_text(server)
    finally:
        await server.shutdown()
        transport.close()
    graphed = dashboard_metrics()
    assert len(graphed) >= 15, graphed  # the dashboard was read, not skipped
    exported = exported_series(text)
    missing = {name: panels for name, panels in graphed.items() if name not in exported}
    assert not missing, f"graphed but not exported: {missing}\n/metrics:\n{text}"
    # A histogram's quantiles need its buckets: they are graphed by _bucket, never bare.
    assert "softswitch_trigger_to_callback_seconds_bucket" in graphed
    assert "softswitch_trigger_to_callback_seconds" not in exported


class WebClient:
    """A browser without a browser: cookie jar, the form's CSRF token, redirects not followed."""

    def __init__(
        self,
        server: Server,
        *,
        headers: dict[str, str] | None = None,
        local_address: str | None = None,
    ) -> None:
        """``headers`` go with every request (a proxy's X-Forwarded-For, a User-Agent);
        ``local_address``: connect from this loopback address instead of 127.0.0.1."""
        self.server = server
        connector = aiohttp.TCPConnector(local_addr=(local_address, 0)) if local_address else None
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), headers=headers, connector=connector
        )

    async def get(self, path: str = "/") -> int:
        async with self.http.get(url(self.server, "web", path)) as response:
            return response.status

    async def form(self, lang: str = "en") -> str:
        async with self.http.get(url(self.server, "web", f"/?lang={lang}")) as response:
            assert response.status == 200
            page = await response.text()
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match, page
        return match.group(1)

    async def submit(
        self, trigger: str, destination: str = "", *, csrf: str | None = None
    ) -> tuple[int, str, float]:
        token = await self.form() if csrf is None else csrf
        started = time.monotonic()
        async with self.http.post(
            url(self.server, "web", "/?lang=en"),
            data={"csrf": token, "trigger": trigger, "destination": destination},
            allow_redirects=False,
        ) as response:
            body = await response.text()
            location = response.headers.get("Location", "")
            return response.status, location or body, time.monotonic() - started

    async def close(self) -> None:
        await self.http.close()


async def test_web_trigger_calls_back_and_answers_alike_whatever_the_number(
    tmp_path: Path,
) -> None:
    server, carrier, transport, _ = await ops_node(
        tmp_path, (34000, 34999), blocked_prefixes=("1900",)
    )
    client = WebClient(server)
    try:
        async with client.http.get(
            url(server, "web", "/"), headers={"Accept-Language": "ja,en;q=0.8"}
        ) as response:
            page = await response.text()
            assert '<html lang="ja">' in page and "トリガー番号" in page
            assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        known = await client.submit("+81 50-1234-5678")
        assert known[:2] == (303, "/sent?lang=en")
        invite = await carrier.next_request("INVITE")
        assert invite.uri.user == "+" + CUSTOMER
        unknown = await client.submit("81 50 9999 0000")
        absorbed = await client.submit(TRIGGER)
        assert unknown[:2] == absorbed[:2] == known[:2]
        # The same answer in the same time: at least [web] answer_time, whatever happened.
        assert all(0.3 <= t < 1.0 for t in (known[2], unknown[2], absorbed[2]))
        async with client.http.get(url(server, "web", "/sent?lang=en")) as response:
            assert "If this number is registered with us" in await response.text()

        status, body, _ = await client.submit(TRIGGER, csrf="1.forged")
        assert status == 403 and "expired" in body
        status, body, _ = await client.submit("call me")
        assert status == 400 and "trigger number in digits" in body
        status, body, _ = await client.submit(TRIGGER, "1900 555 0100")
        assert status == 400 and "cannot connect that number" in body
        status, body, _ = await client.submit(TRIGGER, "0312345678")
        assert status == 400 and "cannot connect that number" in body
        kinds = [(e.kind, e.fields.get("reason")) for e in reversed(recent_security_events(10))]
        assert ("web_rejected", "unknown_number") in kinds
        assert ("web_rejected", "csrf") in kinds
        assert ("web_rejected", "malformed") in kinds
        assert ("web_rejected", "destination_blocked") in kinds
        assert ("web_rejected", "destination_invalid") in kinds
        assert (
            await metric(server, 'softswitch_triggers_total{channel="web",outcome="scheduled"}')
            == 1
        )
        assert (
            await metric(server, 'softswitch_triggers_total{channel="web",outcome="unknown"}') == 1
        )
        assert (
            await metric(server, 'softswitch_triggers_total{channel="web",outcome="absorbed"}') == 1
        )
    finally:
        await client.close()
        await server.shutdown()
        transport.close()


async def test_web_destination_rings_with_the_callback_and_both_are_joined(
    tmp_path: Path,
) -> None:
    """A destination from the web page takes the hotline path: it is dialled at once, while
    the customer's phone rings (not when they answer), and the two are joined once both have
    answered, with no digits typed."""
    server, carrier, transport, db_url = await ops_node(tmp_path, (35000, 35999))
    store = await Store.open(db_url)
    try:
        await store.rates.set(Rate("44", "United Kingdom", 20, 6, 30))
        await store.accounts.update(1, credit_limit=10_000)
    finally:
        await store.close()
    client = WebClient(server)
    node = ("127.0.0.1", server.config.listen[0][1])
    try:
        assert (await client.submit(TRIGGER, "44 20 7946 0000"))[0] == 303
        invite = await carrier.next_request("INVITE")
        assert invite.uri.user == "+" + CUSTOMER
        # Nothing answered yet: the destination is already being called.
        destination = await carrier.next_request("INVITE")
        assert destination.uri.user == "+442079460000"
        assert server.ops is not None
        [call] = server.ops.live_calls()
        assert call.state == "HOTLINE"
        assert sorted(leg.name for leg in call.legs) == ["callback", "destination"]
        transport.sendto(answer(destination), node)
        transport.sendto(answer(invite), node)
        for _ in range(100):
            [call] = server.ops.live_calls()
            if call.state == "CONNECTED":
                break
            await asyncio.sleep(0.02)
        assert call.state == "CONNECTED"
    finally:
        await client.close()
        await server.shutdown()
        transport.close()


def answer(invite: Any) -> bytes:
    """A 200 OK with an SDP answer for ``invite`` (the customer picks up)."""
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 9 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    via = "".join(f"Via: {v}\r\n" for v in invite.vias)
    return (
        f"SIP/2.0 200 OK\r\n{via}From: {invite.from_}\r\nTo: {invite.to};tag=far\r\n"
        f"Call-ID: {invite.call_id}\r\nCSeq: {invite.cseq}\r\n"
        "Contact: <sip:customer@127.0.0.1:9>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def send_mail(
    port: int,
    subject: str,
    *,
    sender: str = SENDER,
    to: str = "callback@example.net",
    body: str = "Please.",
    received: str | None = None,
) -> tuple[int, bytes]:
    """One message over real SMTP; the server's answer to DATA (or to RCPT, if refused).
    ``received``: the Received header a relaying MTA would add."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo("client.example.com")
        code, text = smtp.mail(sender)
        if code != 250:
            return code, text
        code, text = smtp.rcpt(to)
        if code != 250:
            return code, text
        trace = f"Received: {received}\r\n" if received else ""
        message = f"{trace}From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\n{body}\r\n"
        return smtp.data(message.encode())


async def test_mail_trigger_over_smtp(tmp_path: Path) -> None:
    mail = MailConfig(
        address="callback@example.net",
        listen=("127.0.0.1", 0),
        max_size=2048,
        senders={"815099990000": ("boss@example.com",)},
    )
    server, carrier, transport, _ = await ops_node(tmp_path, (36000, 36999), mail=mail)
    assert server.ops is not None
    port = server.ops.bound["mail"][1]
    try:
        code, text = await asyncio.to_thread(send_mail, port, "81 50 1234 5678")
        assert code == 250 and b"we will call you back" in text
        invite = await carrier.next_request("INVITE")
        assert invite.uri.user == "+" + CUSTOMER
        # Never a relay; a Subject that is not a number is refused saying what to fix.
        code, _ = await asyncio.to_thread(send_mail, port, TRIGGER, to="victim@example.org")
        assert code == 550
        code, text = await asyncio.to_thread(send_mail, port, "please call me")
        assert code == 550 and b"only your trigger number" in text
        # Unknown numbers and senders not on a number's list get the scheduled answer.
        assert (await asyncio.to_thread(send_mail, port, "815000000000"))[0] == 250
        assert (await asyncio.to_thread(send_mail, port, "815099990000"))[0] == 250
        code, _ = await asyncio.to_thread(send_mail, port, TRIGGER, body=("x" * 70 + "\r\n") * 60)
        assert code == 552  # over [mail] max_size
        reasons = [e.fields.get("reason") for e in recent_security_events(10)]
        assert {"relay", "subject", "unknown_number", "sender"} <= set(reasons)
        assert (
            await metric(server, 'softswitch_triggers_total{channel="mail",outcome="scheduled"}')
            == 1
        )
    finally:
        await server.shutdown()
        transport.close()


async def test_web_and_mail_share_the_rate_limits(tmp_path: Path) -> None:
    limits = LimitsConfig(per_source=100, per_trigger=2, window=60, ban=60)
    server, _, transport, _ = await ops_node(
        tmp_path,
        (37000, 37999),
        limits=limits,
        web=WebConfig(listen=("127.0.0.1", 0), answer_time=0.0),
    )
    assert server.ops is not None
    port = server.ops.bound["mail"][1]
    client = WebClient(server)
    try:
        # One trigger number's limit counts the web and e-mail together.
        assert [(await client.submit("815000000001"))[0] for _ in range(2)] == [303, 303]
        assert (await asyncio.to_thread(send_mail, port, "815000000001"))[0] == 450
        assert (await asyncio.to_thread(send_mail, port, "815000000002"))[0] == 250
        # A source over its limit is banned: the form, and mail from the same address. The
        # address has asked four times so far, twice by web and twice by mail.
        server.ops.limits.reconfigure(LimitsConfig(per_source=6, per_trigger=100, window=60))
        statuses = [(await client.submit(f"81500000001{i}"))[0] for i in range(3)]
        assert statuses == [303, 303, 429]
        async with client.http.get(url(server, "web", "/")) as response:
            assert response.status == 429
        assert (await asyncio.to_thread(send_mail, port, "815000000003"))[0] == 450
        events = recent_security_events(3)
        assert [e.kind for e in events] == ["banned", "banned", "rate_limited"]
        assert events[2].fields["limit"] == "source" and events[2].src == "127.0.0.1"
        assert (
            await metric(server, 'softswitch_triggers_total{channel="web",outcome="limited"}') == 1
        )
    finally:
        await client.close()
        await server.shutdown()
        transport.close()


async def test_mail_limits_count_the_client_address_whatever_the_sender(tmp_path: Path) -> None:
    """A spammer rotating senders from one address is limited (and banned) by the address."""
    limits = LimitsConfig(per_source=3, per_trigger=100, window=60, ban=60)
    server, _, transport, _ = await ops_node(
        tmp_path,
        (43000, 43999),
        limits=limits,
        web=WebConfig(listen=("127.0.0.1", 0), answer_time=0.0),
    )
    assert server.ops is not None
    port = server.ops.bound["mail"][1]
    try:
        codes = [
            (await asyncio.to_thread(send_mail, port, TRIGGER, sender=f"s{i}@example.org"))[0]
            for i in range(4)
        ]
        assert codes == [250, 250, 250, 450]
        [event] = recent_security_events(1)
        assert (event.kind, event.src) == ("rate_limited", "127.0.0.1")
        assert (event.fields["channel"], event.fields["limit"]) == ("mail", "source")
        # The address is banned: a sender never seen before is refused at MAIL FROM.
        code, _ = await asyncio.to_thread(send_mail, port, TRIGGER, sender="new@example.org")
        assert code == 450
        assert recent_security_events(1)[0].kind == "banned"
        assert (
            await metric(server, 'softswitch_triggers_total{channel="mail",outcome="limited"}') == 1
        )
    finally:
        await server.shutdown()
        transport.close()


async def test_mail_through_a_trusted_relay_counts_the_client_it_names(tmp_path: Path) -> None:
    """Behind the site's MTA the limits count the client its Received header names, so one
    client is limited without the relay (everyone's mail) being limited or banned."""
    mail = MailConfig(
        address="callback@example.net", listen=("127.0.0.1", 0), trusted_relays=("127.0.0.1",)
    )
    server, _, transport, _ = await ops_node(
        tmp_path,
        (44000, 44999),
        mail=mail,
        limits=LimitsConfig(per_source=2, per_trigger=100, window=60, ban=60),
        web=WebConfig(listen=("127.0.0.1", 0), answer_time=0.0),
    )
    assert server.ops is not None
    port = server.ops.bound["mail"][1]

    def relayed(client: str, sender: str) -> int:
        received = f"from c.example.org (c.example.org [{client}]) by mx.example.net (Postfix)"
        return send_mail(port, TRIGGER, sender=sender, received=received)[0]

    try:
        codes = [
            await asyncio.to_thread(relayed, "203.0.113.9", f"s{i}@example.org") for i in range(3)
        ]
        assert codes == [250, 250, 450]
        [event] = recent_security_events(1)
        assert (event.kind, event.src, event.fields["limit"]) == (
            "rate_limited",
            "203.0.113.9",
            "source",
        )
        assert await asyncio.to_thread(relayed, "203.0.113.10", "t@example.org") == 250
        assert not server.ops.banned("127.0.0.1")
    finally:
        await server.shutdown()
        transport.close()


async def test_web_limits_the_client_behind_a_trusted_proxy_and_ignores_others_headers(
    tmp_path: Path,
) -> None:
    """Behind a trusted proxy the client is the last address in X-Forwarded-For that is not a
    proxy: it is limited and banned, not the proxy (everyone's address). From any other peer
    X-Forwarded-For is the client's own claim and changes nothing."""
    web = WebConfig(listen=("127.0.0.1", 0), answer_time=0.0, trusted_proxies=("127.0.0.1",))
    limits = LimitsConfig(per_source=2, per_trigger=100, window=60, ban=60)
    server, _, transport, _ = await ops_node(tmp_path, (46000, 46999), web=web, limits=limits)
    assert server.ops is not None
    clients: list[WebClient] = []

    def client(forwarded_for: str, local_address: str | None = None) -> WebClient:
        made = WebClient(
            server, headers={"X-Forwarded-For": forwarded_for}, local_address=local_address
        )
        clients.append(made)
        return made

    try:
        behind = client("203.0.113.9")
        assert [(await behind.submit(f"81500000003{i}"))[0] for i in range(3)] == [303, 303, 429]
        [event] = recent_security_events(1)
        assert (event.kind, event.src, event.fields["limit"]) == (
            "rate_limited",
            "203.0.113.9",
            "source",
        )
        # Banned by its address, even with a forged address in front of the proxy's entry.
        assert await client("198.51.100.1, 203.0.113.9").get() == 429
        [event] = recent_security_events(1)
        assert (event.kind, event.src) == ("banned", "203.0.113.9")
        # The proxy and the other clients behind it are not held.
        assert (await client("203.0.113.10").submit("815000000040"))[0] == 303
        assert not server.ops.banned("127.0.0.1")

        # 127.0.0.3 is no proxy of ours: each request claims another client, all are its own.
        statuses = [
            (await client(f"203.0.113.{20 + i}", "127.0.0.3").submit(f"81500000005{i}"))[0]
            for i in range(3)
        ]
        assert statuses == [303, 303, 429]
        [event] = recent_security_events(1)
        assert (event.kind, event.src) == ("rate_limited", "127.0.0.3")
        assert server.ops.banned("127.0.0.3")
        assert not server.ops.banned("203.0.113.20") and not server.ops.banned("203.0.113.21")
    finally:
        for made in clients:
            await made.close()
        await server.shutdown()
        transport.close()


async def test_web_attack_tools_are_refused_with_a_security_event(tmp_path: Path) -> None:
    web = WebConfig(listen=("127.0.0.1", 0), answer_time=0.0, trusted_proxies=("127.0.0.1",))
    server, _, transport, _ = await ops_node(tmp_path, (47000, 47999), web=web)
    agent = "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)"
    scanner = WebClient(server, headers={"User-Agent": agent, "X-Forwarded-For": "203.0.113.66"})
    browser = WebClient(server, headers={"X-Forwarded-For": "203.0.113.67"})
    try:
        assert await scanner.get("/") == 403
        assert await scanner.get("/style.css") == 403
        events = recent_security_events(2)
        assert [(e.kind, e.src, e.fields["channel"]) for e in events] == [
            ("scanner", "203.0.113.66", "web")
        ] * 2
        assert "Nmap Scripting Engine" in events[0].fields["user_agent"]
        assert await scanner.get("/") == 403  # every request, not the first only
        async with scanner.http.post(url(server, "web", "/"), data={"trigger": TRIGGER}) as sent:
            assert sent.status == 403
        assert await browser.get("/") == 200  # an ordinary browser is served
        assert await metric(server, 'softswitch_security_events_total{kind="scanner"}') >= 4
        # Nothing it sent reached the node as a trigger.
        assert 'softswitch_triggers_total{channel="web"' not in await metrics_text(server)
    finally:
        await scanner.close()
        await browser.close()
        await server.shutdown()
        transport.close()


async def test_sighup_reload_applies_what_it_can(tmp_path: Path) -> None:
    config_file = tmp_path / "node.toml"
    server, _, transport, _ = await ops_node(tmp_path, (38000, 38999))
    try:
        config_file.write_text(
            '[log]\nlevel = "WARNING"\n[service]\nblocked_prefixes = ["44"]\n'
            "[limits]\nper_source = 2\n[sip]\nt1 = 1.0\n"
        )
        server.config = dataclasses.replace(server.config, source=str(config_file))
        root = logging.getLogger()
        level = root.level
        try:
            changed = server.reload()
            assert {"log_level", "blocked_prefixes", "limits"} <= set(changed)
            assert root.level == logging.WARNING
        finally:
            root.setLevel(level)
        assert server.node.calls is not None
        assert server.node.calls.config.blocked_prefixes == ("44",)
        assert server.ops is not None and server.ops.limits.config.per_source == 2
        assert server.config.t1 == 0.5  # needs a restart: not applied
        client = WebClient(server)
        try:
            status, body, _ = await client.submit(TRIGGER, "44 20 7946 0000")
            assert status == 400 and "cannot connect" in body
        finally:
            await client.close()
        config_file.write_text("[log]\nlevle = 1\n")
        assert server.reload() == []
        assert server.node.calls.config.blocked_prefixes == ("44",)
    finally:
        await server.shutdown()
        transport.close()


async def test_drain_lets_live_calls_finish_and_queues_new_triggers(tmp_path: Path) -> None:
    server, carrier, transport, db_url = await ops_node(tmp_path, (39000, 39999), drain_timeout=5.0)
    node = ("127.0.0.1", server.config.listen[0][1])
    client = WebClient(server)
    try:
        await ring_and_hang_up(server, transport)
        invite = await carrier.next_request("INVITE")
        drain = asyncio.ensure_future(server.drain())
        await asyncio.sleep(0.3)
        assert not drain.done() and server.draining
        assert (await get_json(server, "/health"))[1] == {"status": "draining"}
        transport.sendto(reply(invite, 486), node)  # the live call ends (busy, no retry)
        await asyncio.wait_for(drain, 3.0)
        # A trigger now is kept in the store for the next node, not called back here.
        assert (await client.submit("815012345678"))[0] == 303
        with pytest.raises(TimeoutError):
            await carrier.next_request("INVITE", timeout=0.5)
    finally:
        await client.close()
        await server.shutdown()
        transport.close()
    store = await Store.open(db_url)
    try:
        rows = await store.callbacks.list()
        assert [r.state for r in rows] == [CallbackState.FAILED, CallbackState.PENDING]
        assert rows[1].claimed_by is None
    finally:
        await store.close()


@pytest.mark.parametrize("drain_timeout", [0.3])
async def test_drain_gives_up_at_its_timeout(tmp_path: Path, drain_timeout: float) -> None:
    server, carrier, transport, _ = await ops_node(
        tmp_path, (40000, 40999), drain_timeout=drain_timeout
    )
    try:
        await ring_and_hang_up(server, transport)
        invite = await carrier.next_request("INVITE")
        transport.sendto(reply(invite, 180), ("127.0.0.1", server.config.listen[0][1]))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await server.drain()
        assert drain_timeout <= time.monotonic() - started < drain_timeout + 0.5
        assert server.node.calls is not None and server.node.calls.calls(server.loop.time())
    finally:
        await server.shutdown()  # hangs up what is left
        transport.close()
    assert (await carrier.next_request("CANCEL")).method == "CANCEL"


async def test_sip_scanners_and_rejected_sources_are_security_events(tmp_path: Path) -> None:
    server, _, transport, _ = await ops_node(tmp_path, (42000, 42999), allow_from=("10.0.0.0/8",))
    loop = asyncio.get_running_loop()
    node = ("127.0.0.1", server.config.listen[0][1])
    stranger, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.2", 0)
    )
    options = (
        "OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-s{n}\r\n"
        "From: <sip:100@127.0.0.2>;tag=s\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: scan-{n}\r\n"
        "CSeq: 1 OPTIONS\r\n{ua}Content-Length: 0\r\n\r\n"
    )
    try:
        for n in range(3):  # a burst: one event per source and kind while it lasts
            stranger.sendto(options.format(n=n, ua="").encode(), node)
        # The trunk's own address is allowed, but a scanning tool is named wherever it comes from.
        transport.sendto(options.format(n=9, ua="User-Agent: friendly-scanner\r\n").encode(), node)
        await asyncio.sleep(0.2)
        events = [(e.kind, e.src, e.fields) for e in recent_security_events(2)]
        assert events == [
            (
                "scanner",
                "127.0.0.1",
                {"channel": "sip", "method": "OPTIONS", "user_agent": "friendly-scanner"},
            ),
            ("source_rejected", "127.0.0.2", {"channel": "sip", "method": "OPTIONS"}),
        ]
        burst = [e for e in recent_security_events(10) if e.src == "127.0.0.2"]
        assert len(burst) == 1
    finally:
        stranger.close()
        await server.shutdown()
        transport.close()
