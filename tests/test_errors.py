"""One exception tree: every error trustgap raises on purpose has one root, and the old import paths still work."""

from __future__ import annotations

import inspect

import pytest

from stream import admin, client, embedded, errors, events, overview, settings

CLASSES = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]


def test_the_tree_is_not_empty() -> None:
    # a rename that emptied the module would make the next test pass vacuously
    assert {"ConfigError", "CliError", "ClientError", "BrokerUnreachable", "RedisUnreachable"} <= {
        c.__name__ for c in CLASSES}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_error_derives_from_trustgap_error(cls: type[Exception]) -> None:
    assert issubclass(cls, errors.TrustgapError)


@pytest.mark.parametrize("name", ["ClientError", "InvalidEvent", "NaiveTimestamp", "BufferFull", "DeliveryError",
                                  "BrokerUnreachable", "ClientClosed"])
def test_the_sdk_re_exports_the_tree_s_classes(name: str) -> None:
    # `from stream.client import ClientError` is public API: it must be the very class the tree defines
    assert getattr(client, name) is getattr(errors, name)
    assert name in client.__all__


def test_the_other_old_homes_re_export_the_same_objects() -> None:
    assert settings.ConfigError is errors.ConfigError
    assert admin.BrokerUnreachable is errors.BrokerUnreachable
    assert embedded.EmbeddedError is errors.EmbeddedError
    assert overview.Unreachable is errors.Unreachable


def test_the_sdk_and_the_contract_share_one_topic_map_and_the_literals() -> None:
    assert client.TOPIC_OF is events.TOPIC_OF
    assert (client.Action, client.OutcomeKind, client.AnnotationKind) == (
        events.Action, events.OutcomeKind, events.AnnotationKind)


def test_an_sdk_error_is_caught_by_the_root_and_keeps_its_builtin_base() -> None:
    with pytest.raises(errors.TrustgapError):
        raise client.NaiveTimestamp("naive")
    assert issubclass(client.InvalidEvent, ValueError)
    assert issubclass(client.BrokerUnreachable, errors.Unreachable)
