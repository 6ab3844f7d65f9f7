"""Each test's outcome on its item, so that a failing cluster test prints the cluster's state."""

from __future__ import annotations

import pytest

from tests.k8s.cluster import diagnose


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def explain_failures(request):
    """On a failing test in a namespace of its module's own, print what the cluster says there: events, and the
    unhealthy pods' state and logs."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "namespace" in request.fixturenames:
        print(diagnose(request.getfixturevalue("namespace")))
