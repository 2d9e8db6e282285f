"""Settings: defaults, per-model overrides, env over file, and one-line errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.settings import ConfigError, ModelSettings, load


def test_model_overrides_merge_onto_defaults_field_by_field() -> None:
    s = load(None, defaults={"min_samples": 5, "window_seconds": 600},
             models={"fraud": {"window_seconds": 60, "band_cuts": [0.5], "band_names": ["low", "high"]}})
    assert s.for_model("fraud").window_seconds == 60
    assert s.for_model("fraud").min_samples == 5          # inherited from defaults
    assert s.for_model("unknown").window_seconds == 600   # models without overrides use the defaults


def test_env_wins_over_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "trustgap.yaml"
    cfg.write_text("redis_url: redis://file:6379/0\ntopic_partitions: 3\nmodels:\n  claims:\n    min_samples: 9\n")
    monkeypatch.setenv("TRUSTGAP_TOPIC_PARTITIONS", "12")
    s = load(cfg)
    assert s.topic_partitions == 12
    assert s.redis_url.get_secret_value() == "redis://file:6379/0"
    assert s.for_model("claims").min_samples == 9


def test_the_embedded_stack_is_only_a_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("broker_url: kafka://prod:9092\n")
    s = load(cfg, fallback={"broker_url": "kafka://127.0.0.1:1", "redis_url": "redis://127.0.0.1:2/0"})
    assert s.broker_url == "kafka://prod:9092"
    assert s.redis_url.get_secret_value() == "redis://127.0.0.1:2/0"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"defaults": {"window_seconds": 0}}, "bad setting defaults.window_seconds: Input should be greater than 0"),
    ({"models": {"m": {"band_cuts": [0.7, 0.3], "band_names": ["a", "b", "c"]}}}, "band_cuts must be ascending"),
    ({"models": {"m": {"band_cuts": [0.5], "band_names": ["a"]}}}, "one more name than band_cuts"),
    ({"broker_heartbeat_interval": 10, "broker_session_timeout": 6}, "heartbeat_interval must be below"),
    ({"topic_partitions": "many"}, "bad setting topic_partitions"),
    ({"reids_url": "redis://x"}, "bad setting reids_url: Extra inputs are not permitted"),  # a typo is caught
])
def test_bad_settings_fail_with_one_line_that_says_what_to_fix(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(None, **overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_env_var_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTGAP_DEFAULTS__MIN_SAMPLES", "-3")
    with pytest.raises(ConfigError, match="TRUSTGAP_DEFAULTS__MIN_SAMPLES"):
        load(None)


@pytest.mark.parametrize(("text", "message"), [
    ("a: [unclosed", "is not valid YAML"),
    ("- just\n- a list\n", "must hold a mapping"),
])
def test_unreadable_config_files(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load(cfg)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config file /nope.yaml"):
        load("/nope.yaml")


@pytest.mark.parametrize(("score", "band"), [
    (None, "all"), (0.0, "low"), (0.29, "low"), (0.3, "medium"), (0.99, "high"), (1.0, "high"),
])
def test_band_from_score_cut_points(score: float | None, band: str) -> None:
    ms = ModelSettings(band_cuts=[0.3, 0.7], band_names=["low", "medium", "high"])
    assert ms.band_for(score) == band
