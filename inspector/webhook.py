"""Verdicts to an MES over HTTP (issue 13, item 3): the MQTT verdict JSON POSTed to `[webhook] url`.

One daemon thread POSTs this station's (line's, camera's) rows that the webhook is not done with, in id order, from
its own delivery record (inspector/deliveries.py), after every `notify()` and every POLL_S; signed with
X-Inspector-Signature (HMAC-SHA256 of the body), with an Idempotency-Key of database_id and result_id. A 2xx is
delivered; a 4xx about the message is refused for good (recorded, logged, the queue goes on); anything else
(no answer in timeout_s, 5xx, 408/425/429, a redirect, the 4xx that blame the URL or credentials) is retried,
that row first, with capped exponential backoff. Outcomes are recorded after the answers: at least once, in
order, resumed from the database after a restart; notify() only sets an event (README "Webhook").
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from inspector import __version__
from inspector.config import Config
from inspector.deliveries import DeliveryLog, Done
from inspector.errors import ConfigError
from inspector.publisher import Emit, _existing, verdict_message
from inspector.store import DatabaseError, Store

log = logging.getLogger("inspector.webhook")

SINK = "webhook"  # the sink name in table deliveries
BATCH = 100  # rows read per round
POLL_S = 1.0  # the queue is looked at this often even without notify()
SWEEP_S = 5.0  # this often a round reads from the floor, not from the last row sent (rows that committed late)
ADVANCE_S = 60.0  # this often the floor is moved up (DeliveryLog.advance)
COUNT_S = 5.0  # the pending count in the status is refreshed this often
RETRY_FIRST_S = 0.5  # backoff after a failed attempt, doubling up to [webhook] backoff_max_s
REMIND_S = 60.0  # a failure that lasts, and refusals, are logged at most this often
DETAIL_BYTES = 200  # of a refusal's answer kept in the log and the database
RETRY_4XX = frozenset({401, 403, 404, 405, 407, 408, 425, 429})  # the endpoint is wrong or busy, not the message
SIGNATURE_HEADER = "X-Inspector-Signature"


def _log_emit(event: str, level: int, text: str, **_fields: Any) -> None:
    """The default emit: a line on the inspector.webhook logger."""
    log.log(level, "%s", text)


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class WebhookSettings:
    """Everything the sender needs, resolved from [webhook], [station] and [mqtt] part_id_regex."""

    url: str
    secret: bytes = field(repr=False)
    station: str = "station-1"
    line: str = "line-1"
    camera: str = "camera-1"
    ca_file: Path | None = None
    timeout_s: float = 5.0
    max_age_s: float = 5.0
    backoff_max_s: float = 30.0
    part_id_regex: re.Pattern[str] | None = None  # the same part_id as the MQTT messages

    @classmethod
    def from_config(cls, cfg: Config) -> WebhookSettings:
        """Settings from a loaded config; ConfigError when [webhook] url is empty or a file it names is unusable."""
        w, st = cfg.webhook, cfg.station
        if not w.url:
            raise ConfigError("webhook.url is empty: the webhook is off")
        base = cfg.source.parent if cfg.source is not None else Path.cwd()
        ca_file = _existing(base, w.ca_file, "webhook.ca_file") if w.ca_file else None
        if ca_file is not None:
            try:
                ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"webhook.ca_file {ca_file}: not a CA certificate file ({exc})") from None
        pattern = cfg.mqtt.part_id_regex
        return cls(url=w.url, secret=read_secret(_existing(base, w.secret_file, "webhook.secret_file")),
                   station=st.name, line=st.line, camera=st.camera, ca_file=ca_file, timeout_s=w.timeout_s,
                   max_age_s=w.max_age_s, backoff_max_s=w.backoff_max_s,
                   part_id_regex=re.compile(pattern) if pattern else None)

    @property
    def shown(self) -> str:
        """The URL for log lines: without its query, which may hold a token."""
        return urlsplit(self.url)._replace(query="", fragment="").geturl()


def read_secret(path: Path) -> bytes:
    """The signing secret in `path` (a trailing newline is dropped); ConfigError naming webhook.secret_file."""
    try:
        if path.stat().st_mode & 0o077:
            log.warning("webhook.secret_file %s can be read by other users (chmod 600 it)", path)
        secret = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise ConfigError(f"webhook.secret_file {path}: cannot read it: {exc.strerror or exc}") from None
    if not secret:
        raise ConfigError(f"webhook.secret_file {path} is empty")
    return secret


def sign(secret: bytes, body: bytes) -> str:
    """The X-Inspector-Signature value of a body: "sha256=" and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------------------- one request


@dataclass(frozen=True)
class Answer:
    """How the endpoint answered one POST."""

    status: int | None  # None: no HTTP answer (refused, reset, timed out, TLS failed)
    reason: str  # for the log, e.g. "HTTP 503 Service Unavailable" or "timed out"
    detail: str | None = None  # the start of the body of a non-2xx answer
    retry_after_s: float | None = None

    @property
    def outcome(self) -> str:
        """What to do: "delivered" (2xx), "refused" (a 4xx about this message) or "retry" (anything else)."""
        if self.status is not None and 200 <= self.status < 300:
            return "delivered"
        if self.status is not None and 400 <= self.status < 500 and self.status not in RETRY_4XX:
            return "refused"
        return "retry"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer to retry, never followed (urllib would turn the POST into a GET)."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        """Do not follow."""
        return None


def opener(settings: WebhookSettings) -> urllib.request.OpenerDirector:
    """A urllib opener that follows no redirect and verifies https against ca_file (or the system's CAs)."""
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    return urllib.request.build_opener(_NoRedirects(), urllib.request.HTTPSHandler(context=context))


def _retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds (the HTTP-date form is ignored)."""
    return float(value) if value and value.strip().isdigit() else None


def post(director: urllib.request.OpenerDirector, url: str, body: bytes, headers: dict[str, str],
         timeout_s: float) -> Answer:
    """POST `body` once; the answer, never an exception for what the network or the endpoint does."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with director.open(request, timeout=timeout_s) as response:
            response.read(DETAIL_BYTES)
            return Answer(response.status, f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read(DETAIL_BYTES).decode("utf-8", "replace").strip() or None
        except (OSError, http.client.HTTPException):
            detail = None
        finally:
            exc.close()
        return Answer(exc.code, f"HTTP {exc.code} {exc.reason}".strip(), detail,
                      _retry_after(exc.headers.get("Retry-After")))
    except urllib.error.URLError as exc:
        return Answer(None, str(exc.reason) or type(exc.reason).__name__)
    except (OSError, http.client.HTTPException) as exc:  # a timeout or reset while reading the answer
        return Answer(None, str(exc) or type(exc).__name__)


# ---------------------------------------------------------------------------------------------- sender


@dataclass
class WebhookStatus:
    """What the sender did in this run (also in the MQTT heartbeat as "webhook")."""

    delivered: int = 0  # 2xx answers
    refused: int = 0  # permanent 4xx: recorded, not retried
    late: int = 0  # ... of the delivered, sent after max_age_s
    failures: int = 0  # attempts that failed and were retried
    pending: int | None = None  # rows waiting, as last counted
    last_result_id: int | None = None  # the newest row delivered or refused
    endpoint_ok: bool = True  # the last attempt got an answer that was not a failure
    database_ok: bool = True


class WebhookSender:
    """POSTs this station's recorded verdicts to the webhook endpoint, in id order, at least once."""

    def __init__(self, settings: WebhookSettings, store: Store, *, emit: Emit | None = None) -> None:
        """A stopped sender; start() it."""
        self.settings = settings
        self.store = store
        self.emit = emit or _log_emit
        self.status = WebhookStatus()
        self.log = DeliveryLog(store, SINK, settings.station, settings.line, settings.camera)
        self._opener = opener(settings)
        self._opened = False  # the delivery log's floor was read (or created)
        self._database_id: str | None = None
        self._last_id = 0  # the newest row done in this run: a round reads after it, except a sweep
        self._unrecorded: list[Done] = []  # outcomes not yet written (a database failure)
        self._next = {"sweep": 0.0, "advance": 0.0, "count": 0.0}  # monotonic times of the periodic work
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stop_by = float("inf")
        self._backoff = RETRY_FIRST_S  # the wait after the next failure (back to the first after an answer)
        self._told: dict[str, tuple[str, float, int]] = {}  # kind -> (what was logged, when, lines held back)
        self._thread: threading.Thread | None = None

    def start(self) -> WebhookSender:
        """Create or read the delivery cursor (rows recorded before the webhook's first start are not sent), then
        start the thread; returns self. A database failure here only defers that to the thread."""
        try:
            self._open()
        except DatabaseError as exc:
            self._database_problem(exc)
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()
        return self

    def notify(self) -> None:
        """Verdicts were committed: look for them now (cheap; call after every commit)."""
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send what is waiting, one attempt per row (for up to timeout_s), record it and end the thread. What
        could not be sent waits in the database for the next start."""
        self._stop_by = time.monotonic() + timeout_s
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s + 0.5)
        if not self.status.endpoint_ok and self._opened and self._count():
            self.emit("webhook", logging.WARNING, f"webhook: {self.status.pending} verdicts not delivered to "
                                                  f"{self.settings.shown}; the next start sends them")

    def counters(self) -> dict[str, Any]:
        """The status for the MQTT heartbeat."""
        return {"webhook": asdict(self.status)}

    # ------------------------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        """Rounds until stop(): right away while rows wait, after a backoff on a failure, else every POLL_S."""
        while True:
            stopping = self._stopping.is_set()
            try:
                failure, more = self._round()
            except DatabaseError as exc:
                self._database_problem(exc)
                failure, more = Answer(None, "database"), False
            except Exception as exc:  # noqa: BLE001 - a bug must not end the webhook silently
                log.exception("webhook round failed")
                self.emit("webhook", logging.ERROR, f"webhook error ({exc}); retrying")
                failure, more = Answer(None, "error", retry_after_s=self.settings.backoff_max_s), False
            if stopping and (failure is not None or not more or time.monotonic() >= self._stop_by):
                return
            if failure is not None:
                cap = self.settings.backoff_max_s
                self._stopping.wait(min(max(self._backoff, failure.retry_after_s or 0.0), cap))
                self._backoff = min(self._backoff * 2, cap)
                continue
            self._backoff = RETRY_FIRST_S
            if not more:
                self._wake.wait(POLL_S)
                self._wake.clear()

    def _open(self) -> None:
        """Read the database's identity and the delivery cursor (once)."""
        if not self._opened:
            self._database_id = self.store.database_id()
            self.log.open()
            self._opened = True

    def _round(self) -> tuple[Answer | None, bool]:
        """Send the next rows in id order until one fails; (that failure or None, whether more may wait)."""
        self._open()
        self._record()  # what a database failure left unwritten
        if not self.status.database_ok:
            self.status.database_ok = True
            self.emit("webhook", logging.WARNING, "webhook: database available again; resuming")
        now = time.monotonic()
        after = self._last_id
        if now >= self._next["sweep"]:
            self._next["sweep"], after = now + SWEEP_S, 0
        rows = self.log.pending(after_id=after, limit=BATCH)
        failure = None
        for row in rows:
            if self._stopping.is_set() and time.monotonic() >= self._stop_by:
                break
            answer = self._send(row)
            if answer.outcome == "retry":
                failure = answer
                break
        self._record()
        self._periodic(now)
        return failure, failure is None and len(rows) == BATCH

    def _send(self, row: dict[str, Any]) -> Answer:
        """POST one row; note the outcome (to be recorded) unless it is to be retried."""
        s = self.settings
        message = verdict_message(row, s, datetime.now(timezone.utc), self._database_id)
        body = json.dumps(message, separators=(",", ":"), default=str).encode()  # compact, as over MQTT
        headers = {"Content-Type": "application/json", "User-Agent": f"inspector/{__version__}",
                   SIGNATURE_HEADER: sign(s.secret, body), "Idempotency-Key": f"{self._database_id}:{row['id']}",
                   "X-Inspector-Result-Id": str(row["id"])}
        answer = post(self._opener, s.url, body, headers, s.timeout_s)
        st = self.status
        if answer.outcome == "retry":
            st.failures, st.endpoint_ok = st.failures + 1, False
            more = self._due("endpoint", answer.reason)
            if more is not None:
                pending = self._count() if self._opened else None
                waiting = f"{pending} verdicts wait" if pending else "verdicts wait"
                self.emit("webhook", logging.WARNING, f"webhook: {s.shown} failed ({answer.reason}); {waiting} in "
                                                      f"the database, retrying{more}")
            return answer
        self._backoff = RETRY_FIRST_S
        if not st.endpoint_ok:
            st.endpoint_ok = True
            self._told.pop("endpoint", None)
            self.emit("webhook", logging.WARNING, f"webhook: {s.shown} answers again; sending the waiting verdicts")
        refused = answer.outcome == "refused"
        self._unrecorded.append(Done(row["id"], answer.outcome, datetime.now(timezone.utc),
                                     answer.status if refused else None, answer.detail if refused else None))
        self._last_id, st.last_result_id = max(self._last_id, row["id"]), row["id"]
        if refused:
            st.refused += 1
            more = self._due("refused", "")
            if more is not None:
                self.emit("webhook", logging.ERROR, f"webhook: {s.shown} refused verdict #{row['id']} for good "
                          f"({answer.reason}: {answer.detail or 'no detail'}); recorded as refused, not retried{more}")
        else:
            st.delivered += 1
            st.late += bool(message["late"])
        return answer

    def _record(self) -> None:
        """Write the noted outcomes in one transaction (kept for the next round when the database fails)."""
        if self._unrecorded:
            self.log.record(self._unrecorded)
            self._unrecorded = []

    def _periodic(self, now: float) -> None:
        """Refresh the pending count and move the floor up, each when due."""
        if now >= self._next["count"]:
            self._next["count"] = now + COUNT_S
            self._count()
        if now >= self._next["advance"]:
            self._next["advance"] = now + ADVANCE_S
            self.log.advance()

    def _count(self) -> int | None:
        """Refresh status.pending; None when the database cannot say."""
        try:
            self.status.pending = self.log.count_pending()
        except DatabaseError:
            return None
        return self.status.pending

    # ------------------------------------------------------------------------------------------ logging

    def _due(self, kind: str, key: str) -> str | None:
        """None when the same problem (kind, key) was logged less than REMIND_S ago (it is counted); else the
        suffix of its line, naming how many were held back."""
        now = time.monotonic()
        said, at, held = self._told.get(kind, (None, 0.0, 0))
        if said == key and now - at < REMIND_S:
            self._told[kind] = (said, at, held + 1)
            return None
        self._told[kind] = (key, now, 0)
        return f" ({held} more like it since the last such line)" if held else ""

    def _database_problem(self, exc: DatabaseError) -> None:
        """Log a database failure once until it works again."""
        if self.status.database_ok:
            self.status.database_ok = False
            self.emit("webhook", logging.WARNING, f"webhook: database unavailable ({exc}); retrying")


class NullWebhook:
    """The sender when [webhook] url is empty: the same calls, doing nothing."""

    status = WebhookStatus()

    def notify(self) -> None:
        """Nothing to send."""

    def stop(self, timeout_s: float = 5.0) -> None:
        """Nothing to stop."""

    def counters(self) -> dict[str, Any]:
        """No webhook: nothing in the heartbeat."""
        return {}


def open_webhook(cfg: Config, store: Store, *, emit: Emit | None = None) -> WebhookSender | NullWebhook:
    """A started WebhookSender for cfg's [webhook] (a NullWebhook when its url is empty); ConfigError when a file
    it names is unusable. Never waits for the endpoint."""
    if not cfg.webhook.url:
        return NullWebhook()
    return WebhookSender(WebhookSettings.from_config(cfg), store, emit=emit).start()


__all__ = ["Answer", "NullWebhook", "WebhookSender", "WebhookSettings", "WebhookStatus", "open_webhook", "post",
           "sign"]
