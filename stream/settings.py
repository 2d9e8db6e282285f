"""One settings object: env vars `TRUSTGAP_*` (nested with `__`) over an optional YAML file over defaults.

Per-model overrides live under `models:` and are merged onto `defaults:` field by field, so every model has a
complete, validated `ModelSettings` at start. A bad value fails at start with one line that says what to fix
(`explain`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError as ConfigError  # defined in the one tree; callers catch it as settings.ConfigError
from .events import Limits, PredictionEvent
from .windows import Stage, stages

ENV_PREFIX = "TRUSTGAP_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Topics(_Strict):
    """Kafka topic names (the contract's defaults)."""

    predictions: str = Field("trustgap.predictions", description="topic the model services send predictions to")
    actions: str = Field("trustgap.actions", description="topic of the humans' actions on predictions (accept, "
                         "override, bypass, escalate)")
    outcomes: str = Field("trustgap.outcomes", description="topic of the real outcomes (truth or proxy)")
    annotations: str = Field("trustgap.annotations", description="topic of annotations: known events (a campaign, "
                             "a release) that explain a change")
    alerts: str = Field("trustgap.alerts", description="topic trustgap publishes its alignment alerts to")
    dlq: str = Field("trustgap.dlq", description="dead-letter topic: invalid input, each message with its reason")


class ModelSettings(_Strict):
    """Per-model behaviour; `defaults:` sets it for all models, `models.<name>:` overrides fields for one."""

    window_seconds: int = Field(3600, gt=0, description="tumbling window size, seconds, aligned to the epoch")
    allowed_lateness_seconds: int = Field(600, ge=0, description="how far (s) behind the partitions' event time "
                                          "(the oldest of the newest events of the partitions that are not idle) a "
                                          "window stays open")
    band_cuts: list[float] = Field(default_factory=list, description="ascending score cut points for `band` "
                                   "(lower-inclusive upper bounds); without them a prediction's band is `all` unless "
                                   "its event names one")
    band_names: list[str] = Field(default_factory=list, description="the bands' names, low to high: one more "
                                   "than `band_cuts`")
    baseline_windows: int = Field(168, gt=0, description="trailing closed windows that form the "
                                  "baseline (168: a week of the default hourly windows)")
    min_samples: int = Field(50, gt=0, description="smallest window (and baseline) count that is tested")
    min_gap: float = Field(0.05, ge=0, le=1, description="practical minimum rate gap (absolute: 0.05 is five "
                           "points) worth an alert")
    min_gap_relative: float | None = Field(None, gt=0, description="also practical: a rate's (or share's) gap of "
                                           "this multiple of its baseline (2: tripled), for low base rates a fixed "
                                           "`min_gap` cannot see: a fraud rate going 1% to 3% can alert while high "
                                           "base rates keep `min_gap`; the smaller of the two minimums applies; not "
                                           "for `proxy_divergence`, a difference with no base rate")
    alpha: float = Field(0.01, gt=0, lt=1, description="family-wise significance level per model and window")
    persistence: int = Field(3, gt=0, description="consecutive candidate windows before an alert is sustained")
    resolve_after: int = Field(2, gt=0, description="clean windows before a sustained alert resolves")
    features_allow: list[str] = Field(default_factory=list,
                                      description="feature names to watch; empty watches every "
                                                  "numeric and string feature")
    features_deny: list[str] = Field(default_factory=list, description="feature names never watched "
                                     "(wins over `features_allow`)")
    max_features: int = Field(50, ge=0, le=1000,
                              description="most features tracked per model, first come "
                                          "first tracked; values of further ones are only counted, in "
                                          "`trustgap_feature_values_untracked_total`")
    feature_scale_factor: float = Field(10.0, gt=1, description="RMS ratio against the "
                                        "baseline (either way) that is a `feature_scale_shift`")
    feature_missing_gap: float = Field(0.2, gt=0, le=1,
                                       description="null-or-absent rate above the baseline's that is a "
                                                   "`feature_missing`")
    outcome_value_worse: Literal["higher", "lower"] = Field(
        "higher", description="which way a move of the truth outcomes' value per prediction is bad: `higher` for a "
                              "loss ratio or claim cost, `lower` for revenue or minutes watched")
    outcome_value_min_change: float = Field(0.1, gt=0, description="practical minimum relative change of the value "
                                            "per prediction worth an alert (0.1: 10%)")
    feature_novel_gap: float = Field(0.1, gt=0, le=1, description="share of a string feature's values outside "
                                     "its baseline's known values (or in a catch-all) above the baseline's that is a "
                                     "`feature_novel_values`")
    feature_catch_all: list[str] = Field(default_factory=lambda: ["other", "unknown", ""], description="string "
                                         "values that mean \"not categorised\": always counted as novel")
    concentration_share: float = Field(0.7, gt=0.5, le=1,
                                       description="share of a model-level excess one scope must carry to be "
                                                   "named the place to investigate")
    action_horizon_seconds: int = Field(86400, gt=0, description="how long after its prediction an action "
                                        "still counts toward the prediction's window; later ones are counted as "
                                        "`beyond_horizon`")
    outcome_horizon_seconds: int = Field(7 * 86400, gt=0, description="how long after its prediction an outcome "
                                         "still counts toward the prediction's window (claims and chargebacks take "
                                         "days); later ones are counted as `beyond_horizon`; no horizon may "
                                         "exceed `context_ttl_seconds`")
    checkpoints_seconds: list[int] = Field(default_factory=list, description="ages after their prediction at "
                                           "which follow-ups are judged, each up to its kind's horizon; empty: one "
                                           "window, one day and the horizon (1 h, 1 d for actions; 1 h, 1 d, 7 d "
                                           "for outcomes, with the defaults)")

    @model_validator(mode="after")
    def _bands_consistent(self) -> ModelSettings:
        if self.band_cuts != sorted(self.band_cuts):
            raise ValueError("band_cuts must be ascending")
        if self.band_cuts and len(self.band_names) != len(self.band_cuts) + 1:
            raise ValueError("band_names needs exactly one more name than band_cuts")
        return self

    def checkpoints_ms(self, kind: Literal["a", "o"]) -> tuple[int, ...]:
        """The ages (ms after a prediction) at which its actions ('a') or outcomes ('o') are judged, ascending,
        the last one the kind's horizon."""
        horizon = self.action_horizon_seconds if kind == "a" else self.outcome_horizon_seconds
        ages = self.checkpoints_seconds or [self.window_seconds, 86400]
        return tuple(s * 1000 for s in sorted({a for a in ages if 0 < a < horizon} | {horizon}))

    def stages(self) -> tuple[Stage, ...]:
        """Every stage a window of this model is judged in (stream.windows.stages)."""
        return stages(self.checkpoints_ms("a"), self.checkpoints_ms("o"))

    def band_for(self, score: float | None) -> str:
        """The band a score falls in (cut points are lower-inclusive upper bounds), or `all` without cuts."""
        if score is None or not self.band_cuts:
            return "all"
        for cut, name in zip(self.band_cuts, self.band_names[:-1], strict=True):
            if score < cut:
                return name
        return self.band_names[-1]


class Settings(BaseSettings):
    """Everything a worker, the CLI and the simulator read; docs/settings.md is generated from the fields."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                      frozen=True)

    broker_url: str = Field("kafka://127.0.0.1:9092", description="Kafka bootstrap servers, "
                            "`kafka://host:port[;host:port]`")
    broker_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how the worker, the CLI and the SDK reach the brokers: `SSL` and `SASL_SSL` over "
        "TLS, the `SASL_*` ones logged in with the SASL username and password")
    broker_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism, with `SASL_PLAINTEXT` or `SASL_SSL`")
    broker_sasl_username: str | None = Field(None, description="SASL username")
    broker_sasl_password: SecretStr | None = Field(None, description="SASL password (never logged)")
    broker_ssl_cafile: Path | None = Field(None, description="CA bundle (PEM) that signed the brokers' "
                                           "certificates, with `SSL` or `SASL_SSL`")
    broker_session_timeout: float = Field(10.0, gt=0, description="consumer group session timeout (s); "
                                          "Kafka's brokers refuse one under 6 by default")
    broker_heartbeat_interval: float = Field(3.0, gt=0, description="consumer heartbeat (s); must be below "
                                             "`broker_session_timeout`")
    broker_fetch_max_wait: float = Field(0.1, gt=0, le=30, description="longest (s) a consumer fetch waits "
                                         "for data (Faust hard-codes 1.5); a broker that holds a fetch until then "
                                         "(Tansu) adds it to every event's and alert's latency")
    redis_url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"),
                                 description="`redis://` or `rediss://` (TLS) URL; may carry a password")
    redis_cluster: bool = Field(False, description="`redis_url` names one node (a seed) of a Redis Cluster: the "
                                "worker, `status` and `report` talk to every shard, each bucket's calls to its "
                                "slot's shard")
    app_id: str = Field("trustgap", min_length=1, description="Faust app id and Kafka consumer group: "
                        "workers with the same id share the work")
    topics: Topics = Field(Topics(), description="topic names")
    topic_partitions: int = Field(8, gt=0, description="partitions of each topic trustgap creates (events, "
                                  "alerts, dead letters) when it is missing; an existing topic keeps its own")
    topic_replication: int = Field(1, gt=0, description="replication factor of the topics trustgap creates")
    state_buckets: int = Field(16, gt=0, le=16384,
                               description="Redis hash-tag buckets for per-prediction state; "
                               "fixed for the life of a deployment")
    web_host: str = Field("127.0.0.1", description="address the worker's web server (`/metrics`, `/health`, the "
                          "retrain gate) binds to")
    web_port: int = Field(6066, ge=0, le=65535, description="port of the worker's web server")
    max_event_bytes: int = Field(64 * 1024, gt=0, description="largest event; a larger one is dead-lettered")
    max_message_bytes: int = Field(1024 * 1024, gt=0, description="largest Kafka message (one event or a JSON "
                                   "array of them); a larger one is dead-lettered")
    max_batch_events: int = Field(1000, gt=0, description="most events in one JSON-array message; a longer "
                                  "array is dead-lettered")
    context_ttl_seconds: int = Field(30 * 86400, gt=0, description="how long a prediction waits "
                                     "for its actions and outcomes; at least the longest horizon")
    pending_ttl_seconds: int = Field(86400, gt=0, description="how long an action or outcome "
                                     "waits for its prediction before it is counted as orphaned")
    max_future_seconds: int = Field(3600, ge=0, description="events further ahead of the wall "
                                    "clock are dead-lettered")
    take_max: int = Field(4000, gt=0, description="events applied to Redis per batch (a Redis call's fixed costs "
                          "spread over more events: 4000 costs Redis ~30% less CPU per event than 1000, as "
                          "bench/run.py measures)")
    take_max_messages: int = Field(50, gt=0, description="messages the consumer hands over at once (twice this is "
                                   "buffered); bounds the worker's memory when messages are large batches")
    take_within: float = Field(0.2, gt=0, description="longest wait (s) for a chunk to fill (longer: fewer Redis "
                               "round trips, later counts; 0.2 keeps a 5k ev/s single-event stream at ~1 Redis "
                               "round trip per 1,000 events, as bench/run.py measures)")
    evaluate_interval: float = Field(1.0, gt=0, description="how often (s) closed windows are looked "
                                     "for; also how often `trustgap_consumer_lag` is refreshed")
    max_models: int = Field(100, gt=0, description="distinct model names tracked; more count as `__other__`")
    max_dimensions: int = Field(20, gt=0, description="distinct segment dimensions per model; more count as "
                                "`__other__`")
    max_label_values: int = Field(50, gt=0, description="distinct values per model and dimension (segment values,"
                                  " bands, versions) that become Redis scopes and metric labels; more count as "
                                  "`__other__`")
    topic_check_interval: float = Field(5.0, gt=0, description="how often (s) missing topics are re-created")
    idle_timeout_seconds: float = Field(60.0, gt=0, description="a partition whose consumer has read it to its "
                                        "end and received nothing new for this long stops holding the watermark "
                                        "back; a partition with a backlog is never idle")
    defaults: ModelSettings = Field(ModelSettings(), description="per-model settings for every model")
    models: dict[str, ModelSettings] = Field(default_factory=dict, description="`models.<name>`: one model's "
                                             "overrides of `defaults`, field by field")
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "uvloop", description="the worker's event loop; uvloop (Faust's recommended loop) cuts its per-event "
        "overhead by ~20% (docs/performance.md); `asyncio` is the standard library's")
    gc_threshold: int = Field(
        5_000, ge=700, description="allocations between the worker's young-generation garbage collections (at "
        "least 700, CPython's default); the worker also freezes its start-up objects out of the collector and "
        "collects the older generations less often (docs/performance.md)")

    @model_validator(mode="before")
    @classmethod
    def _merge_model_overrides(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        defaults = data.get("defaults") or {}
        if isinstance(defaults, BaseModel):
            defaults = defaults.model_dump(exclude_unset=True)
        models = data.get("models") or {}
        if isinstance(models, dict):
            data = {**data, "models": {
                name: {**defaults, **(o.model_dump(exclude_unset=True) if isinstance(o, BaseModel) else (o or {}))}
                for name, o in models.items()}}
        return data

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> Settings:
        if self.broker_heartbeat_interval >= self.broker_session_timeout:
            raise ValueError("broker_heartbeat_interval must be below broker_session_timeout")
        return self

    @model_validator(mode="after")
    def _horizons_within_context(self) -> Settings:
        for name, m in [("defaults", self.defaults), *((f"models.{k}", v) for k, v in self.models.items())]:
            longest = max(m.action_horizon_seconds, m.outcome_horizon_seconds)
            if longest > self.context_ttl_seconds:
                raise ValueError(f"{name}: a horizon of {longest}s is longer than context_ttl_seconds "
                                 f"({self.context_ttl_seconds}s): a prediction's context would expire before its "
                                 "follow-ups stop counting; raise context_ttl_seconds or shorten the horizon")
        return self

    def for_model(self, name: str) -> ModelSettings:
        return self.models.get(name, self.defaults)

    def band_of(self, prediction: PredictionEvent) -> str:
        """The prediction's band: the one its producer sent, else the one its model's cuts give its score."""
        return prediction.band or self.for_model(prediction.model).band_for(prediction.score)

    @property
    def limits(self) -> Limits:
        return Limits(self.max_event_bytes, self.max_message_bytes, self.max_batch_events)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Env beats the file so that one deployment can tweak a shared config file.
        return env_settings, init_settings


def explain(err: ValidationError) -> str:
    """One line per problem naming the setting, its env var and what is expected."""
    lines = []
    for e in err.errors(include_url=False):
        path = ".".join(str(p) for p in e["loc"]) or "(settings)"
        env = ENV_PREFIX + "__".join(str(p) for p in e["loc"]).upper() if e["loc"] else ""
        hint = f" (config key {path!r} or env {env})" if env else ""
        lines.append(f"bad setting {path}: {e['msg']}{hint}")
    return "; ".join(lines)


def load(config_file: str | Path | None = None, fallback: dict[str, Any] | None = None, **overrides: Any
         ) -> Settings:
    """Settings from env vars over an optional YAML file over `fallback` (the embedded stack's addresses) over
    defaults; keyword overrides sit with the file. Raise ConfigError with one line that says what to fix."""
    data: dict[str, Any] = dict(fallback or {})
    if config_file is not None:
        path = Path(config_file)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings at the top level")
        data.update(loaded)
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as err:
        raise ConfigError(explain(err)) from None
