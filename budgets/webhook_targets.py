"""Where webhook and Slack notifications may be sent.

A target must use an allowed scheme (NOTIFICATION_ALLOWED_SCHEMES), name an allowed host when
NOTIFICATION_ALLOWED_HOSTS is set, and reach only public addresses: not loopback, private,
link-local (cloud metadata at 169.254.169.254), shared, reserved or multicast ones, unless the
address lies in NOTIFICATION_ALLOWED_NETWORKS or NOTIFICATION_ALLOW_PRIVATE_NETWORKS is on.
Otherwise anyone who may configure a channel could make the server probe its own network.

The address rule is enforced on the address actually connected to, at send time: the connection
resolves the name once, checks every address it got and connects to one of those, so a name that
was public when the channel was saved and now resolves inward (DNS rebinding) is still refused.
Channels are also checked when saved, to refuse obvious mistakes early. Through an HTTP(S) proxy
from the environment the proxy connects, so the target's addresses are checked before the request
and the proxy's own resolution is trusted.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.parse
import urllib.request
from functools import cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.http.request import validate_host

TARGET_NOT_ALLOWED = "notification_target_not_allowed"
_WEB_SCHEMES = ("http", "https")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetNotAllowed(OSError):
    """A target the policy refuses. An OSError, so that urllib passes it up like any connection
    failure (as URLError.reason); the sender tells it apart and does not retry."""

    code = TARGET_NOT_ALLOWED


@cache
def _networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def address_is_internal(address: Address) -> bool:
    """Not a public unicast address: loopback, private, link-local, shared (CGNAT), reserved,
    unspecified, multicast, or an IPv4-mapped IPv6 form of one of those."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def address_check(address: str) -> None:
    """Refuse an internal address unless configured (TargetNotAllowed)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if not address_is_internal(ip) or settings.NOTIFICATION_ALLOW_PRIVATE_NETWORKS:
        return
    if any(ip in network for network in _networks(tuple(settings.NOTIFICATION_ALLOWED_NETWORKS))):
        return
    raise TargetNotAllowed(
        f"target address {ip} is internal (loopback, private, link-local or reserved); "
        "allow it with NOTIFICATION_ALLOWED_NETWORKS"
    )


def target_url_check(url: str) -> urllib.parse.SplitResult:
    """The URL's scheme and host against the policy (no DNS); returns its parts. An IP literal is
    checked as an address too. Raises TargetNotAllowed."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as error:
        raise TargetNotAllowed(f"target is not an http(s) URL: {url!r}") from error
    schemes = [scheme for scheme in settings.NOTIFICATION_ALLOWED_SCHEMES if scheme in _WEB_SCHEMES]
    if parts.scheme not in schemes or not hostname:
        raise TargetNotAllowed(
            f"target is not an http(s) URL with an allowed scheme ({', '.join(schemes)}): {url!r}"
        )
    allowed_hosts = settings.NOTIFICATION_ALLOWED_HOSTS
    if allowed_hosts and not validate_host(hostname, allowed_hosts):
        raise TargetNotAllowed(f"target host {hostname!r} is not in NOTIFICATION_ALLOWED_HOSTS")
    try:
        ipaddress.ip_address(hostname.split("%", 1)[0])
    except ValueError:
        return parts  # a name: its addresses are checked when resolved
    address_check(hostname)
    return parts


def _resolve(host: str, port: int) -> list[tuple]:
    return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)


def target_addresses_check(url: str) -> None:
    """The URL's policy and the addresses its host resolves to now (when it resolves: a name that
    does not is left to fail at send time, where it is checked again)."""
    parts = target_url_check(url)
    try:
        infos = _resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError:
        return
    for info in infos:
        address_check(info[4][0])


def notification_target_validate(*, kind: str, target: str) -> None:
    """A channel's target, when it is saved: webhook and Slack URLs by the policy (and the addresses
    their host resolves to now), e-mail targets as comma-separated addresses. Raises Django's
    ValidationError on `target`, code `notification_target_not_allowed` or `invalid_email`."""
    if kind == "email":
        for address in (part.strip() for part in target.split(",")):
            try:
                validate_email(address)
            except ValidationError as error:
                raise ValidationError(
                    {
                        "target": ValidationError(
                            f"{address!r} is not an e-mail address.", code="invalid_email"
                        )
                    }
                ) from error
        return
    try:
        target_addresses_check(target)
    except TargetNotAllowed as error:
        raise ValidationError({"target": ValidationError(str(error), code=TARGET_NOT_ALLOWED)}) from error


def guarded_create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, **kwargs):
    """socket.create_connection that resolves the host once, refuses it if any of its addresses is
    internal (a mix is a classic rebinding trick), and connects only to the addresses it checked."""
    host, port = address
    infos = _resolve(host, port)
    for info in infos:
        address_check(info[4][0])
    error: OSError | None = None
    for family, kind, protocol, _, sockaddr in infos:
        sock = socket.socket(family, kind, protocol)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as connect_error:
            error = connect_error
            sock.close()
    raise error or OSError(f"no address for {host!r}")


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = guarded_create_connection


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = guarded_create_connection


def _proxied(request: urllib.request.Request) -> bool:
    return bool(request._tunnel_host) or request.has_proxy()


class GuardedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        if _proxied(req):
            target_addresses_check(req.full_url)
            return self.do_open(http.client.HTTPConnection, req)
        return self.do_open(_GuardedHTTPConnection, req)


class GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        if _proxied(req):
            target_addresses_check(req.full_url)
            return self.do_open(http.client.HTTPSConnection, req, context=self._context)
        return self.do_open(_GuardedHTTPSConnection, req, context=self._context)
