"""Configuration: typed sections with their defaults, loaded from a TOML file and checked strictly.

Defaults live here (and are repeated, with comments, in `config.toml`; a test keeps the two equal).
An unknown section or key, or a value of the wrong type, is a ConfigError naming the key. Relative paths
in a config file resolve against the folder of that file.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspector.errors import ConfigError
from inspector.params import ProfileParams

DEFAULT_CONFIG = Path("config.toml")


@dataclass(frozen=True)
class InputConfig:
    """Limits and patterns for image files."""

    max_pixels: int = 40_000_000  # larger images are rejected before decoding
    max_bytes: int = 256 * 1024 * 1024  # larger files are rejected before reading
    patterns: tuple[str, ...] = ("*.jpg", "*.jpeg", "*.png", "*.bmp", "*.tif", "*.tiff", "*.webp")


@dataclass(frozen=True)
class ModelsConfig:
    """Where profiles are stored."""

    dir: Path = Path("models")


@dataclass(frozen=True)
class WatchConfig:
    """The hot folder service: where parts arrive, how they are noticed, where they go after their verdict."""

    dir: Path = Path("inbox")  # the folder the line camera writes into
    patterns: tuple[str, ...] = ()  # file name patterns; empty = the [input] patterns
    recursive: bool = False  # also watch sub-folders
    observer: str = "native"  # "native" (inotify and the like) or "polling" (network shares)
    poll_interval_s: float = 1.0  # how often the polling observer looks
    settle_s: float = 1.0  # a file without a close/rename event is complete once unchanged this long
    rescan_s: float = 30.0  # full rescan of the folder, catching events the observer lost
    archive: bool = True  # move each judged file into archive_dir/{ok,defect,rejected}; false = leave in place
    archive_dir: Path = Path("archive")
    overlays_dir: Path = Path("overlays")  # anomaly-map overlays, written for each defect
    workers: int = 0  # scoring threads; 0 = the number of cores plus one
    judge_in: str = "processes"  # "processes": each worker scores in its own child process (inspector/judges.py); "threads"
    shared: bool = False  # several stations watch this folder: claim each file in the database before judging it
    claim_lease_s: float = 60.0  # a claim not released by then (its station died) may be taken over
    batch_size: int = 64  # verdicts per database transaction at most
    batch_wait_s: float = 0.0  # after the first verdict of a batch, wait this long for more (0: what is queued)
    batch_wait_busy_s: float = 0.05  # ... and this long while parts queue for judging (the line is at capacity)
    log_format: str = "text"  # "text" (one line per verdict) or "json" (JSON lines)
    stats_every_s: float = 10.0  # throughput line every this many seconds (0 = never)
    product_from: str = "single"  # how a part's product is chosen: "single", "folder", "name" or "recipe" (products.py)
    product_regex: str = ""  # product_from = "name": searched in the file name, its group (?P<product>...)


@dataclass(frozen=True)
class DatabaseConfig:
    """Where verdicts are recorded (SQLAlchemy URL; a relative SQLite path resolves against the config folder)."""

    url: str = "sqlite:///inspector.db"
    busy_timeout_ms: int = 30000  # how long a writer waits for another writer before failing


@dataclass(frozen=True)
class StationConfig:
    """Names recorded with every inspection."""

    name: str = "station-1"
    line: str = "line-1"
    camera: str = "camera-1"


@dataclass(frozen=True)
class ReviewConfig:
    """Operator review: shifts for `inspector stats --by shift`, the default reviewer name."""

    shifts: tuple[str, ...] = ("06:00 early", "14:00 late", "22:00 night")  # "HH:MM name": local start times
    reviewer: str = ""  # default for `mark --by`; empty = the login name


@dataclass(frozen=True)
class WebConfig:
    """The review page (`inspector serve`)."""

    host: str = "127.0.0.1"  # bind address; anything but loopback requires a token
    port: int = 8080
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")  # Host header allowlist (plus the bind host)
    token: str = ""  # access token (?token=... once, then a cookie); required when host is not loopback
    page_size: int = 50  # parts per queue page


@dataclass(frozen=True)
class MqttConfig:
    """Verdicts, state and heartbeat to the line over MQTT (inspector/publisher.py); off while `url` is empty."""

    url: str = ""  # mqtt://host[:port] (1883) or mqtts://host[:port] (8883); empty = no publishing
    ca_file: str = ""  # mqtts only: CA bundle of the broker's certificate; empty = the system's CAs
    username: str = ""
    password_file: str = ""  # a file holding the password (never the password itself); needs username
    topic: str = "inspector/{line}/{station}"  # prefix of <topic>/verdict, /state, /heartbeat
    qos: int = 1  # 1 or 2: a verdict counts as published only once the broker acknowledged it
    keepalive_s: int = 5  # the broker sets state "offline" (last will) after 1.5x this without a word
    heartbeat_s: float = 1.0  # <topic>/heartbeat period; 0 = no heartbeat
    max_age_s: float = 5.0  # published later than this after the file was complete: late = true; 0 = never late
    part_id_regex: str = ""  # searched in the file name, its group (?P<part>...) is part_id; empty = the stem

    def __post_init__(self) -> None:
        """Range and format checks; ConfigError naming the key."""
        for ok, message in _mqtt_checks(self):
            if not ok:
                raise ConfigError(message)


def mqtt_address(url: str) -> tuple[bool, str, int]:
    """(tls, host, port) of an mqtt:// or mqtts:// URL; ConfigError naming mqtt.url when it is not one."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"mqtt.url {url!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"mqtt.url {url!r}: expected mqtt://host[:port] or mqtts://host[:port]")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("mqtt.url must not hold credentials: use mqtt.username and mqtt.password_file")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"mqtt.url {url!r}: no path or query allowed (the topic is mqtt.topic)")
    tls = parts.scheme == "mqtts"
    return tls, parts.hostname, port or (8883 if tls else 1883)


def _mqtt_checks(m: MqttConfig) -> list[tuple[bool, str]]:
    """The [mqtt] checks as (ok, message) pairs (mqtt_address and the regex raise their own ConfigError)."""
    import re

    tls = mqtt_address(m.url)[0] if m.url else False
    try:
        topic = m.topic.format(line="l", station="s", camera="c")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"mqtt.topic {m.topic!r}: only {{line}}, {{station}} and {{camera}} may be filled "
                          "in") from None
    try:
        groups = re.compile(m.part_id_regex).groupindex if m.part_id_regex else {"part": 1}
    except re.error as exc:
        raise ConfigError(f"mqtt.part_id_regex {m.part_id_regex!r}: {exc}") from None
    return [
        (not m.ca_file or tls, "mqtt.ca_file is set but mqtt.url is not mqtts://"),
        (not m.password_file or bool(m.username), "mqtt.password_file needs mqtt.username"),
        (bool(topic) and not topic.startswith("/") and not topic.endswith("/")
         and not set(topic) & {"+", "#", "\0"}, "mqtt.topic must be a topic without wildcards or a leading or "
                                               "trailing /, e.g. \"inspector/{line}/{station}\""),
        (m.qos in (1, 2), "mqtt.qos must be 1 or 2 (a verdict is published once the broker acknowledged it)"),
        (1 <= m.keepalive_s <= 65535, "mqtt.keepalive_s must be between 1 and 65535"),
        (m.heartbeat_s >= 0, "mqtt.heartbeat_s must not be negative (0 = no heartbeat)"),
        (m.max_age_s >= 0, "mqtt.max_age_s must not be negative (0 = never late)"),
        ("part" in groups, "mqtt.part_id_regex needs a named group (?P<part>...)"),
    ]


@dataclass(frozen=True)
class WebhookConfig:
    """Verdicts POSTed to an HTTP endpoint such as an MES (inspector/webhook.py); off while `url` is empty."""

    url: str = ""  # http://host[:port]/path or https://...; empty = no webhook
    secret_file: str = ""  # a file holding the HMAC-SHA256 signing secret (never the secret itself); required
    ca_file: str = ""  # https only: CA bundle of the endpoint's certificate; empty = the system's CAs
    timeout_s: float = 5.0  # per request (connect, and each wait for the answer); longer = a failure, retried
    max_age_s: float = 5.0  # delivered later than this after the file was complete: late = true; 0 = never late
    backoff_max_s: float = 30.0  # retries while the endpoint is down start at 0.5 s and double up to this

    def __post_init__(self) -> None:
        """Range and format checks; ConfigError naming the key."""
        https = check_webhook_url(self.url) if self.url else False
        for ok, message in [
            (not self.url or bool(self.secret_file), "webhook.secret_file is required with webhook.url (a file "
                                                     "holding the signing secret)"),
            (not self.ca_file or https, "webhook.ca_file is set but webhook.url is not https://"),
            (0.1 <= self.timeout_s <= 300, f"webhook.timeout_s must be between 0.1 and 300 seconds, "
                                           f"got {self.timeout_s:g}"),
            (self.max_age_s >= 0, "webhook.max_age_s must not be negative (0 = never late)"),
            (1 <= self.backoff_max_s <= 3600, f"webhook.backoff_max_s must be between 1 and 3600 seconds, "
                                              f"got {self.backoff_max_s:g}"),
        ]:
            if not ok:
                raise ConfigError(message)


def check_webhook_url(url: str) -> bool:
    """True for an https:// URL, False for http://; ConfigError naming webhook.url for anything else (no host,
    credentials in it, a fragment)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        _ = parts.port  # ValueError for a port that is not a number in range
    except ValueError as exc:
        raise ConfigError(f"webhook.url {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"webhook.url {url!r}: expected http://host[:port]/path or https://host[:port]/path")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("webhook.url must not hold credentials: the endpoint checks webhook.secret_file's "
                          "signature")
    if parts.fragment:
        raise ConfigError(f"webhook.url {url!r}: no #fragment allowed")
    return parts.scheme == "https"


@dataclass(frozen=True)
class ModbusConfig:
    """Registers for PLCs that speak no MQTT, over Modbus TCP (inspector/modbus.py); off unless `enabled`."""

    enabled: bool = False
    host: str = "127.0.0.1"  # bind address; Modbus has no authentication: bind a PLC-network address only on purpose
    port: int = 5020  # 502 (the Modbus port) needs root or CAP_NET_BIND_SERVICE
    unit_id: int = 1  # the unit (slave) id answered; 0 = every unit id
    heartbeat_s: float = 1.0  # register 0 counts up this often while the service answers

    def __post_init__(self) -> None:
        """Range checks; ConfigError naming the key."""
        for ok, message in [
            (bool(self.host.strip()), "modbus.host must not be empty (e.g. \"127.0.0.1\" or \"0.0.0.0\")"),
            (1 <= self.port <= 65535, f"modbus.port must be between 1 and 65535, got {self.port}"),
            (0 <= self.unit_id <= 255, f"modbus.unit_id must be between 0 and 255, got {self.unit_id}"),
            (0.05 <= self.heartbeat_s <= 3600, f"modbus.heartbeat_s must be between 0.05 and 3600 seconds, "
                                               f"got {self.heartbeat_s:g}"),
        ]:
            if not ok:
                raise ConfigError(message)


# ---- issue 15: a year on the line (retention, disk watermarks, monitoring); see inspector/retention.py,
# inspector/diskguard.py, inspector/operations.py


@dataclass(frozen=True)
class RetentionConfig:
    """How long archived files are kept (`inspector prune`, the watcher daily) and the disk watermarks."""

    ok_days: int = 30  # archived images of ok parts are deleted after this many days; 0 = kept for ever
    ok_sample_every: int = 0  # M > 0: 1 ok part in M (id divisible by M) is kept for ever as a sample; 0 = none
    defect_days: int = 0  # images and overlays of defect parts; 0 = kept for ever
    rejected_days: int = 90  # rejected files (evidence of a camera, lamp or writer fault); 0 = kept for ever
    reviewed_days: int = 0  # parts an operator decided on (retraining material), whatever their verdict; 0 = for ever
    prune_at: str = "03:00"  # local time the watcher prunes each day (and at start when a day was missed); "" = never
    warn_free_mb: int = 2048  # below this free on the archive's or database's filesystem: warn, prune early
    min_free_mb: int = 512  # below this: take no new parts (they wait in the folder) until space is back
    early_keep_days: int = 7  # pruning early never deletes ok images younger than this

    def __post_init__(self) -> None:
        """Range and format checks; ConfigError naming the key."""
        days = ("ok_days", "defect_days", "rejected_days", "reviewed_days")
        for ok, message in [
            (all(getattr(self, k) >= 0 for k in days), "retention.*_days must not be negative (0 = kept for ever)"),
            (self.ok_sample_every >= 0, "retention.ok_sample_every must not be negative (0 = no sample)"),
            (self.early_keep_days >= 1, "retention.early_keep_days must be at least 1"),
            (self.min_free_mb >= 0, "retention.min_free_mb must not be negative (0 = never stop taking parts)"),
            (self.warn_free_mb >= self.min_free_mb, "retention.warn_free_mb must be at least retention.min_free_mb"),
            (not self.prune_at or clock_minutes(self.prune_at) is not None,
             f'retention.prune_at {self.prune_at!r}: expected "HH:MM" (local time) or "" (never)'),
        ]:
            if not ok:
                raise ConfigError(message)


def clock_minutes(text: str) -> int | None:
    """Minutes after midnight of "HH:MM", or None when malformed."""
    hh, sep, mm = text.strip().partition(":")
    if not (sep and hh.isdigit() and mm.isdigit() and len(mm) == 2 and 0 <= int(hh) < 24 and 0 <= int(mm) < 60):
        return None
    return int(hh) * 60 + int(mm)


@dataclass(frozen=True)
class MetricsConfig:
    """Monitoring of the watcher: a Prometheus endpoint, a status file for `inspector status`, the stuck limit."""

    port: int = 0  # Prometheus metrics on http://host:port/metrics while `inspector watch` runs; 0 = off
    host: str = "127.0.0.1"  # bind address; the endpoint has no authentication
    # the watcher's heartbeat, rewritten atomically every status_every_s; beside a config file not named config.toml
    # the default is <its stem>.status.json, so that two configs in one folder (two cameras on one PC) keep their own
    status_file: Path = Path("status.json")
    status_every_s: float = 2.0
    stuck_s: float = 60.0  # parts in flight and none finished for this long (not degraded): the watcher is stuck

    def __post_init__(self) -> None:
        """Range checks; ConfigError naming the key."""
        for ok, message in [
            (0 <= self.port <= 65535, f"metrics.port must be between 0 (off) and 65535, got {self.port}"),
            (bool(self.host.strip()), "metrics.host must not be empty (e.g. \"127.0.0.1\")"),
            (0.1 <= self.status_every_s <= 60, "metrics.status_every_s must be between 0.1 and 60 seconds"),
            (self.stuck_s >= 1, "metrics.stuck_s must be at least 1 second"),
        ]:
            if not ok:
                raise ConfigError(message)


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    profile: ProfileParams = field(default_factory=ProfileParams)
    input: InputConfig = field(default_factory=InputConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    station: StationConfig = field(default_factory=StationConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)
    web: WebConfig = field(default_factory=WebConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    modbus: ModbusConfig = field(default_factory=ModbusConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)  # issue 15
    metrics: MetricsConfig = field(default_factory=MetricsConfig)  # issue 15
    source: Path | None = None  # the file this was loaded from, if any

    @property
    def watch_patterns(self) -> tuple[str, ...]:
        """The patterns the watcher matches: [watch] patterns, else [input] patterns."""
        return self.watch.patterns or self.input.patterns


SECTIONS: dict[str, type] = {"profile": ProfileParams, "input": InputConfig, "models": ModelsConfig,
                             "watch": WatchConfig, "database": DatabaseConfig, "station": StationConfig,
                             "mqtt": MqttConfig,
                             "webhook": WebhookConfig,
                             "modbus": ModbusConfig,
                             "retention": RetentionConfig, "metrics": MetricsConfig,
                             "review": ReviewConfig, "web": WebConfig}


def _check(value: Any, tp: Any, where: str, base: Path) -> Any:
    """Return value converted to type tp, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, str) and value:
            path = Path(value).expanduser()
            return path if path.is_absolute() else (base / path)
    elif origin is tuple:
        item = typing.get_args(tp)[0]
        if isinstance(value, list):
            return tuple(_check(v, item, f"{where}[{i}]", base) for i, v in enumerate(value))
    elif origin in (types.UnionType, typing.Union):
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
            try:
                return _check(value, option, where, base)
            except ConfigError:
                continue
    else:  # pragma: no cover - a programming error in the dataclasses above
        raise TypeError(f"unsupported config type {tp!r} at {where}")
    raise ConfigError(f"config key {where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _type_name(tp: Any) -> str:
    """A short human name for a config type."""
    if typing.get_origin(tp) is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", Path: "a path"}.get(
        tp, str(tp)
    )


def _section(cls: type, values: Any, name: str, base: Path) -> Any:
    """Build one section dataclass from a TOML table, strictly."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section [{name}] must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown config key {name}.{key} (known: {', '.join(sorted(known))})")
    kwargs = {key: _check(value, hints[key], f"{name}.{key}", base) for key, value in values.items()}
    defaults = cls()
    for f in dataclasses.fields(cls):  # default paths are relative to the config file's folder too
        if f.name not in kwargs and hints[f.name] is Path:
            kwargs[f.name] = _check(str(getattr(defaults, f.name)), Path, f"{name}.{f.name}", base)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section [{name}]: {exc}") from None


def from_dict(data: dict[str, Any], base: Path) -> Config:
    """Build a Config from parsed TOML, resolving relative paths against `base`."""
    for name in data:
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section [{name}] (known: {', '.join(SECTIONS)})")
    sections = {name: _section(cls, data.get(name, {}), name, base) for name, cls in SECTIONS.items()}
    _validate(sections["profile"])
    _validate_input(sections["input"])
    _validate_service(sections["watch"], sections["database"], sections["station"])
    _validate_review(sections["review"], sections["web"])
    sections["database"] = dataclasses.replace(
        sections["database"], url=_resolve_sqlite(sections["database"].url, base))
    return Config(**sections)


def _resolve_sqlite(url: str, base: Path) -> str:
    """Make a relative SQLite file path in `url` absolute against `base`; other URLs are returned unchanged."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    rest = url[len(prefix):]
    path, sep, query = rest.partition("?")
    if not path or path == ":memory:" or path.startswith("/"):
        return url
    return prefix + str(base / path) + sep + query


def parse_shifts(shifts: tuple[str, ...]) -> list[tuple[int, str]]:
    """("06:00 early", ...) -> [(minutes after midnight, name), ...] sorted; ConfigError when malformed."""
    out = []
    for text in shifts:
        clock, _, name = text.strip().partition(" ")
        hh, _, mm = clock.partition(":")
        if not (hh.isdigit() and mm.isdigit() and 0 <= int(hh) < 24 and 0 <= int(mm) < 60 and name.strip()):
            raise ConfigError(f'review.shifts entry {text!r}: expected "HH:MM name", e.g. "06:00 early"')
        out.append((int(hh) * 60 + int(mm), name.strip()))
    if len({m for m, _ in out}) != len(out):
        raise ConfigError("review.shifts: two shifts start at the same time")
    return sorted(out)


def shift_periods(shifts: tuple[str, ...]) -> list[tuple[int, str]]:
    """parse_shifts for `stats --by shift`, which keys a day's periods by name: two shifts of one name would be
    counted as one period (found by an adversarial test), so that is refused here (not at load: a setting only
    `stats` reads must not stop the watcher of a station that never runs it)."""
    out = parse_shifts(shifts)
    seen: dict[str, int] = {}
    for minutes, name in out:
        if name in seen:
            raise ConfigError(f"review.shifts: two shifts are named {name!r} ({_clock(seen[name])} and "
                              f"{_clock(minutes)}); a shift runs from its start to the next shift's, so name each once")
        seen[name] = minutes
    return out


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _validate_review(r: ReviewConfig, web: WebConfig) -> None:
    """Shifts parse; the web page never listens beyond loopback without a token."""
    if not r.shifts:
        raise ConfigError("review.shifts must name at least one shift")
    parse_shifts(r.shifts)
    if not 0 < web.port < 65536:
        raise ConfigError("web.port must be between 1 and 65535")
    if web.page_size < 1:
        raise ConfigError("web.page_size must be at least 1")
    if not is_loopback(web.host) and not web.token:
        raise ConfigError(f"web.host {web.host} is not a loopback address: set web.token to require an access token")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate_input(i: InputConfig) -> None:
    """Limits that would reject every image, and patterns that would match no file, are refused."""
    checks = [
        (i.max_pixels > 0, "input.max_pixels must be positive (it caps the pixels of an image)"),
        (i.max_bytes > 0, "input.max_bytes must be positive (it caps the bytes of a file)"),
        (len(i.patterns) > 0, "input.patterns must name at least one file name pattern"),
        (all(p.strip() for p in i.patterns), "input.patterns must not contain an empty pattern"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _validate_service(w: WatchConfig, db: DatabaseConfig, st: StationConfig) -> None:
    """Range and choice checks of the service sections."""
    checks = [
        (w.observer in ("native", "polling"), 'watch.observer must be "native" or "polling"'),
        (w.log_format in ("text", "json"), 'watch.log_format must be "text" or "json"'),
        (all(p.strip() for p in w.patterns), "watch.patterns must not contain an empty pattern"),
        (w.poll_interval_s > 0, "watch.poll_interval_s must be positive"),
        (w.settle_s >= 0, "watch.settle_s must not be negative"),
        (w.rescan_s > 0, "watch.rescan_s must be positive"),
        (w.workers >= 0, "watch.workers must be 0 (= number of cores plus one) or more"),
        (w.judge_in in ("processes", "threads"), 'watch.judge_in must be "processes" or "threads"'),
        (w.claim_lease_s > 0, "watch.claim_lease_s must be positive"),
        (w.batch_size >= 1, "watch.batch_size must be at least 1"),
        (0 <= w.batch_wait_s <= 5, "watch.batch_wait_s must be between 0 and 5"),
        (0 <= w.batch_wait_busy_s <= 5, "watch.batch_wait_busy_s must be between 0 and 5"),
        (w.stats_every_s >= 0, "watch.stats_every_s must not be negative"),
        (w.product_from in ("single", "folder", "name", "recipe"),
         'watch.product_from must be "single", "folder", "name" or "recipe"'),
        (w.product_from != "folder" or w.recursive,
         'watch.product_from = "folder" needs watch.recursive = true (parts arrive in inbox/<product>/)'),
        (w.product_from != "name" or _has_group(w.product_regex, "product"),
         'watch.product_from = "name" needs watch.product_regex with a named group (?P<product>...)'),
        (bool(db.url.strip()), "database.url must not be empty"),
        (db.busy_timeout_ms >= 0, "database.busy_timeout_ms must not be negative"),
        (all(0 < len(v) <= 64 for v in (st.name, st.line, st.camera)),
         "station.name, station.line and station.camera must be 1 to 64 characters"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _has_group(pattern: str, group: str) -> bool:
    """True when `pattern` compiles and has the named group; a ConfigError naming the key when it does not compile."""
    try:
        return group in re.compile(pattern).groupindex
    except re.error as exc:
        raise ConfigError(f"watch.product_regex {pattern!r}: {exc}") from None


def _validate(p: ProfileParams) -> None:
    """Range checks that types alone do not catch."""
    checks = [
        (2 <= p.n_colours <= 64, "profile.n_colours must be between 2 and 64"),
        (0.0 < p.false_alarm_rate < 0.5, "profile.false_alarm_rate must be between 0 and 0.5"),
        (p.width >= 16, "profile.width must be at least 16"),
        (1 <= p.cells_across <= p.width, "profile.cells_across must be between 1 and profile.width"),
        (p.window_strides >= 1, "profile.window_strides must be at least 1"),
        (len(p.neighbours) > 0 and min(p.neighbours) >= 1, "profile.neighbours must be positive integers"),
        (0.0 < p.top_fraction <= 1.0, "profile.top_fraction must be in (0, 1]"),
        (p.n_folds >= 2, "profile.n_folds must be at least 2"),
        (0.0 < p.novel_quantile <= 1.0, "profile.novel_quantile must be in (0, 1]"),
        (p.rotation in ("auto", "none", "small", "any", "off"),
         "profile.rotation must be one of auto, none, small, any, off"),
        (0.0 <= p.max_shift <= 0.5, "profile.max_shift must be between 0 and 0.5 (a share of the field)"),
        (0.0 < p.max_exposure_change < 1.0, "profile.max_exposure_change must be in (0, 1)"),
        (0.0 < p.max_colour_cast <= 10.0, "profile.max_colour_cast must be in (0, 10]"),
        (0.0 <= p.max_offset <= 255.0, "profile.max_offset must be between 0 and 255 grey levels"),
        (p.fine_width == 0 or p.fine_width >= p.width, "profile.fine_width must be 0 (off) or at least profile.width"),
        (p.fine_width <= 8192, "profile.fine_width must be at most 8192"),
        (0.0 <= p.texture_weight <= 10.0, "profile.texture_weight must be between 0 (off) and 10"),
        (0 <= p.lighting_copies <= 8, "profile.lighting_copies must be between 0 (off) and 8"),
        (isinstance(p.shading, bool) or p.shading in ("auto", "smooth"),
         'profile.shading must be true, false, "smooth" or "auto"'),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def load(path: Path | str | None = None) -> Config:
    """Load the config file at `path`; with None, ./config.toml if present, else the built-in defaults."""
    explicit = path is not None
    file = Path(path) if explicit else DEFAULT_CONFIG
    if not file.exists():
        if explicit:
            raise ConfigError(f"config file not found: {file}")
        return from_dict({}, Path.cwd())
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    cfg = from_dict(data, file.resolve().parent)
    metrics = data.get("metrics")
    if file.name != DEFAULT_CONFIG.name and not (isinstance(metrics, dict) and "status_file" in metrics):
        own = file.resolve().parent / f"{file.stem}.status.json"
        cfg = dataclasses.replace(cfg, metrics=dataclasses.replace(cfg.metrics, status_file=own))
    return dataclasses.replace(cfg, source=file.resolve())
