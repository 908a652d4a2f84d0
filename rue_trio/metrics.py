"""Prometheus metrics: connections, handshakes, traffic, hubs and backplanes.

Needs the ``metrics`` extra (``pip install "rue_trio[metrics]"``, which installs
``prometheus_client``). Serve them from your app::

    from rue_trio.metrics import metrics_endpoint

    app.get("/metrics", metrics_endpoint(hubs={"chat": hub}))

Nothing is counted per message: the :class:`RueTrioCollector` reads the statistics the
connections, hubs and backplanes keep anyway, when Prometheus scrapes. The connection
metrics cover every :class:`~rue_trio.WebSocketHandler` of the process; the hub and
backplane metrics cover the hubs you name, labelled ``hub="<name>"``.

The metric names all start with ``rue_trio_``; the metrics page of the documentation
lists them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._tally import TALLY
from .app import Context, RouteFunction
from .hub import Hub

__all__ = ["RueTrioCollector", "metrics_endpoint"]


class RueTrioCollector(Collector):
    """A Prometheus collector of rue_trio's statistics, read at scrape time.

    Register it in a registry of yours (``prometheus_client.REGISTRY.register(...)``)
    to serve it next to your own metrics, or let :func:`metrics_endpoint` build one.

    Args:
        hubs: the hubs to report, by the name their ``hub`` label takes.
    """

    def __init__(self, hubs: Mapping[str, Hub] | None = None) -> None:
        self.hubs = dict(hubs or {})

    def collect(self) -> Iterator[Metric]:
        """Yield the current value of every metric (called by the registry)."""
        yield GaugeMetricFamily(
            "rue_trio_websocket_connections", "WebSocket connections open.", len(TALLY.open)
        )
        handshakes = CounterMetricFamily(
            "rue_trio_websocket_handshakes",
            "WebSocket upgrade requests answered, by HTTP status (101: accepted).",
            labels=["status"],
        )
        for status, count in sorted(TALLY.handshakes.items()):
            handshakes.add_metric([str(status)], count)
        yield handshakes
        closes = CounterMetricFamily(
            "rue_trio_websocket_closes",
            "WebSocket connections closed, by close code.",
            labels=["code"],
        )
        for code, count in sorted(TALLY.closes.items()):
            closes.add_metric([str(code)], count)
        yield closes
        traffic = TALLY.traffic()
        for name, value, help_text in (
            ("messages_received", traffic.messages_received, "Data messages received."),
            ("messages_sent", traffic.messages_sent, "Data messages sent with send()."),
            ("bytes_received", traffic.bytes_received, "Bytes read from WebSocket transports."),
            ("bytes_sent", traffic.bytes_sent, "Bytes written to WebSocket transports."),
        ):
            yield CounterMetricFamily(f"rue_trio_websocket_{name}", help_text, value)
        yield from self._hub_metrics()

    def _hub_metrics(self) -> Iterator[Metric]:
        label = ["hub"]
        members = GaugeMetricFamily("rue_trio_hub_members", "Hub members.", labels=label)
        rooms = GaugeMetricFamily("rue_trio_hub_rooms", "Hub rooms with a member.", labels=label)
        counters = _counters(
            "rue_trio_hub_",
            broadcasts="Broadcasts the hub processed.",
            deliveries="Frames hub members accepted.",
            dropped="Frames dropped for full members (policy drop).",
            evicted="Slow members closed with 1008 (policy close).",
        )
        connected = GaugeMetricFamily(
            "rue_trio_backplane_connected", "1 while the link to the broker is up.", labels=label
        )
        backplane = _counters(
            "rue_trio_backplane_",
            published="Envelopes sent to the broker.",
            received="Envelopes of other nodes received from the broker.",
            lost="Envelopes published while the link was down.",
            reconnects="Times the link to the broker came back.",
        )
        dropped = CounterMetricFamily(
            "rue_trio_backplane_dropped",
            "Envelopes dropped at a full queue, inbound or outbound.",
            labels=["hub", "direction"],
        )
        for name, hub in self.hubs.items():
            stats = hub.statistics()
            members.add_metric([name], stats.members)
            rooms.add_metric([name], stats.rooms)
            for field, family in counters.items():
                family.add_metric([name], getattr(stats, field))
            link = stats.backplane
            if link is None:
                continue
            connected.add_metric([name], 1 if link.connected else 0)
            for field, family in backplane.items():
                family.add_metric([name], getattr(link, field))
            dropped.add_metric([name, "inbound"], link.dropped_inbound)
            dropped.add_metric([name, "outbound"], link.dropped_outbound)
        yield members
        yield rooms
        yield from counters.values()
        yield connected
        yield from backplane.values()
        yield dropped


def _counters(prefix: str, **help_texts: str) -> dict[str, CounterMetricFamily]:
    """One counter per statistics field, labelled by hub, named ``prefix + field``."""
    return {
        field: CounterMetricFamily(prefix + field, text, labels=["hub"])
        for field, text in help_texts.items()
    }


def metrics_endpoint(
    *, hubs: Mapping[str, Hub] | None = None, registry: CollectorRegistry | None = None
) -> RouteFunction:
    """A route that answers with the metrics in Prometheus' text format.

    ``app.get("/metrics", metrics_endpoint(hubs={"chat": hub}))``.

    Args:
        hubs: the hubs to report, by name (see :class:`RueTrioCollector`).
        registry: serve this registry, after registering a
            :class:`RueTrioCollector` in it (pass ``prometheus_client.REGISTRY`` to add
            rue_trio's metrics to the ones your application defines). By default, a
            registry of its own with rue_trio's metrics and the process, platform and
            garbage-collector metrics of ``prometheus_client``.

    Returns:
        The route function.
    """
    if registry is None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    registry.register(RueTrioCollector(hubs))
    serving = registry

    async def metrics(c: Context) -> None:
        await c.bytes(200, generate_latest(serving), CONTENT_TYPE_LATEST)

    return metrics
