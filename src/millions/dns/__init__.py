"""Geo DNS: an authoritative DNS server that sends each client to its nearest healthy
data center (`www.<zone>`) and CDN edge (`cdn.<zone>`).

The client's region comes from EDNS Client Subnet or the packet's source address
(`regions`), each region has a preference order of data centers, and health checks plus
operator drains decide which of them may answer (`health`, `answers`). Layout:
`config` (the model), `zone` (records), `answers` (the pure decision), `responder` (wire
in, wire out), `server` (UDP/TCP listeners), `checker` (health-check I/O), `admin` (the
drain/state API and its client), `main` (the process).
"""
