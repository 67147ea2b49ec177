"""Several products on one station: which product a part belongs to, and one active profile per product.

Layout of the models folder (issue 16). The models folder itself is the **default** product, exactly as before
(`models/ACTIVE`, `models/HISTORY`, `models/v1/...`), so an install from before products needs no file moved.
Every other product is a sub-folder with the same layout: `models/<product>/ACTIVE`, `models/<product>/v1/...`.
Product names are 1 to 64 characters of letters, digits, `_` and `-`, starting with a letter or digit; `default`
names the models folder itself, and names that look like a version (`v1`) or a pointer file are refused.

How a part's product is chosen (`[watch] product_from`):
- `single` (the default): every part is the default product, as before products existed;
- `folder`: the first sub-folder of the inbox the part arrived in (`inbox/<product>/...`; needs `recursive`);
- `name`: `[watch] product_regex` searched in the file name, its named group `product`;
- `recipe`: the recipe current when the part arrived (was found complete), from `models/RECIPE`.

`models/RECIPE` is an append-only log, one line per switch, `<ISO time> <product>`, written by
`inspector recipe set` (or the MQTT command topic) with one O_APPEND write and fsync. The watcher looks at it once
per part (one stat) and judges a part with the recipe in force at the part's arrival time, so a part that arrived
before a switch but is judged after it keeps its product, and a part arriving during a switch waits for the
switch (the profiles of every product are loaded at start, so a switch is a look-up).

A part whose product cannot be told, or that has no active profile, is `rejected` with reason `unknown_product`:
it is never judged with another product's profile.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inspector import profiles
from inspector.conditions import ConditionsMonitor
from inspector.config import Config, InputConfig
from inspector.errors import ConfigError, NoActiveProfile, ProfileError
from inspector.pipeline import Inspector

log = logging.getLogger("inspector.watch")

DEFAULT = "default"  # the product of the models folder itself (and of every row recorded before products)
RECIPE = "RECIPE"  # the recipe log in the models folder
MODES = ("single", "folder", "name", "recipe")
UNKNOWN = "unknown_product"  # the rejection reason of a part no active profile may judge
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_RESERVED_RE = re.compile(r"(v\d+|ACTIVE|HISTORY|RECIPE)\Z")
RECIPE_TAIL_BYTES = 65536  # the recipe log is read from its last this many bytes (the recent switches)


class ProductError(ConfigError):
    """A product name that cannot name a product (exit 2, like any usage error)."""


def check_name(name: str) -> str:
    """The name itself when it can name a product; ProductError otherwise."""
    if not _NAME_RE.match(name) or _RESERVED_RE.match(name):
        raise ProductError(f"{name!r} is not a product name: 1 to 64 letters, digits, '_' or '-', starting with a "
                           "letter or digit, and not a version (v1) or ACTIVE, HISTORY, RECIPE")
    return name


def models_dir_for(models_dir: Path, product: str) -> Path:
    """The folder holding a product's versions and ACTIVE pointer (the models folder itself for `default`)."""
    return models_dir if check_name(product) == DEFAULT else models_dir / product


def names(models_dir: Path) -> list[str]:
    """Products with at least one saved version, `default` first, then by name."""
    found = [DEFAULT] if profiles.versions(models_dir) else []
    if models_dir.is_dir():
        for p in sorted(models_dir.iterdir()):
            if (p.is_dir() and _NAME_RE.match(p.name) and not _RESERVED_RE.match(p.name) and p.name != DEFAULT
                    and profiles.versions(p)):
                found.append(p.name)
    return found


def active_products(models_dir: Path) -> list[str]:
    """Products whose ACTIVE pointer exists (a cheap look: the watcher loads and verifies them itself)."""
    return [name for name in names(models_dir) if (models_dir_for(models_dir, name) / profiles.ACTIVE).exists()]


def require_active(models_dir: Path) -> list[str]:
    """The products with an active profile; NoActiveProfile when there is none (nothing could be judged)."""
    found = active_products(models_dir)
    if not found:
        raise NoActiveProfile(f"no product has an active profile in {models_dir}: run `inspector train DIR --product "
                              "NAME` first")
    return found


# ---------------------------------------------------------------------------------------------- the recipe log


@dataclass(frozen=True)
class RecipeEntry:
    """One switch of the recipe log: from `at` on, parts are `product`."""

    at: datetime
    product: str


def set_recipe(models_dir: Path, product: str, at: datetime | None = None) -> RecipeEntry:
    """Append a switch to the recipe log (one O_APPEND write, fsynced); the product must have an active profile."""
    profiles.active_version(models_dir_for(models_dir, product))  # NoActiveProfile: nothing could judge it
    entry = RecipeEntry(at or datetime.now(timezone.utc), product)
    models_dir.mkdir(parents=True, exist_ok=True)
    profiles.append_log(models_dir / RECIPE, [f"{entry.at.isoformat(timespec='microseconds')} {product}"])
    return entry


def read_recipes(models_dir: Path) -> list[RecipeEntry]:
    """The recent switches of the recipe log, oldest first (torn or malformed lines skipped)."""
    text = profiles.read_log(models_dir / RECIPE, RECIPE_TAIL_BYTES)
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not _NAME_RE.match(parts[1]) or _RESERVED_RE.match(parts[1]):
            continue
        try:
            at = datetime.fromisoformat(parts[0])
        except ValueError:
            continue
        if at.tzinfo is not None:
            entries.append(RecipeEntry(at, parts[1]))
    return sorted(entries, key=lambda e: e.at)


def current_recipe(models_dir: Path) -> RecipeEntry | None:
    """The recipe in force now, or None when none was ever set."""
    entries = read_recipes(models_dir)
    return entries[-1] if entries else None


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    """Identity of a small file's current content (mtime, inode, size), None when it cannot be looked at: a log or
    pointer another process replaces or appends to is read again only when this changes."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


class RecipeLog:
    """The recipe log as the watcher reads it: reloaded when the file changes (one stat per look); thread-safe."""

    def __init__(self, models_dir: Path):
        self.path = models_dir / RECIPE
        self.models_dir = models_dir
        self._lock = threading.Lock()
        self._sig: tuple | None = ()
        self._times: list[float] = []
        self._products: list[str] = []

    def at(self, when: datetime) -> str | None:
        """The product in force at `when` (None: no recipe set by then)."""
        sig = _file_signature(self.path)
        with self._lock:
            if sig != self._sig:
                entries = read_recipes(self.models_dir)
                self._times = [e.at.timestamp() for e in entries]
                self._products = [e.product for e in entries]
                self._sig = sig
            i = bisect_right(self._times, when.timestamp())
            return self._products[i - 1] if i else None


# ---------------------------------------------------------------------------------------------- active profiles


class ActiveProfile:
    """One product's active profile as an Inspector, reloaded when its ACTIVE pointer changes; thread-safe."""

    def __init__(self, models_dir: Path, inp: InputConfig, product: str = DEFAULT):
        self.models_dir = models_dir
        self.product = product
        self.input = inp
        self._pointer = models_dir / profiles.ACTIVE
        self._lock = threading.Lock()
        self._sig = _file_signature(self._pointer)
        stored = profiles.load(self.models_dir)  # raises NoActiveProfile / ProfileError: a clear start error
        self._inspector = Inspector(stored.profile, stored.version, self.input)
        self._failed: str | None = None

    @property
    def version(self) -> str | None:
        """The version in use."""
        return self._inspector.version

    def get(self) -> Inspector:
        """The Inspector to judge the next part with (one stat per call to notice a new active version). While a
        new version loads, every part that noticed it waits for it: the pointer's identity is remembered only once
        the switch is done (remembered first, the other workers went on judging with the old version meanwhile)."""
        sig = _file_signature(self._pointer)
        if sig == self._sig:
            return self._inspector
        with self._lock:
            if sig != self._sig:
                self._switch()
                self._sig = sig
            return self._inspector

    def _switch(self) -> None:
        """Load the newly active version; keep the current one when it cannot be loaded."""
        try:
            version = profiles.active_version(self.models_dir)
            if version == self._inspector.version:
                return
            stored = profiles.load(self.models_dir, version)
        except ProfileError as exc:
            if str(exc) != self._failed:
                log.error("%s switch failed, still judging with %s: %s", self._what(), self._inspector.version, exc)
                self._failed = str(exc)
            return
        old = self._inspector.version
        self._inspector = Inspector(stored.profile, stored.version, self.input)
        self._failed = None
        log.info("%s switched: %s -> %s (threshold %.3f)", self._what(), old, stored.version, stored.profile.threshold_)

    def _what(self) -> str:
        """`profile` (the default product, as before products) or `profile of product NAME`, for log lines."""
        return "profile" if self.product == DEFAULT else f"profile of product {self.product}"


@dataclass(frozen=True)
class Choice:
    """The product of one part and the Inspector to judge it with; `inspector` None = reject as unknown_product
    (`detail` says why)."""

    product: str
    inspector: Inspector | None
    detail: str = ""
    models_dir: Path | None = None  # the product's models folder (where the inspector's profile version lies)


class Products:
    """Which product each part belongs to, and one ActiveProfile per product; what the watch service asks."""

    def __init__(self, cfg: Config, folder: Path):
        self.mode = cfg.watch.product_from
        self.models_dir = Path(cfg.models.dir)
        self.input = cfg.input
        self.folder = folder
        self.regex = re.compile(cfg.watch.product_regex) if self.mode == "name" else None
        self.recipes = RecipeLog(self.models_dir) if self.mode == "recipe" else None
        self._lock = threading.Lock()
        self._active: dict[str, ActiveProfile] = {}
        if self.mode == "single":
            self._active[DEFAULT] = ActiveProfile(self.models_dir, self.input)  # NoActiveProfile: a start error
        else:
            for name in require_active(self.models_dir):
                self._active[name] = ActiveProfile(models_dir_for(self.models_dir, name), self.input, name)

    def commands(self) -> dict[str, Callable[[str], str]]:
        """The MQTT command topics this station answers (recipe mode: `recipe/set`, payload a product name)."""
        return {"recipe/set": self.set_recipe} if self.mode == "recipe" else {}

    def set_recipe(self, text: str) -> str:
        """Switch the recipe (from an MQTT command); the product's profile is loaded before it returns."""
        product = check_name(text)
        if self._load(product) is None:
            raise NoActiveProfile(f"product {product!r} has no active profile")
        entry = set_recipe(self.models_dir, product)
        return entry.product

    def versions(self) -> dict[str, str | None]:
        """The version in use per product loaded so far (under the lock: a worker may be adding a product)."""
        with self._lock:
            loaded = sorted(self._active.items())
        return {name: a.version for name, a in loaded}

    @property
    def version(self) -> str | None:
        """One line for logs and the heartbeat: the default product's version alone, else `product:version`."""
        v = self.versions()
        if list(v) == [DEFAULT]:
            return v[DEFAULT]
        return ",".join(f"{p}:{ver}" for p, ver in v.items())

    def product_of(self, path: str, received_at: datetime) -> tuple[str, str]:
        """(product, why not known): the product named for a part by the configured rule ("" when none is)."""
        if self.mode == "single":
            return DEFAULT, ""
        if self.mode == "folder":
            rel = Path(os.path.relpath(path, self.folder)).parts
            if len(rel) < 2:
                return "", "the part is not in a product's sub-folder of the inbox"
            return self._named(rel[0])
        if self.mode == "name":
            m = self.regex.search(os.path.basename(path))
            if m is None or not m.group("product"):
                return "", f"product_regex {self.regex.pattern!r} does not match the file name"
            return self._named(m.group("product"))
        product = self.recipes.at(received_at)
        if product is None:
            return "", "no recipe was set (inspector recipe set NAME)"
        return product, ""

    @staticmethod
    def _named(name: str) -> tuple[str, str]:
        """A product name taken from a folder or a file name, checked."""
        try:
            return check_name(name), ""
        except ProductError:
            return "", f"{name[:64]!r} cannot name a product"

    def choose(self, path: str, received_at: datetime) -> Choice:
        """The product of a part and the Inspector of its active profile, never another product's."""
        product, why = self.product_of(path, received_at)
        if not product:
            return Choice("", None, why)
        active = self._active.get(product)
        if active is None:
            active = self._load(product)
            if active is None:
                return Choice(product, None, f"product {product!r} has no active profile")
        return Choice(product, active.get(), models_dir=active.models_dir)

    def loaded(self) -> list[tuple[Path, str]]:
        """(models folder, version) of every profile in use now (what the judging processes load at start)."""
        with self._lock:
            active = list(self._active.values())
        return [(a.models_dir, a.version) for a in active if a.version is not None]

    def _load(self, product: str) -> ActiveProfile | None:
        """A product's ActiveProfile, loaded when seen for the first time (trained while the watcher runs); None when
        it has no profile."""
        if product in self._active:
            return self._active[product]
        folder = models_dir_for(self.models_dir, product)
        if not (folder / profiles.ACTIVE).exists():
            return None
        with self._lock:
            if product not in self._active:
                try:
                    self._active[product] = ActiveProfile(folder, self.input, product)
                except ProfileError as exc:
                    log.error("product %s has no usable profile: %s", product, exc)
                    return None
                log.info("product %s: profile %s loaded", product, self._active[product].version)
            return self._active[product]


class ProductConditions:
    """The drift and lighting monitor, one per product (each with its own profiles' baselines)."""

    def __init__(self, models_dir: Path, emit: Callable[..., None]):
        self.models_dir = models_dir
        self.emit = emit
        self._monitors: dict[str, ConditionsMonitor] = {}

    def observe(self, row: Mapping[str, Any]) -> None:
        """Feed one recorded row to its product's monitor (rows of an unknown product are skipped)."""
        product = row.get("product") or DEFAULT
        if row.get("reason") == UNKNOWN:
            return
        monitor = self._monitors.get(product)
        if monitor is None:
            monitor = self._monitors[product] = ConditionsMonitor(models_dir_for(self.models_dir, product),
                                                                  self._emit_for(product))
        monitor.observe(row)

    def active(self) -> dict[str, list[str]]:
        """Each product's drift alarms that are up now (products without one left out); safe from other threads."""
        return {p: m.active for p, m in list(self._monitors.items()) if m.active}

    def _emit_for(self, product: str) -> Callable[..., None]:
        """The log of one product's monitor: its lines start with `product NAME: ` (the default product's as before)."""
        if product == DEFAULT:
            return self.emit

        def emit(event: str, level: int, text: str, **fields: Any) -> None:
            self.emit(event, level, f"product {product}: {text}", product=product, **fields)

        return emit
