"""spanmeter's monitoring assets: Grafana dashboards and Prometheus rules, generated from
the metric catalogue (``python -m dashboards.generate``), and the script that renders
real query results to a picture (``python -m dashboards.render``)."""
