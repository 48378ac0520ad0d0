"""Grafana dashboards and alert rules as code, and their provisioning (``python -m dashboards``)."""
