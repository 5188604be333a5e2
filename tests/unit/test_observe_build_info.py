"""lvsagent_build_info: one series naming what runs, whatever the snapshot says."""

from __future__ import annotations

import importlib.metadata
import platform

from prometheus_client.parser import text_string_to_metric_families

from lvsagent import __version__
from lvsagent.observe.metrics import Metrics


def test_build_info_names_lvsagent_python_and_the_libraries() -> None:
    # No snapshot yet (the daemon is starting): the series is there all the same.
    text = Metrics(lambda: None).render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (sample,) = families["lvsagent_build_info"].samples
    assert sample.value == 1.0
    assert sample.labels == {
        "version": __version__,
        "python_version": platform.python_version(),
        "pyroute2_version": importlib.metadata.version("pyroute2"),
        "prometheus_client_version": importlib.metadata.version("prometheus_client"),
    }
