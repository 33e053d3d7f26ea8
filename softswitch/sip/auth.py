"""Digest authentication, client side (RFC 3261 section 22; RFC 2617, 7616, 8760).

Theory of operation: a 401/407 carries one or more challenges (``parse_challenge``,
``challenges_in``); ``choose_challenge`` picks the strongest algorithm we support. A
``DigestClient`` holds one trunk's credentials and the transport addresses of that trunk, and
answers a challenge only when the response came from one of them (and, if configured, names our
realm): a stranger's challenge must never get a hash of our password (CVE-2021-41158). The
client counts nc per nonce and draws cnonces from an injected random source. ``answer`` also
decides when to stop: a new challenge for a realm we already sent credentials for means they
were rejected, unless the server says ``stale=true`` (RFC 7616 section 3.3), so the caller
never loops on a wrong password.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from softswitch.sip.message import Address, Request, Response

log = logging.getLogger(__name__)

# Canonical spelling (RFC 7616 section 6.1 registry) -> hashlib name of the base hash.
ALGORITHMS: dict[str, str] = {
    "MD5": "md5",
    "MD5-sess": "md5",
    "SHA-256": "sha256",
    "SHA-256-sess": "sha256",
    "SHA-512-256": "sha512_256",
    "SHA-512-256-sess": "sha512_256",
}
_CANONICAL = {name.upper(): name for name in ALGORITHMS}
_STRENGTH = {"md5": 0, "sha256": 1, "sha512_256": 2}
MAX_CHALLENGE_LENGTH = 4096
MAX_NONCES = 32

WWW_AUTHENTICATE = "WWW-Authenticate"
PROXY_AUTHENTICATE = "Proxy-Authenticate"
AUTHORIZATION = "Authorization"
PROXY_AUTHORIZATION = "Proxy-Authorization"


class AuthError(ValueError):
    """A malformed challenge or credentials header."""


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """One Digest challenge. ``proxy`` is True when it came in Proxy-Authenticate (407)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    opaque: str | None = None
    qop: tuple[str, ...] = ()
    stale: bool = False
    proxy: bool = False

    @property
    def supported(self) -> bool:
        """True if we can compute a response (known algorithm, usable qop)."""
        if self.algorithm not in ALGORITHMS:
            return False
        if self.qop and not ({"auth", "auth-int"} & set(self.qop)):
            return False
        # -sess needs a cnonce, which is only sent together with qop (RFC 2617 section 3.2.2).
        return not (self.algorithm.endswith("-sess") and not self.qop)

    @property
    def credentials_header(self) -> str:
        """Header that carries our answer: Authorization or Proxy-Authorization."""
        return PROXY_AUTHORIZATION if self.proxy else AUTHORIZATION


@dataclass(frozen=True, slots=True)
class AuthHeader:
    """A header to add to the retried request (replacing an earlier one for ``realm``)."""

    name: str
    value: str
    realm: str


class Refusal(enum.Enum):
    WRONG_PEER = "challenge did not come from the peer these credentials belong to"
    WRONG_REALM = "challenge names a realm these credentials are not for"
    UNSUPPORTED = "no challenge with an algorithm and qop we support"
    REJECTED = "the peer rejected our credentials"
    NO_CHALLENGE = "no Digest challenge in the response"


@dataclass(frozen=True, slots=True)
class AuthRefused:
    """Do not retry: report the failure to the user of the request (it stays a 401/407)."""

    refusal: Refusal
    detail: str = ""


# ---------------------------------------------------------------------------------------------
# Parsing


def _parse_auth_params(text: str) -> tuple[str, dict[str, str]]:
    """Split ``scheme name=value, name="quoted", ...`` (RFC 7235 section 2.1)."""
    if len(text) > MAX_CHALLENGE_LENGTH:
        raise AuthError("authentication header too long")
    if not text.strip():
        raise AuthError("empty authentication header")
    scheme, *tail = text.strip().split(None, 1)
    rest = tail[0] if tail else ""
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t\r\n,":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and rest[i] not in "= \t,":
            i += 1
        name = rest[start:i].lower()
        while i < n and rest[i] in " \t":
            i += 1
        if not name or i >= n or rest[i] != "=":
            raise AuthError(f"expected name=value at {rest[start : start + 30]!r}")
        i += 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise AuthError(f"unterminated quoted string for {name!r}")
                c = rest[i]
                if c == "\\" and i + 1 < n:
                    chars.append(rest[i + 1])
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                chars.append(c)
                i += 1
            value = "".join(chars)
        else:
            start = i
            while i < n and rest[i] not in " \t,":
                i += 1
            value = rest[start:i]
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] != ",":
            raise AuthError(f"expected ',' after {name!r}")
        params.setdefault(name, value)
    return scheme, params


def parse_challenge(header_value: str, *, proxy: bool = False) -> DigestChallenge:
    """Parse a WWW-Authenticate / Proxy-Authenticate value; ``AuthError`` if not Digest."""
    scheme, params = _parse_auth_params(header_value)
    if scheme.lower() != "digest":
        raise AuthError(f"not a Digest challenge: {scheme[:20]!r}")
    if "realm" not in params or "nonce" not in params:
        raise AuthError("Digest challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5")
    return DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=_CANONICAL.get(algorithm.upper(), algorithm),
        opaque=params.get("opaque"),
        qop=tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()),
        stale=params.get("stale", "").lower() == "true",
        proxy=proxy,
    )


def challenges_in(response: Response) -> list[DigestChallenge]:
    """All Digest challenges of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate).

    Non-Digest and malformed challenges are skipped: one bad header must not hide a good one.
    """
    wanted = PROXY_AUTHENTICATE if response.status == 407 else WWW_AUTHENTICATE
    out: list[DigestChallenge] = []
    for name, value in response.headers:
        if name.lower() != wanted.lower():
            continue
        try:
            out.append(parse_challenge(value, proxy=response.status == 407))
        except AuthError as exc:
            log.debug("ignoring challenge %r: %s", value[:80], exc)
    return out


def choose_challenge(challenges: Iterable[DigestChallenge]) -> DigestChallenge | None:
    """The supported challenge with the strongest hash; header order breaks ties.

    RFC 8760 section 2.4 lets local policy override "topmost first"; ours is that SHA-256
    beats MD5 whatever the order, so a downgrade needs more than reordering headers.
    """
    best: DigestChallenge | None = None
    for c in challenges:
        if not c.supported:
            continue
        if (
            best is None
            or _STRENGTH[ALGORITHMS[c.algorithm]] > _STRENGTH[ALGORITHMS[best.algorithm]]
        ):
            best = c
    return best


# ---------------------------------------------------------------------------------------------
# Computing


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: int = 0,
    cnonce: str = "",
    qop: str | None = None,
    body: bytes = b"",
    session_ha1: str | None = None,
) -> str:
    """The ``response`` value (RFC 7616 section 3.4.1; RFC 2617 section 3.2.2).

    ``qop`` None is the RFC 2069 form. For -sess algorithms ``session_ha1`` may carry the HA1
    computed on the first use of the nonce; otherwise it is computed from ``cnonce``.
    """
    hash_name = ALGORITHMS[algorithm]

    def h(data: str | bytes) -> str:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        return hashlib.new(hash_name, raw).hexdigest()

    if algorithm.endswith("-sess"):
        ha1 = session_ha1 or h(f"{h(f'{username}:{realm}:{password}')}:{nonce}:{cnonce}")
    else:
        ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}:{h(body)}") if qop == "auth-int" else h(f"{method}:{uri}")
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}")
    return h(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _normal_host(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.rstrip(".")


PeerSpec = Address | tuple[str, int]


def _random_cnonce() -> str:
    return secrets.token_hex(16)


def _host_port(peer: PeerSpec) -> tuple[str, int]:
    if isinstance(peer, Address):
        return _normal_host(peer.host), peer.port
    return _normal_host(peer[0]), peer[1]


class DigestClient:
    """One set of credentials, bound to the trunk peer(s) it belongs to.

    ``peers`` are the transport addresses (resolved IPs and ports) the trunk's responses come
    from; ``realm``, if given, must also match. ``new_cnonce`` is the random source for client
    nonces (128 random bits in hex by default; tests inject a deterministic one).
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        peers: Iterable[PeerSpec],
        realm: str | None = None,
        new_cnonce: Callable[[], str] = _random_cnonce,
    ) -> None:
        self.username = username
        self._password = password
        self.realm = realm
        self.peers = frozenset(_host_port(p) for p in peers)
        if not self.peers:
            raise ValueError("credentials must be bound to at least one peer address")
        self._new_cnonce = new_cnonce
        # nonce -> (last nc used, session HA1 for -sess or None); oldest evicted first.
        self._nonces: dict[str, tuple[int, str | None]] = {}

    def __repr__(self) -> str:
        return f"DigestClient(username={self.username!r}, realm={self.realm!r}, peers=...)"

    def may_answer(self, challenge: DigestChallenge, source: PeerSpec) -> bool:
        """True only if ``source`` (where the 401/407 came from) is our peer and realm fits."""
        return self._check(challenge, source) is None

    def _check(self, challenge: DigestChallenge, source: PeerSpec) -> AuthRefused | None:
        if _host_port(source) not in self.peers:
            return AuthRefused(Refusal.WRONG_PEER, f"challenge from {source}")
        if self.realm is not None and challenge.realm != self.realm:
            return AuthRefused(Refusal.WRONG_REALM, f"realm {challenge.realm!r}")
        return None

    def authorize(
        self,
        challenge: DigestChallenge,
        source: PeerSpec,
        *,
        method: str,
        uri: str,
        body: bytes = b"",
    ) -> AuthHeader | AuthRefused:
        """Credentials for ``challenge``, received from ``source``, for one request.

        ``uri`` is the Request-URI of the request being sent (RFC 3261 section 22.4).
        Each call uses the next nc for the nonce, so call it once per request sent.
        """
        refused = self._check(challenge, source)
        if refused is not None:
            log.warning(
                "not answering digest challenge: %s (%s)", refused.refusal.value, refused.detail
            )
            return refused
        if not challenge.supported:
            return AuthRefused(
                Refusal.UNSUPPORTED, f"algorithm {challenge.algorithm}, qop {challenge.qop}"
            )
        qop: str | None = None
        if "auth" in challenge.qop:
            qop = "auth"
        elif "auth-int" in challenge.qop:
            qop = "auth-int"
        cnonce = self._new_cnonce() if qop is not None else ""
        nc, session_ha1 = self._nonces.pop(challenge.nonce, (0, None))
        nc += 1
        if challenge.algorithm.endswith("-sess") and session_ha1 is None:
            # RFC 7616 section 3.4.2: the session HA1 is fixed by the first cnonce.
            h = ALGORITHMS[challenge.algorithm]
            inner = hashlib.new(
                h, f"{self.username}:{challenge.realm}:{self._password}".encode()
            ).hexdigest()
            session_ha1 = hashlib.new(h, f"{inner}:{challenge.nonce}:{cnonce}".encode()).hexdigest()
        self._nonces[challenge.nonce] = (nc, session_ha1)
        while len(self._nonces) > MAX_NONCES:
            del self._nonces[next(iter(self._nonces))]
        response = digest_response(
            algorithm=challenge.algorithm,
            username=self.username,
            realm=challenge.realm,
            password=self._password,
            method=method,
            uri=uri,
            nonce=challenge.nonce,
            nc=nc,
            cnonce=cnonce,
            qop=qop,
            body=body,
            session_ha1=session_ha1,
        )
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(challenge.realm)}",
            f"nonce={_quote(challenge.nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(response)}",
            f"algorithm={challenge.algorithm}",
        ]
        if qop is not None:
            parts += [f"cnonce={_quote(cnonce)}", f"qop={qop}", f"nc={nc:08x}"]
        if challenge.opaque is not None:
            parts.append(f"opaque={_quote(challenge.opaque)}")
        return AuthHeader(
            challenge.credentials_header, "Digest " + ", ".join(parts), challenge.realm
        )

    def answer(
        self,
        request: Request,
        response: Response,
        source: PeerSpec,
        *,
        uri: str | None = None,
    ) -> AuthHeader | AuthRefused:
        """Handle a 401/407 to ``request`` that arrived from ``source``.

        Returns the header for the retried request, or ``AuthRefused`` when the caller must
        stop: the challenge is a stranger's, unsupported, or our credentials for that realm
        were already in ``request`` and the new challenge is not ``stale`` (RFC 3261 section
        22.2: do not retry credentials that were just rejected). ``uri`` defaults to
        ``str(request.uri)``.
        """
        challenges = challenges_in(response)
        if not challenges:
            return AuthRefused(Refusal.NO_CHALLENGE, f"status {response.status}")
        mine = [c for c in challenges if self._check(c, source) is None]
        if not mine:
            refused = self._check(challenges[0], source)
            assert refused is not None
            log.warning(
                "not answering digest challenge: %s (%s)", refused.refusal.value, refused.detail
            )
            return refused
        challenge = choose_challenge(mine)
        if challenge is None:
            return AuthRefused(Refusal.UNSUPPORTED, ", ".join(c.algorithm for c in mine))
        if not challenge.stale and self._sent_for(request, challenge):
            return AuthRefused(Refusal.REJECTED, f"realm {challenge.realm!r}")
        return self.authorize(
            challenge,
            source,
            method=request.method,
            uri=str(request.uri) if uri is None else uri,
            body=request.body,
        )

    def _sent_for(self, request: Request, challenge: DigestChallenge) -> bool:
        for name, value in request.headers:
            if name.lower() != challenge.credentials_header.lower():
                continue
            try:
                scheme, params = _parse_auth_params(value)
            except AuthError:
                continue
            if (
                scheme.lower() == "digest"
                and params.get("realm") == challenge.realm
                and params.get("username") == self.username
            ):
                return True
        return False


__all__ = [
    "ALGORITHMS",
    "AUTHORIZATION",
    "PROXY_AUTHENTICATE",
    "PROXY_AUTHORIZATION",
    "WWW_AUTHENTICATE",
    "AuthError",
    "AuthHeader",
    "AuthRefused",
    "DigestChallenge",
    "DigestClient",
    "Refusal",
    "challenges_in",
    "choose_challenge",
    "digest_response",
    "parse_challenge",
]
