"""Library records (aiokafka) go through the project's structlog setup at the right level."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from aiokafka import errors as kafka_errors

from streamcover.log import configure_logging, get_logger


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    root = logging.getLogger()
    level = root.level
    configure_logging("info", "json")
    capsys.readouterr()
    yield capsys
    configure_logging("info", "console")
    root.setLevel(level)
    structlog.reset_defaults()


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_aiokafka_records_are_structlog_json(json_logs: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("aiokafka.conn").error("Unable connect to node with id %s: %s", 1,
                                             kafka_errors.KafkaConnectionError("refused"))
    logging.getLogger("aiokafka.consumer.fetcher").warning("fetch of %s lagging", "t-0")
    logging.getLogger("aiokafka.consumer.fetcher").info("routine chatter")
    get_logger("streamcover.test").info("own_event", n=3)
    lines = _lines(json_logs)
    by_event = {str(line["event"]): line for line in lines}
    err = by_event["Unable connect to node with id 1: KafkaConnectionError: refused"]
    assert err["level"] == "error" and err["logger"] == "aiokafka.conn" and "timestamp" in err
    assert by_event["fetch of t-0 lagging"]["level"] == "warning"
    assert "routine chatter" not in by_event  # libraries pass at WARNING and above
    assert by_event["own_event"]["n"] == 3
    assert len(lines) == 3


def test_coordinator_not_available_during_broker_start_is_not_an_error(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    coordinator.error("Group Coordinator Request failed: %s",
                      kafka_errors.GroupCoordinatorNotAvailableError())
    coordinator.error("Group Coordinator Request failed: %s",
                      kafka_errors.CoordinatorLoadInProgressError())
    coordinator.error("Group Coordinator Request failed: %s",
                      kafka_errors.GroupAuthorizationFailedError())  # a real one stays an error
    lines = _lines(json_logs)
    assert len(lines) == 1 and lines[0]["level"] == "error"
    assert "GroupAuthorizationFailedError" in str(lines[0]["event"])


def test_demoted_records_show_at_info_when_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    from streamcover.log import TransientKafkaFilter

    record = logging.LogRecord("aiokafka.consumer.group_coordinator", logging.ERROR, __file__, 1,
                               "Group Coordinator Request failed: %s",
                               (kafka_errors.GroupCoordinatorNotAvailableError(),), None)
    assert TransientKafkaFilter().filter(record)
    assert (record.levelno, record.levelname) == (logging.INFO, "INFO")
    other = logging.LogRecord("myapp", logging.ERROR, __file__, 1, "x %s",
                              (kafka_errors.GroupCoordinatorNotAvailableError(),), None)
    TransientKafkaFilter().filter(other)
    assert other.levelno == logging.ERROR  # only aiokafka's own records are demoted


class _Seen(logging.Handler):
    """Collects records as the handlers before it left them (after the demotion)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.slow
async def test_first_group_member_on_a_fresh_broker_logs_no_error(
    restartable_broker: object, json_logs: pytest.CaptureFixture[str]
) -> None:
    """What ops/demo.sh showed at every start: a fresh broker has no group coordinator until
    its offsets topic exists, and aiokafka logs the retried lookups at ERROR."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    from consumers.kafka import consumer_kwargs, ensure_topics
    from streamcover.config import KafkaSettings

    settings = KafkaSettings(bootstrap_servers=restartable_broker.bootstrap_servers,  # type: ignore[attr-defined]
                             audio_topic="t.log", group_id="g-log")
    await ensure_topics(settings, {"t.log": 1})
    seen = _Seen()
    logging.getLogger().addHandler(seen)
    try:
        consumer = AIOKafkaConsumer("t.log", **consumer_kwargs(settings))
        await consumer.start()
        try:
            async with asyncio.timeout(60):
                while not consumer.assignment():
                    await consumer.getmany(timeout_ms=500)
        finally:
            await consumer.stop()
    finally:
        logging.getLogger().removeHandler(seen)
    transient = [r for r in seen.records
                 if any(type(a).__name__ == "GroupCoordinatorNotAvailableError" for a in
                        (r.args if isinstance(r.args, tuple) else ()))]
    assert transient, "the broker had a coordinator at once: the condition did not occur"
    assert all(r.levelno == logging.INFO for r in transient)
    lines = _lines(json_logs)
    assert not [line for line in lines if line["level"] == "error"], lines
