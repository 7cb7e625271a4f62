"""The stack example runs against a real loopback service."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import fluxus
import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_method_shares_one_stack(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    example = load("service_client")
    server = example.serve()
    try:
        client = example.InventoryClient(f"http://127.0.0.1:{server.server_port}")
        with fluxus.testing.testing():
            assert 7 == client.stock("apple")
            assert client.reserve("apple", 2)
    finally:
        server.shutdown()
        server.server_close()

    stock, reserve = (
        fluxus.layers(example.InventoryClient.stock),
        fluxus.layers(example.InventoryClient.reserve),
    )
    assert stock == reserve == example.inventory.policies
    assert () == fluxus.layers(example.InventoryClient._get)


@pytest.mark.timeout(60)
def test_the_example_runs_as_a_script(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "service_client.py")],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        cwd=tmp_path,
    )
    assert 0 == result.returncode, result.stderr
    assert "apple 7 True" in result.stdout


def test_the_flask_example_protects_a_view_with_the_stack(tmp_path, monkeypatch):
    import runpy

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    example = runpy.run_path(str(EXAMPLES / "flask_app.py"))
    client = example["app"].test_client()

    with fluxus.testing.testing():
        answers = [client.post(f"/orders/o-{n}") for n in range(4)]

    assert [201] * 4 == [answer.status_code for answer in answers]
    assert "receipt-o-3" == answers[3].json["receipt"]
    orders = example["orders"]
    assert orders.policies == fluxus.layers(example["place_order"])
    retry = orders.policies[-1]
    assert 1 <= retry.stats.retries  # the order service fails every third call
    letters = fluxus.sinks.JsonlFile(tmp_path / "orders-dead-letters.jsonl")
    assert [] == list(letters.letters())

    breaker = orders.policies[2]
    breaker.open()
    try:
        refused = client.post("/orders/o-9")
    finally:
        breaker.reset()
    assert 503 == refused.status_code
    # The client was told to come back (503): a rejection is no letter, or
    # a replay would place the order twice.
    assert [] == list(letters.letters())
