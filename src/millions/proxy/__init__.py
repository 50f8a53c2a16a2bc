"""The shared HTTP/1.1 proxy core of the load balancer and the CDN edge.

asyncio Protocols on uvloop with httptools (llhttp) parsing on both sides:

- `server`: the client side (`ProxyServer`, `HttpServerProtocol`): strict parsing,
  keep-alive, in-order pipelining, slowloris and idle timeouts.
- `exchange`: one request and its response (`Exchange`), forwarded with retries through an
  `UpstreamPicker` or answered locally; a `RequestHandler` decides which.
- `upstream`: keep-alive connections per upstream server (`UpstreamPool`).
- `bodies`: local bodies that are not bytes: file regions sent with os.sendfile
  (`Exchange.respond_file`) and streams the handler writes (`Exchange.respond_stream`).
- `http11`: the wire pieces (status lines, framing, header classes, request ids).
"""

from millions.proxy.exchange import Exchange, RequestHandler, UpstreamPicker
from millions.proxy.pickers import SingleUpstream
from millions.proxy.server import HttpServerProtocol, ProxyServer
from millions.proxy.settings import ProxySettings
from millions.proxy.stats import ProxyStats
from millions.proxy.upstream import UpstreamConnection, UpstreamPool

__all__ = [
    "Exchange",
    "HttpServerProtocol",
    "ProxyServer",
    "ProxySettings",
    "ProxyStats",
    "RequestHandler",
    "SingleUpstream",
    "UpstreamConnection",
    "UpstreamPicker",
    "UpstreamPool",
]
