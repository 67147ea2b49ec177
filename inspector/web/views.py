"""The review page's routes: the queue, a part at full size, a review and its undo, the reviewer name, images by
id, the stats page and its plots.

Every view reads the config and the store from the app (`current_app.extensions["inspector"]`), set by the app
factory; nothing is global.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import (Blueprint, Response, abort, current_app, flash, redirect, render_template, request, send_file,
                   session, url_for)

from inspector.config import Config
from inspector.store import DECISIONS, MAX_ID, MAX_NOTE, MAX_REVIEWER, Store, reviewer_name
from inspector.web import data, files, plots, regions
from inspector.web.placeholder import unavailable
from inspector.web.pruned import file_pruned  # issue 15: retention

bp = Blueprint("web", __name__)

REVIEWER_COOKIE = "inspector_reviewer"
ID = f"<int(max={MAX_ID}):id>"  # the largest id a row can have; anything else is a 404 before the query


@dataclass(frozen=True)
class Context:
    """What the views need from the app: its config, its store, and the folder relative paths resolve against."""

    cfg: Config
    store: Store
    base: Path | None
    images: files.Images = field(default_factory=files.Images)
    regions: regions.Regions = field(default_factory=regions.Regions)


def ctx() -> Context:
    """The app's Context."""
    return current_app.extensions["inspector"]


@bp.app_context_processor
def drift_banner() -> dict[str, Any]:
    """Every page shows the drift alarms active now (a banner at the top); replayed again only when a part was
    recorded since the last page (the newest id changed)."""
    cache = current_app.extensions.setdefault("inspector.drift", {})
    newest = data.newest_id(ctx().store)
    if "alarms" not in cache or cache.get("newest") != newest:
        cache.update(alarms=data.drift_alarms(ctx().store, Path(ctx().cfg.models.dir)), newest=newest)
    return {"drift_alarms": cache["alarms"]}


def _filters(args: Any) -> data.QueueFilters:
    """Parse the queue filters; 400 for a bad value."""
    try:
        return data.QueueFilters.parse(args)
    except data.BadFilter as exc:
        abort(400, description=str(exc))


def current_reviewer() -> str:
    """The name from the reviewer cookie, else [review] reviewer from the config, else "operator"."""
    return (reviewer_name(request.cookies.get(REVIEWER_COOKIE)) or reviewer_name(ctx().cfg.review.reviewer)
            or "operator")


UNDOABLE = 20  # the newest reviews of a session that its Undo may take back


def _part_id(args: Any, key: str) -> int | None:
    """An inspection id from a request argument or form field (absent or empty: None); 400 for anything but
    ASCII digits up to SQLite's largest integer."""
    text = args.get(key) or ""
    if not text:
        return None
    if not (len(text) <= len(str(MAX_ID)) and text.isascii() and text.isdigit()) or not 0 < int(text) <= MAX_ID:
        abort(400, description=f"{key} must be a part number")
    return int(text)


def _queue_at(filters: data.QueueFilters, id: int | None) -> str:
    """The queue with these filters, on a page that holds part `id` with that part as the current one (its
    buttons answer the access keys; its Confirm button has the focus, which scrolls it into view: a #fragment
    would stop the browser from focusing it): the reader's page when it is there (data.queue_at); the queue's
    first page when `id` is None."""
    if id is None:
        return url_for("web.queue", **filters.query(page=1, start=""))
    at_page = data.queue_at(ctx().store, filters, id, ctx().cfg.web.page_size)
    return url_for("web.queue", **at_page.query(), at=id)


@bp.get("/")
def queue() -> str:
    """The queue: parts (unreviewed flagged ones by default), newest first, with images, scores, reviews and review
    buttons; the counts of the filtered parts by review state; one part is the current one (`at`, else the first):
    its buttons carry the access keys and the focus."""
    filters = _filters(request.args)
    page = data.queue_page(ctx().store, filters, ctx().cfg.web.page_size)
    at = _part_id(request.args, "at")
    ids = [row["id"] for row in page.rows]
    current = at if at in ids else (ids[0] if ids else None)
    counts = data.queue_counts(ctx().store, filters)
    return render_template("queue.html", page=page, filters=filters, reviewer=current_reviewer(),
                           verdicts=data.VERDICT_CHOICES, reviews=data.REVIEW_CHOICES, ranges=list(data.SINCE_CHOICES),
                           current=current, counts=counts, page_size=ctx().cfg.web.page_size, **_places())


@bp.get(f"/inspections/{ID}")
def part(id: int) -> str:
    """One part in full: the original at full resolution beside its anomaly-map overlay, the regions the overlay
    marks boxed on both and shown close up, its facts and review buttons; previous / next in the filtered queue."""
    filters = _filters(request.args)
    row = ctx().store.get(id)
    if row is None:
        abort(404)
    history = ctx().store.reviews(id)
    row["last_review"] = history[-1] if history else None
    found = _regions(row)
    width = found.width if found is not None else row["width"]
    height = found.height if found is not None else row["height"]
    return render_template("part.html", row=row, filters=filters, reviewer=current_reviewer(), found=found,
                           width=width or 0, height=height or 0,
                           older=data.neighbour(ctx().store, filters, id),
                           newer=data.neighbour(ctx().store, filters, id, older=False))


def _regions(row: dict[str, Any]) -> regions.Found | None:
    """The regions a defect's overlay marks, over its original (None without an overlay, or when either file
    cannot be opened or is not the judged one any more)."""
    if row["verdict"] == "rejected" or not row["sha256"] or not row["overlay_path"]:
        return None
    key = (row["sha256"], row["overlay_path"])
    known, found = ctx().regions.get(key)
    if known:
        return found
    expect = files.Expected(sha256=row["sha256"], size=row["size"])
    original = None
    for path in (row["archived_path"], row["source_path"]):
        try:
            original = ctx().images.open(files.resolve(path, ctx().base), None, expect)
        except files.FileChanged:
            continue
        if original is not None:
            break
    if original is None:
        return None
    with original[0] as image:
        over = ctx().images.open(files.resolve(row["overlay_path"], ctx().base), files.OVERLAY_TYPES)
        if over is None:
            return None
        with over[0] as overlay:
            return ctx().regions.find(key, image, overlay)


@bp.post(f"/inspections/{ID}/review")
def review(id: int) -> Response:
    """Record "defect" (confirm) or "good" (false alarm) with an optional note; back to the queue, filters kept."""
    filters = _filters(request.form)
    decision = request.form.get("decision", "")
    note = request.form.get("note", "").strip()
    if decision not in DECISIONS:
        abort(400, description=f"decision must be one of {', '.join(DECISIONS)}")
    if len(note) > MAX_NOTE:
        abort(400, description=f"the note is longer than {MAX_NOTE} characters")
    row = ctx().store.get(id)
    if row is None:
        abort(404)
    if row["verdict"] == "rejected":
        abort(400, description="a rejected file was never judged: there is nothing to review")
    reviewer = reviewer_name(request.form.get("reviewer")) or current_reviewer()
    added = ctx().store.add_review(id, decision, reviewer, note or None)
    session["undoable"] = [*session.get("undoable", []), added["id"]][-UNDOABLE:]
    flash({"text": f"#{id} {row['name']}: {_decision_label(row['verdict'], decision)}, recorded for {reviewer}",
           "undo": added["id"]})
    following = data.neighbour(ctx().store, filters, id)  # the next part down the queue, now current
    if request.form.get("back") == "part" and following is not None:
        return redirect(url_for("web.part", id=following, **filters.query()), 303)
    return redirect(_queue_at(filters, following), 303)


def _decision_label(verdict: str, decision: str) -> str:
    """A decision as the buttons name it."""
    if verdict == "defect":
        return "confirmed defect" if decision == "defect" else "false alarm"
    return "missed defect" if decision == "defect" else "confirmed good"


@bp.post(f"/reviews/<int(max={MAX_ID}):review_id>/undo")
def undo(review_id: int) -> Response:
    """Take back a review this browser just recorded (one of its newest), while it still is the newest decision on
    its part: the part is back to its previous decision, or to not reviewed. Back to where the Undo was."""
    filters = _filters(request.form)
    if review_id not in session.get("undoable", []):
        abort(403, description="only a review recorded from this browser a moment ago can be undone here")
    try:
        gone, now = data.undo_review(ctx().store, review_id)
    except data.UndoRefused as exc:
        flash(f"Not undone: {exc}")
        return redirect(url_for("web.queue", **filters.query()), 303)
    session["undoable"] = [r for r in session.get("undoable", []) if r != review_id]
    id = gone["inspection_id"]
    row = ctx().store.get(id)
    name = row["name"] if row is not None else ""
    verdict = row["verdict"] if row is not None else "defect"
    state = (f"back to {_decision_label(verdict, now['decision'])} by {now['reviewer']}" if now is not None
             else "back to not reviewed")
    flash(f"#{id} {name}: {_decision_label(verdict, gone['decision'])} by {gone['reviewer']} undone, {state}")
    current_app.logger.info("review %s of part #%s undone", review_id, id)
    if request.form.get("back") == "part":
        return redirect(url_for("web.part", id=id, **filters.query()), 303)
    return redirect(_queue_at(filters, id), 303)


@bp.post("/reviewer")
def set_reviewer() -> Response:
    """Remember the reviewer's name in a cookie (a year) and go back to the queue."""
    filters = _filters(request.form)
    name = reviewer_name(request.form.get("reviewer"))
    if name is None:
        abort(400, description=f"the reviewer name must be 1 to {MAX_REVIEWER} printable characters")
    response = redirect(url_for("web.queue", **filters.query()), 303)
    response.set_cookie(REVIEWER_COOKIE, name, max_age=365 * 24 * 3600, httponly=True, samesite="Strict")
    return response


def _send(paths: tuple[str | None, ...], only: tuple[str, ...] | None = None,
          expect: files.Expected | None = None, id: int | None = None) -> Response:
    """Send the first of the recorded files that opens as an image and, with `expect`, still is the judged file;
    409 when one was found but is another file now, else 404 (missing, not a regular file, a symlink, or not an
    image): for a part (`id`), a placeholder picture or a line saying so, not a broken image."""
    changed = False
    for path in paths:
        try:
            opened = ctx().images.open(files.resolve(path, ctx().base), only, expect)
        except files.FileChanged:
            changed = True
            continue
        if opened is not None:
            f, mimetype = opened
            response = send_file(f, mimetype=mimetype, max_age=300, conditional=False)
            response.headers["Content-Disposition"] = "inline"
            return response
    if changed:
        return file_changed(id)
    if id is None:
        abort(404)
    return _unavailable(id, 404, "is missing (moved or deleted)", MISSING)


CHANGED = "the file changed since it was judged"
MISSING = "the file is missing: moved or deleted since it was judged, and not by retention"


def file_changed(id: int | None) -> Response:
    """409: the recorded file is another one now; a placeholder picture for an <img>, else one line of text."""
    return _unavailable(id, 409, "changed since it was judged", CHANGED)


def _unavailable(id: int | None, status: int, tail: str, text: str) -> Response:
    """A part's recorded file that cannot be shown, saying why (placeholder.unavailable)."""
    what = f"part #{id}: " if id is not None else ""
    head = f"The file of part #{id}" if id is not None else "The file"
    return unavailable(status, head, tail, f"{what}{text}; not shown")


@bp.get(f"/image/{ID}")
def image(id: int) -> Response:
    """The part's image by inspection id: the archived file, else the file where it arrived (judged parts only),
    and only while it still has the judged size and sha256 (409 when it changed)."""
    row = ctx().store.get(id)
    if row is None or row["verdict"] == "rejected" or not row["sha256"]:  # a rejected entry may be a symlink,
        abort(404)  # a FIFO, not an image; a judged part always has a sha256
    if row.get("pruned_at") is not None:  # retention deleted the file: say so, not a broken image
        return file_pruned(id, row["pruned_at"])
    expect = files.Expected(sha256=row["sha256"], size=row["size"])
    return _send((row["archived_path"], row["source_path"]), expect=expect, id=id)


@bp.get(f"/overlay/{ID}")
def overlay(id: int) -> Response:
    """The anomaly-map overlay of a defect (JPEG; PNG when recorded before 2026-12-06), by inspection id."""
    row = ctx().store.get(id)
    if row is None:
        abort(404)
    if row.get("pruned_at") is not None and row["overlay_path"]:  # deleted with its part
        return file_pruned(id, row["pruned_at"], "overlay")
    if not row["overlay_path"]:
        abort(404)  # no overlay was drawn (not a defect)
    return _send((row["overlay_path"],), only=files.OVERLAY_TYPES, id=id)


def _since() -> str:
    """The stats range from the request (default 24h); 400 for a bad one."""
    since = request.args.get("since") or "24h"
    if since not in data.SINCE_CHOICES:
        abort(400, description=f"since must be one of {', '.join(data.SINCE_CHOICES)}")
    return since


def _places() -> dict[str, list[str]]:
    """The station and line names that have inspections and the products of the models folder (issue 16), for the
    filter menus (the product menu only when there is more than the default product)."""
    from inspector import products

    pairs = ctx().store.stations()
    names = products.names(Path(ctx().cfg.models.dir))
    return {"stations": sorted({s for s, _ in pairs}), "lines": sorted({ln for _, ln in pairs}),
            "products": names if names != ["default"] else []}


def _place() -> dict[str, str]:
    """The station/line/product filter of a stats request ("" = all, aggregated); 400 for a bad one."""
    try:
        return {"station": data.place(request.args, "station"), "line": data.place(request.args, "line"),
                "product": data.place(request.args, "product")}
    except data.BadFilter as exc:
        abort(400, description=str(exc))


@bp.get("/stats")
def stats() -> str:
    """Counts for the range and the two plots, for all stations together or one station/line."""
    since, place = _since(), _place()
    numbers = data.stats_data(ctx().store, since, **place, parts=("counts",))
    return render_template("stats.html", since=since, ranges=list(data.SINCE_CHOICES), stats=numbers, place=place,
                           place_query={k: v for k, v in place.items() if v}, **_places())


def _png(body: bytes) -> Response:
    """A PNG response that is not cached (the numbers change with every part)."""
    return Response(body, mimetype="image/png", headers={"Cache-Control": "no-store"})


def _size() -> str:
    """The plot size asked for: "wide" (default, a desktop page) or "narrow" (a phone); 400 for another."""
    size = request.args.get("size") or "wide"
    if size not in plots.SIZES:
        abort(400, description=f"size must be one of {', '.join(plots.SIZES)}")
    return size


@bp.get("/stats/defects.png")
def defects_png() -> Response:
    """Defects per hour in the range, split by review state."""
    return _png(plots.defects_png(data.stats_data(ctx().store, _since(), **_place(), parts=("defects",)), _size()))


@bp.get("/stats/scores.png")
def scores_png() -> Response:
    """The score distribution in the range with the latest threshold."""
    return _png(plots.scores_png(data.stats_data(ctx().store, _since(), **_place(), parts=("scores",)), _size()))
