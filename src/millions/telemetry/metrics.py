"""Prometheus exposition helpers shared by components.

Each component process owns one default registry; `render()` returns the text format body
served on `/metrics`.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

# Latency buckets in seconds, fine-grained below 10 ms where proxies and caches live.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def render() -> bytes:
    """The current value of every metric in this process, in Prometheus text format."""
    return generate_latest(REGISTRY)
