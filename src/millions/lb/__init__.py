"""The per-DC load balancer: an HTTP/1.1 reverse proxy with health checks.

- `balancer`: the pure core (health state machine, least-outstanding choice).
- `health`: active `GET /healthz` checks.
- `backends_file`: the `{"backends": [...]}` file read at start and on SIGHUP.
- `service`: `LoadBalancer`, wiring the core to the proxy core (`millions.proxy`).
- `metrics`: Prometheus collector over the hot-path counters.
- `main`: `run()`, the process entry point.
"""
