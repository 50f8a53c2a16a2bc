"""Where simulated users of a running topology go: the site's name through the geo DNS.

With the topology's DNS server on, users open `http://www.<zone>:<port>` and resolve it
from their region's client network, so the DNS decides which DC serves them, as it would
for real users. Without it, they are spread over the DCs' load balancers directly.
"""

from __future__ import annotations

from millions.load.config import GeoDnsClients
from millions.topology.config import MillionsConfig


def topology_targets(config: MillionsConfig) -> tuple[list[str], GeoDnsClients | None]:
    """The targets and geo DNS settings of a `LoadConfig` for users of `config`."""
    if config.dns.enabled:
        sources = {
            region: source
            for region in config.regions()
            if (source := config.client_source(region)) is not None
        }
        if sources:
            return [config.site_url()], GeoDnsClients(config.dns_address, sources)
    return [config.lb_url(dc) for dc in config.dcs], None
