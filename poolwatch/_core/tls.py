"""What poolwatch asks of a TLS session: HTTP/1.1, by ALPN."""

from __future__ import annotations

import ssl

__all__ = ["offer_http11"]

_ALPN = ["http/1.1"]


def offer_http11(context: ssl.SSLContext) -> None:
    """Offer only HTTP/1.1 by ALPN, as urllib3 and httpcore do, on the
    caller's context too: a server able to speak h2 must not pick it for a
    client that speaks HTTP/1.1 only."""
    context.set_alpn_protocols(_ALPN)
