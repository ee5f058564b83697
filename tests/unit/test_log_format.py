"""STREAMS_LOG_FORMAT=json: one JSON object a line with the same message; a bad value is a clear error."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest

from streams.ops.log_format import JsonFormatter, logging_config
from streams.settings import Settings, SettingsError


def test_a_record_is_one_json_line_with_the_message_and_the_exception_type():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("streams.test.json")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("tenant %s: %d events set aside", "acme", 3)
        try:
            raise KeyError("x")
        except KeyError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{"))
    assert first["message"] == "tenant acme: 3 events set aside" and first["level"] == "WARNING"
    assert first["logger"] == "streams.test.json" and first["ts"].endswith("+00:00")
    assert second["exc_type"] == "KeyError" and "Traceback" in second["exc"]


def test_the_worker_config_uses_the_json_formatter_only_when_asked():
    assert logging_config("INFO", "json")["formatters"]["default"]["()"].endswith("JsonFormatter")
    assert "format" in logging_config("INFO", "text")["formatters"]["default"]
    # dictConfig builds the formatter from its dotted name ("()"): it must resolve
    factory = logging.config.DictConfigurator({}).resolve(logging_config("INFO", "json")["formatters"]["default"]["()"])
    assert factory is JsonFormatter


def test_an_unknown_format_is_a_settings_error():
    with pytest.raises(SettingsError, match="STREAMS_LOG_FORMAT must be one of text, json"):
        Settings.from_env({"STREAMS_LOG_FORMAT": "xml"})
    assert Settings.from_env({}).log_format == "text"
