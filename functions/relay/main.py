"""CloudEvent entry point: one Pub/Sub message is routed, rewritten and sent.

Raising makes Pub/Sub redeliver (transient failures); returning acknowledges.
"""

import functions_framework
from cloudevents.http.event import CloudEvent

from tagrelay.app import build_relay, cold_start

_service = cold_start(build_relay)


@functions_framework.cloud_event
def relay(cloud_event: CloudEvent) -> None:
    _service.handle_event_data(cloud_event.get_data())
