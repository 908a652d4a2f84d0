"""Prometheus metrics: scraped from /metrics over a real socket, parsed by prometheus_client."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from rue_trio import App, Context, Hub, InvalidStatusError, WebSocketHandler, open_websocket
from rue_trio.hub import BackplaneStatistics, HubStatistics

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families

from rue_trio.metrics import RueTrioCollector, metrics_endpoint

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> tuple[str, Samples]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return head.decode(), samples


def app_with_metrics(hub: Hub) -> App:
    app = App()
    app.add_background(hub.run)
    handler = WebSocketHandler(
        hub=hub, on_message=lambda conn, t, d: conn.send(t, d), allowed_origins=["https://ok"]
    )

    @app.get("/ws")
    async def ws(c: Context) -> None:
        await handler.handle(c)

    app.get("/metrics", metrics_endpoint(hubs={"chat": hub}))
    return app


async def test_metrics_scrape_counts_connections_handshakes_traffic_and_hub() -> None:
    hub = Hub()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            ((_, port),) = await nursery.start(app_with_metrics(hub).serve, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{port}/ws"
            _, before = await scrape(port)
            with pytest.raises(InvalidStatusError):
                async with open_websocket(url, origin="https://evil"):
                    pass
            async with open_websocket(url) as first, open_websocket(url) as second:
                await first.send_text("hello")
                assert (await first.receive()).data == "hello"
                await second.send_bytes(b"\x00" * 100)
                assert (await second.receive()).data == b"\x00" * 100
                await trio.testing.wait_all_tasks_blocked()
                head, during = await scrape(port)
                await second.close()
            # The server ends its side just after the client saw the close: poll.
            while True:
                _, after = await scrape(port)
                if (
                    after["rue_trio_websocket_connections", ()]
                    == before["rue_trio_websocket_connections", ()]
                ):
                    break
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    assert "content-type: text/plain; version=" in head.lower()

    def delta(samples: Samples, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return samples.get(key, 0.0) - before.get(key, 0.0)

    assert delta(during, "rue_trio_websocket_connections") == 2
    assert delta(after, "rue_trio_websocket_connections") == 0
    assert delta(during, "rue_trio_websocket_handshakes_total", status="101") == 2
    assert delta(during, "rue_trio_websocket_handshakes_total", status="403") == 1
    assert delta(after, "rue_trio_websocket_closes_total", code="1000") == 2
    assert delta(during, "rue_trio_websocket_messages_received_total") == 2
    assert delta(after, "rue_trio_websocket_messages_sent_total") == 2
    # Compressed (permessage-deflate is on): 100 zero bytes take far fewer.
    assert delta(during, "rue_trio_websocket_bytes_received_total") > 2 * 6
    assert delta(after, "rue_trio_websocket_bytes_sent_total") > 2 * 2
    assert during[("rue_trio_hub_members", (("hub", "chat"),))] == 2
    assert after[("rue_trio_hub_members", (("hub", "chat"),))] == 0
    assert ("rue_trio_hub_deliveries_total", (("hub", "chat"),)) in during
    assert all(name.startswith(("rue_trio_", "process_", "python_")) for name, _ in during)


class StubHub:
    """Only what the collector reads: statistics(), here with a backplane."""

    def statistics(self) -> HubStatistics:
        return HubStatistics(
            members=3,
            rooms=2,
            broadcasts=10,
            deliveries=30,
            encodes=10,
            dropped=1,
            evicted=2,
            inbox_queued=0,
            publishers_waiting=0,
            backplane=BackplaneStatistics(
                connected=False,
                published=7,
                received=5,
                delivered=4,
                dropped_inbound=1,
                dropped_outbound=2,
                lost=3,
                reconnects=1,
                subscriptions=2,
            ),
        )


def test_metrics_collector_reports_hub_and_backplane() -> None:
    hub: Any = StubHub()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in RueTrioCollector({"a": hub}).collect()
        for sample in family.samples
    }
    a = (("hub", "a"),)
    assert samples[("rue_trio_hub_members", a)] == 3
    assert samples[("rue_trio_hub_rooms", a)] == 2
    assert samples[("rue_trio_hub_evicted_total", a)] == 2
    assert samples[("rue_trio_hub_dropped_total", a)] == 1
    assert samples[("rue_trio_backplane_connected", a)] == 0
    assert samples[("rue_trio_backplane_published_total", a)] == 7
    assert samples[("rue_trio_backplane_received_total", a)] == 5
    assert samples[("rue_trio_backplane_lost_total", a)] == 3
    assert samples[("rue_trio_backplane_dropped_total", (("direction", "outbound"), *a))] == 2


async def test_metrics_demo_serves_metrics_with_its_hub() -> None:
    from rue_trio._demo import make_app
    from rue_trio.testing import open_test_app

    async with open_test_app(make_app()) as client:
        response = await client.request("GET", "/metrics")
    assert response.status == 200
    families = {f.name for f in text_string_to_metric_families(response.body.decode())}
    assert {"rue_trio_hub_members", "rue_trio_websocket_connections"} <= families
    assert 'rue_trio_hub_members{hub="chat"} 0.0' in response.body.decode()
