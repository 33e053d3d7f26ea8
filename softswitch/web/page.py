"""The "Trigger a call" page (SPEC 3, guide section 4): aiohttp, no JavaScript, ja and en.

A customer types their trigger number and, if they like, the number they want to call; the
switch calls them back (and, with a destination, connects it as soon as they answer). The page
is open to the Internet, so:

* every form carries a CSRF token: an HMAC of a random per-browser cookie and the time, under
  the node's secret (stateless; a form is good for :data:`FORM_LIFETIME`); a cross-site
  ``Origin`` is refused too;
* the answer is the same page ("if this number is registered, we will call you back") and
  takes the same time (``[web] answer_time``) whether the number exists, is suspended, is
  already being called back or is unknown; nothing about the account is shown;
* the destination is checked by the dial plan and ``[service] blocked_prefixes`` here, before
  anything is scheduled (the rate table is checked again when it is dialled);
* the per-source and per-number limits are the node's (:mod:`softswitch.service.ratelimit`,
  shared with e-mail), and every refusal is a security event (:mod:`softswitch.logs`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import ipaddress
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from softswitch.config import WebConfig
from softswitch.logs import security_event
from softswitch.service import dialplan
from softswitch.service.trigger import normalize_number

if TYPE_CHECKING:
    from softswitch.aio.ops import Operations

__all__ = ["FORM_LIFETIME", "TriggerPage", "client_address", "pick_language"]

FORM_LIFETIME = 2 * 3600.0
COOKIE = "softswitch_form"
#: Web clients that announce themselves as attack tools.
SCANNERS = re.compile(r"sqlmap|nikto|nmap|masscan|zgrab|nuclei|dirbuster|gobuster|wpscan", re.I)
_FORMAT = re.compile(r"^[0-9 +()\-./]{0,40}$")

TEXT: dict[str, dict[str, str]] = {
    "ja": {
        "title": "コールバックを依頼する",
        "lead": "トリガー番号を入力してください。登録されたお電話にすぐ折り返しお電話します。",
        "trigger": "トリガー番号",
        "trigger_hint": "国番号から（例: 81 50 1234 5678）",  # noqa: RUF001 (Japanese punctuation)
        "destination": "おつなぎ先（任意）",  # noqa: RUF001 (Japanese punctuation)
        "destination_hint": "入力すると、お電話に出られたとき直接おつなぎします（例: 44 20 7946 0000）",  # noqa: RUF001 (Japanese punctuation)
        "submit": "電話をかけてもらう",
        "sent_title": "受け付けました",
        "sent": "この番号がご登録のものであれば、まもなく登録のお電話にお掛けします。",
        "again": "もう一度依頼する",
        "bad_trigger": "トリガー番号を数字で入力してください（国番号から）。",  # noqa: RUF001 (Japanese punctuation)
        "bad_destination": "おつなぎ先の番号はお受けできません: 国番号から入力してください。",
        "expired": "フォームの有効期限が切れました。もう一度お試しください。",
        "limited": "お申し込みが多すぎます。しばらくしてからお試しください。",
        "footer": "通話料はおつなぎ先への通話分のみかかります。",
    },
    "en": {
        "title": "Trigger a call",
        "lead": "Enter your trigger number and we will call you back on your registered phone.",
        "trigger": "Trigger number",
        "trigger_hint": "country code first (e.g. 81 50 1234 5678)",
        "destination": "Number to connect (optional)",
        "destination_hint": "Given, we connect it as soon as you answer (e.g. 44 20 7946 0000)",
        "submit": "Call me back",
        "sent_title": "Request received",
        "sent": "If this number is registered with us, we will call you back shortly.",
        "again": "Make another request",
        "bad_trigger": "Please enter your trigger number in digits, country code first.",
        "bad_destination": "We cannot connect that number: enter it with its country code.",
        "expired": "This form has expired. Please try again.",
        "limited": "Too many requests. Please try again later.",
        "footer": "You pay only for the call to the number you connect.",
    },
}

STYLE = """
:root { color-scheme: light; --ink: #1d2733; --muted: #5b6776; --accent: #0a6cbd;
  --line: #d6dde6; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", "Hiragino Sans",
  "Noto Sans JP", sans-serif; color: var(--ink);
  background: linear-gradient(160deg, #eaf3fb 0%, #f7f9fb 60%); min-height: 100vh; }
header { display: flex; justify-content: space-between; align-items: center;
  max-width: 36rem; margin: 0 auto; padding: 1.25rem 1rem; }
.brand { font-weight: 700; letter-spacing: .02em; }
.brand span { color: var(--accent); }
nav a { color: var(--muted); text-decoration: none; margin-left: .75rem; font-size: .9rem; }
nav a[aria-current] { color: var(--ink); font-weight: 600; }
main { max-width: 36rem; margin: 0 auto; padding: 0 1rem 3rem; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 14px;
  padding: 2rem; box-shadow: 0 8px 24px rgba(16, 40, 70, .08); }
h1 { margin: 0 0 .5rem; font-size: 1.6rem; }
p.lead { margin: 0 0 1.5rem; color: var(--muted); }
label { display: block; font-weight: 600; margin: 1rem 0 .25rem; }
.hint { display: block; font-weight: 400; color: var(--muted); font-size: .85rem; }
input[type=text], input[type=tel] { width: 100%; font: inherit; font-size: 1.15rem;
  padding: .7rem .8rem; border: 1px solid var(--line); border-radius: 8px; }
input:focus { outline: 3px solid rgba(10, 108, 189, .25); border-color: var(--accent); }
button { margin-top: 1.5rem; width: 100%; font: inherit; font-weight: 600; font-size: 1.1rem;
  padding: .8rem; color: #fff; background: var(--accent); border: 0; border-radius: 8px;
  cursor: pointer; }
button:hover { background: #08589b; }
.error { color: var(--bad); background: #fdecea; border-radius: 8px; padding: .6rem .8rem; }
.done { font-size: 1.1rem; }
a.again { display: inline-block; margin-top: 1rem; color: var(--accent); }
footer { text-align: center; color: var(--muted); font-size: .85rem; margin-top: 1.5rem; }
"""


def _secure_headers(headers: MutableMapping[str, str]) -> None:
    headers.setdefault(
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
    )
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")


def pick_language(query: str | None, accept: str | None, default: str) -> str:
    """``?lang=`` if it names ja or en, else the first of ja/en in Accept-Language."""
    if query in TEXT:
        return query
    best: tuple[float, str] | None = None
    for part in (accept or "").split(","):
        tag, _, params = part.strip().partition(";")
        lang = tag.strip().lower().split("-")[0]
        if lang not in TEXT:
            continue
        q = 1.0
        match = re.search(r"q=([0-9.]+)", params)
        if match:
            try:
                q = float(match.group(1))
            except ValueError:
                q = 0.0
        if q > 0 and (best is None or q > best[0]):
            best = (q, lang)
    return best[1] if best else default


def client_address(request: web.Request, trusted: tuple[str, ...]) -> str:
    """The client's address: the peer, or, behind a trusted proxy, the last address in
    ``X-Forwarded-For`` that is not itself a trusted proxy."""
    peer = request.remote or "-"
    nets = [ipaddress.ip_network(n, strict=False) for n in trusted]

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in nets)

    if not nets or not is_trusted(peer):
        return peer
    chain = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
    for addr in reversed(chain):
        if not is_trusted(addr):
            try:
                return str(ipaddress.ip_address(addr))
            except ValueError:
                return peer
    return peer


@dataclass(frozen=True, slots=True)
class _Form:
    trigger: str = ""
    destination: str = ""
    error: str | None = None


class TriggerPage:
    """The page's routes; ``ops`` carries the request to the node (limits, scheduling)."""

    def __init__(self, config: WebConfig, ops: Operations) -> None:
        self.config = config
        self.ops = ops
        self.secret = (config.secret or secrets.token_hex(32)).encode()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=8 * 1024)
        app.router.add_get("/", self.form)
        app.router.add_post("/", self.submit)
        app.router.add_get("/sent", self.sent)
        app.router.add_get("/style.css", self.style)
        return app

    # --- routes -----------------------------------------------------------------------------------

    async def form(self, request: web.Request) -> web.Response:
        lang = self._lang(request)
        return self._form_page(request, lang, _Form())

    async def submit(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        source = client_address(request, self.config.trusted_proxies)
        lang = self._lang(request)
        form = await request.post()
        trigger_text = str(form.get("trigger", ""))[:64]
        destination_text = str(form.get("destination", ""))[:64]
        entered = _Form(trigger_text, destination_text)
        if not self._csrf_ok(request, str(form.get("csrf", ""))):
            security_event("web_rejected", source, reason="csrf")
            return await self._answer(started, request, lang, entered, "expired", status=403)
        trigger = normalize_number(trigger_text)
        if not _FORMAT.match(trigger_text) or not 6 <= len(trigger) <= 15:
            security_event("web_rejected", source, reason="malformed", trigger=trigger_text)
            return await self._answer(started, request, lang, entered, "bad_trigger")
        destination: str | None = None
        if destination_text.strip():
            try:
                if not _FORMAT.match(destination_text):
                    raise dialplan.DestinationRefused(dialplan.RefusalReason.INVALID, "format")
                destination = self.ops.check_destination(normalize_number(destination_text))
            except dialplan.DestinationRefused as exc:
                security_event(
                    "web_rejected",
                    source,
                    reason=f"destination_{exc.reason.value}",
                    destination=destination_text,
                )
                return await self._answer(started, request, lang, entered, "bad_destination")
        outcome = self.ops.request_callback("web", source, trigger, destination)
        if outcome == "limited":
            return await self._answer(started, request, lang, entered, "limited", status=429)
        # Scheduled, absorbed, unknown or refused: one answer, one timing.
        await self._pad(started)
        raise web.HTTPSeeOther(f"/sent?lang={lang}")

    async def sent(self, request: web.Request) -> web.Response:
        lang = self._lang(request)
        t = TEXT[lang]
        body = (
            f'<h1>{t["sent_title"]}</h1><p class="done" role="status">{t["sent"]}</p>'
            f'<a class="again" href="/?lang={lang}">{t["again"]}</a>'
        )
        return self._page(request, lang, body)

    async def style(self, request: web.Request) -> web.Response:
        return web.Response(
            text=STYLE,
            content_type="text/css",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    # --- helpers ----------------------------------------------------------------------------------

    @web.middleware
    async def _guard(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        source = client_address(request, self.config.trusted_proxies)
        agent = request.headers.get("User-Agent", "")
        response: web.StreamResponse
        if SCANNERS.search(agent):
            security_event("scanner", source, channel="web", user_agent=agent[:120])
            response = web.Response(status=403, text="Forbidden")
        elif self.ops.banned(source):
            security_event("banned", source, channel="web", path=request.path[:80])
            response = web.Response(status=429, text="Too many requests")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                self.ops.count_http("web", exc.status)
                _secure_headers(exc.headers)
                raise
        self.ops.count_http("web", response.status)
        _secure_headers(response.headers)
        return response

    def _lang(self, request: web.Request) -> str:
        return pick_language(
            request.query.get("lang"),
            request.headers.get("Accept-Language"),
            self.config.default_language,
        )

    async def _pad(self, started: float) -> None:
        left = self.config.answer_time - (time.monotonic() - started)
        if left > 0:
            await asyncio.sleep(left)

    async def _answer(
        self,
        started: float,
        request: web.Request,
        lang: str,
        entered: _Form,
        error: str,
        *,
        status: int = 400,
    ) -> web.Response:
        await self._pad(started)
        form = _Form(entered.trigger, entered.destination, TEXT[lang][error])
        return self._form_page(request, lang, form, status=status)

    def _cookie_value(self, request: web.Request) -> str:
        value = request.cookies.get(COOKIE, "")
        return value if re.fullmatch(r"[0-9a-f]{32}", value) else ""

    def _token(self, cookie: str, issued: int) -> str:
        mac = hmac.new(self.secret, f"{cookie}.{issued}".encode(), hashlib.sha256).hexdigest()
        return f"{issued}.{mac}"

    def _csrf_ok(self, request: web.Request, token: str) -> bool:
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null":
            host = origin.split("://", 1)[-1]
            if host != request.host:
                return False
        cookie = self._cookie_value(request)
        issued_text, _, _ = token.partition(".")
        if not cookie or not issued_text.isdigit():
            return False
        issued = int(issued_text)
        if not 0 <= time.time() - issued <= FORM_LIFETIME:
            return False
        return hmac.compare_digest(token, self._token(cookie, issued))

    def _form_page(
        self, request: web.Request, lang: str, form: _Form, *, status: int = 200
    ) -> web.Response:
        """The form, with a CSRF token bound to the browser's cookie (set here if new)."""
        t = TEXT[lang]
        cookie = self._cookie_value(request)
        new_cookie = None
        if not cookie:
            cookie = new_cookie = secrets.token_hex(16)
        token = self._token(cookie, int(time.time()))
        error = ""
        if form.error is not None:
            error = f'<p class="error" role="alert">{html.escape(form.error)}</p>'
        body = (
            f'<h1>{t["title"]}</h1><p class="lead">{t["lead"]}</p>{error}'
            f'<form method="post" action="/?lang={lang}" autocomplete="on">'
            f'<input type="hidden" name="csrf" value="{token}">'
            f'<label for="trigger">{t["trigger"]}'
            f'<span class="hint">{t["trigger_hint"]}</span></label>'
            f'<input type="tel" id="trigger" name="trigger" required inputmode="tel" '
            f'maxlength="40" autocomplete="tel" value="{html.escape(form.trigger)}">'
            f'<label for="destination">{t["destination"]}'
            f'<span class="hint">{t["destination_hint"]}</span></label>'
            f'<input type="tel" id="destination" name="destination" inputmode="tel" '
            f'maxlength="40" value="{html.escape(form.destination)}">'
            f'<button type="submit">{t["submit"]}</button></form>'
        )
        response = self._page(request, lang, body, status=status)
        if new_cookie is not None:
            response.set_cookie(
                COOKIE,
                new_cookie,
                httponly=True,
                samesite="Strict",
                secure=request.secure or request.headers.get("X-Forwarded-Proto") == "https",
                max_age=int(FORM_LIFETIME),
            )
        return response

    def _page(
        self, request: web.Request, lang: str, body: str, *, status: int = 200
    ) -> web.Response:
        t = TEXT[lang]
        nav = "".join(
            f'<a href="/?lang={code}" lang="{code}" hreflang="{code}"'
            f"{' aria-current=page' if code == lang else ''}>{name}</a>"
            for code, name in (("ja", "日本語"), ("en", "English"))
        )
        document = (
            f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{t["title"]}</title><link rel="stylesheet" href="/style.css"></head>'
            f'<body><header><div class="brand">kall<span>back</span></div><nav>{nav}</nav>'
            f'</header><main><div class="card">{body}</div>'
            f"<footer>{t['footer']}</footer></main></body></html>"
        )
        response = web.Response(text=document, content_type="text/html", status=status)
        response.headers["Cache-Control"] = "no-store"
        return response
