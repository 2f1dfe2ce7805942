"""The admin HTTP listener: stats page, JSON stats and Prometheus metrics."""
