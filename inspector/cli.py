"""The `inspector` command line: a thin layer that parses arguments, calls the library, prints results.

Library errors (InspectorError subclasses) become one line on stderr and a non-zero exit code here, and
only here.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from inspector import __version__
from inspector.errors import DatasetError, InspectorError, ProfileError
from inspector.text import escape_controls


class UsageError(InspectorError):
    """The command line names something that is not there (a file argument that does not exist): exit 2, like
    argparse's own usage errors, never a verdict's exit code."""

    exit_code = 2


def _progress(iterable, total: int | None = None, desc: str = ""):
    """A tqdm progress bar on stderr (shown on terminals only)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", disable=None, leave=False, file=sys.stderr)


def _load_config(args: argparse.Namespace):
    """The config named by --config (or ./config.toml, or the defaults)."""
    from inspector import config

    return config.load(args.config)


def _product_config(args: argparse.Namespace):
    """The config with [models] dir narrowed to the folder of --product (the models folder itself without it, or
    for `default`): train, score, profiles and retrain then work on that product's versions alone."""
    import dataclasses

    from inspector import products

    cfg = _load_config(args)
    if getattr(args, "product", None) is None:
        return cfg
    folder = products.models_dir_for(cfg.models.dir, args.product)
    return dataclasses.replace(cfg, models=dataclasses.replace(cfg.models, dir=folder))


def _product_option(p: argparse.ArgumentParser, what: str) -> None:
    """--product NAME on a command that works on one product's profiles."""
    p.add_argument("--product", metavar="NAME",
                   help=f"{what} of this product (models/NAME/; default: the default product, the models folder "
                        "itself)")


def _no_training_images(folder: Path, patterns: Sequence[str]) -> str:
    """Why `train DIR` found nothing, and where the good images probably are: DIR/train/good of an MVTec-layout
    dataset root, else the sub-folders that hold images (only DIR itself is searched)."""
    from inspector import pipeline

    text = f"no images matching {', '.join(patterns)} in {folder}"
    good = folder / "train" / "good"
    if good.is_dir():
        return f"{text}; it looks like a dataset root: train on its good images with `inspector train {good}`"
    try:
        subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        with_images = [p for p in subs if pipeline.list_images(p, patterns)]
    except OSError:
        return text
    if with_images:
        shown = ", ".join(f"{p.name}/" for p in with_images[:5]) + (", ..." if len(with_images) > 5 else "")
        return f"{text} (sub-folders are not searched; images are in {shown}): give the folder of good images"
    return text


def cmd_train(args: argparse.Namespace) -> int:
    """Fit, calibrate, save and activate a profile from a folder of good images."""
    from inspector import pipeline, profiles
    from inspector.profile import ASPECT_TOLERANCE

    cfg = _product_config(args)
    files = pipeline.list_images(Path(args.dir), cfg.input.patterns)
    if not files:
        raise DatasetError(_no_training_images(Path(args.dir), cfg.input.patterns))
    ts = pipeline.load_training_images(files, cfg, lambda it, total: _progress(it, total, "decoding"))
    for name, reason in ts.rejected:
        print(escape_controls(f"skipped {name}: {reason}"), file=sys.stderr)
    print(f"fitting on {len(ts.images)} good images ...", file=sys.stderr)
    profile = pipeline.fit_profile(ts.images, cfg.profile)
    warnings = []
    low, high = profile.aspect_range_
    if high > low * (1.0 + ASPECT_TOLERANCE):  # found by a review: every shape between them is then judged
        warnings.append(f"the training photos differ in shape (height to width {low:.3f} to {high:.3f}): photos of "
                        "any shape between them will be judged as these parts, stretched to one size; train one "
                        "profile per camera setting")
    width, need = ts.images[0].shape[1], profile.fine_min_width()
    alone = (f"these parts are judged on their {profile.layout_.width} px working image alone, where a defect or a "
             "missing feature under about 5% of the photo's width can pass unseen")
    if profile.fine_ is None and cfg.profile.fine_width > 0:  # found by an adversarial test (see README "Fine pass")
        if width < need:
            warnings.append(f"the photos are {width} px wide: the fine pass, which sees defects a few pixels across, "
                            f"runs on photos at least {need} px wide, so {alone}; photograph the parts at a higher "
                            "resolution if such defects matter")
        else:  # the config is the limit, not the photos (found by a review)
            warnings.append(f"[profile] fine_width = {cfg.profile.fine_width} is under 2.5 times the working width "
                            f"({profile.layout_.width} px): no fine pass, so {alone}; set fine_width to at least "
                            f"{need}, or to 0 to turn the fine pass off on purpose")
    for axis, limit in zip(("column", "row"), profile.sensor_limits_):
        if limit > 1.0:  # found by a review: the check for a stuck sensor line is then off, silently
            warnings.append(f"the training photos have a {axis} standing out along its whole length (a seam, a wire, "
                            f"or a stuck sensor {axis}): no stuck sensor {axis} can be told from it, so none is looked "
                            f"for; if the camera writes it, fix the camera and train again")
    if profile.locator_ is not None and not profile.searches_scale():  # found by a review: off, silently
        warnings.append(f"these parts differ in size or look among themselves as much as a camera moved 5% closer or "
                        f"further would make them (the scale search brought back "
                        f"{profile.locator_.scale_seen_:.0%} of them so), so no part is tried at another scale and "
                        "none is said to be of another size (`size`); after moving or refocusing the camera, train "
                        "again")
    for text in warnings:
        print(f"warning: {text}", file=sys.stderr)
    extra = {
        "note": args.note or "",
        "trained_from": str(Path(args.dir).resolve()),
        "training_images": [{"name": n, "sha256": h} for n, h in zip(ts.names, ts.hashes)],
        "config": str(cfg.source) if cfg.source else None,
        "product": args.product or "default",
    }
    version = profiles.save(cfg.models.dir, profile, extra)
    if not args.no_activate:
        profiles.activate(cfg.models.dir, version)
    cal = profile.calibration_
    result = {"version": version, "product": args.product or "default", "active": not args.no_activate,
              "threshold": profile.threshold_,
              "n_train": profile.n_train_, "skipped": len(ts.rejected), "calibration": cal.method,
              "false_alarm_budget": cal.false_alarm_rate, "cross_fitted_false_alarm_rate": cal.oof_false_alarm_rate,
              "scale_search": profile.searches_scale(),
              "warnings": warnings}
    if args.json:
        print(json.dumps(result))
    else:
        state = "active" if not args.no_activate else "saved, not active"
        of = f" of product {args.product}" if args.product else ""
        print(f"profile {version}{of} ({state}): threshold {profile.threshold_:.3f}, {profile.n_train_} good images, "
              f"calibrated by {cal.method} for a false-alarm budget of {cal.false_alarm_rate:.2%}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Judge image files with the active profile."""
    import os

    from inspector import pipeline, profiles

    cfg = _product_config(args)
    for path in args.images:  # a typo is a usage error, not a part rejected as unreadable
        if not os.path.exists(path):
            raise UsageError(f"no such file: {path} (nothing was scored)")
        if os.path.isdir(path):
            raise UsageError(f"{path} is a folder: give image files (nothing was scored)")
    stored = profiles.load(cfg.models.dir, args.profile)
    insp = pipeline.Inspector(stored.profile, stored.version, cfg.input)
    worst = 0
    for path in args.images:
        v = insp.inspect_file(Path(path))
        if args.json:  # the path as given: good/000.png and broken/000.png are two parts
            print(json.dumps({"path": path, **v.as_dict()}))
        elif v.verdict == "rejected":
            print(f"{escape_controls(path)}\trejected\t{escape_controls(f'{v.reason}: {v.detail}')}")
        else:
            print(f"{escape_controls(path)}\t{v.verdict}\tscore {v.score:.3f}\tthreshold {v.threshold:.3f}\tprofile "
                  f"{escape_controls(v.profile_version)}")
        worst = max(worst, {"ok": 0, "defect": 1, "rejected": 3}[v.verdict])
    return 0 if args.exit_zero else worst


def cmd_eval(args: argparse.Namespace) -> int:
    """Fit on DIR/train/good, score DIR/test, print quality figures."""
    from inspector import evaluate

    cfg = _load_config(args)
    if args.report:  # checked before the evaluation, not after it (found by an adversarial test: a traceback then)
        _check_report_folder(Path(args.report))
    res = evaluate.evaluate(Path(args.dir), cfg, lambda it, total: _progress(it, total, "eval"))
    if args.report:
        import numpy as np

        from inspector import report

        written = report.write_eval_report(
            Path(args.report), labels=np.array([t != "good" for t in res.types]),
            scores=res.scores, threshold=res.metrics["threshold"], names=res.names, types=res.types,
            top_images=res.top, title=Path(args.dir).name, originals=res.paths,
        )
        res.metrics["report"] = str(Path(args.report) / "index.html") if written else None
    m = res.metrics
    if args.json:
        print(json.dumps(m))
        return 0
    print(f"dataset            {escape_controls(m['dataset'])}  ({m['n_train']} train, {m['n_test']} test)")
    print(f"image AUROC        {m['image_auroc']:.4f}")
    print(f"average precision  {m['average_precision']:.4f}")
    print(f"threshold          {m['threshold']:.3f}")
    print(f"false-alarm rate   {m['false_alarm_rate']:.3f}  (budget {m['false_alarm_budget']:.3f})")
    print(f"recall             {m['recall']:.3f}")
    kinds = {t: escape_controls(t) for t in m["per_type_recall"]}
    width = max([10, *(len(k) + 2 for k in kinds.values())])  # at least two spaces before the figure
    for t, r in m["per_type_recall"].items():
        print(f"  recall {kinds[t]:<{width}}{r:.3f}")
    pix = "n/a (no masks)" if m["pixel_auroc"] is None else f"{m['pixel_auroc']:.4f}"
    print(f"pixel AUROC        {pix}")
    print(f"ms per image       {m['ms_per_image']:.1f}")
    if m.get("report"):
        print(f"report             {escape_controls(m['report'])}")
    return 0


def _check_report_folder(out: Path) -> None:
    """InspectorError unless `out` is a folder that can be written into, or can be made."""
    shown = escape_controls(str(out))
    if out.exists() and not out.is_dir():
        raise InspectorError(f"--report {shown} is a file, not a folder: name a folder for the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InspectorError(f"cannot make the report folder {shown}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InspectorError(f"cannot write into the report folder {shown}")


def cmd_segment(args: argparse.Namespace) -> int:
    """Reproduce the tutorial's figure: the image beside per-image k-means segmentations."""
    from inspector import imaging, panel

    cfg = _load_config(args)
    try:
        ks = [int(k) for k in args.k.split(",") if k.strip()]
    except ValueError:
        raise InspectorError(f"--k takes comma-separated integers, got {args.k!r}") from None
    if not ks or min(ks) < 2 or max(ks) > 64:
        raise InspectorError("--k values must be between 2 and 64")
    if args.max_side < 32:
        raise InspectorError(f"--max-side must be at least 32, got {args.max_side}")
    _, decoded = imaging.load(Path(args.image), max_pixels=cfg.input.max_pixels, max_bytes=cfg.input.max_bytes)
    out = Path(args.out)
    panel.write_panel(out, decoded.image, ks, max_side=args.max_side)
    print(escape_controls(f"wrote {out}"))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure speed ratios on generated 5 MP JPEGs (with --watch: the hot-folder service end to end)."""
    cfg = _load_config(args)

    def log(text: str) -> None:
        print(text, file=sys.stderr)

    if args.watch + args.stations + args.robustness + args.defects + bool(args.fit_sizes) > 1:
        raise InspectorError("bench takes one of --watch, --stations, --robustness, --defects or --fit-sizes")
    if args.db:
        if args.watch or args.stations or args.robustness or args.defects or args.fit_sizes:
            raise InspectorError("bench --db takes none of --watch, --stations, --robustness, --defects, --fit-sizes")
        if args.rows < 1:
            raise InspectorError("--rows must be at least 1")
        from inspector.tooling import dbbench

        result = dbbench.run(args.rows, args.url, template=args.template, keep=args.keep, log=log)
        print(json.dumps(result) if args.json else dbbench.markdown(result))
        return 0
    if args.defects:
        from inspector.tooling import defectbench

        result = defectbench.run_from_args(args, cfg, _progress, log)
        print(json.dumps(result) if args.json else defectbench.markdown(result))
        return 0
    if args.robustness:
        from inspector.tooling import robustness

        result = robustness.run_from_args(args, cfg, _progress, log)
        print(json.dumps(result) if args.json else robustness.markdown(result))
        return 0
    if args.fit_sizes:
        from inspector.tooling import fitbench

        try:
            sizes = fitbench.parse_sizes(args.fit_sizes)
        except ValueError as exc:
            raise InspectorError(str(exc)) from None
        result = fitbench.run(sizes, str(cfg.source) if cfg.source else None, folder=args.fit_folder, log=log)
        width = 24
    elif args.stations:
        from inspector.tooling import stationbench

        result = stationbench.run(parts=600 if args.parts is None else args.parts, max_backlog=args.max_backlog,
                                  pg_url=args.pg_url, keep=args.keep, params=cfg.profile, log=log)
        width = 24
    elif args.watch:
        from inspector.tooling import watchbench

        result = watchbench.run(parts=2000 if args.parts is None else args.parts, rss_parts=args.rss_parts,
                                max_backlog=args.max_backlog, latency_parts=args.latency_parts, keep=args.keep,
                                params=cfg.profile, log=log,
                                watch={"workers": cfg.watch.workers, "judge_in": cfg.watch.judge_in})
        width = 30
    else:
        from inspector.tooling import bench

        result = bench.run(cfg, runs=args.runs, n_fit=args.fit_images, log=log)
        width = 22
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<{width}}{value:.3f}" if isinstance(value, float) else f"{key:<{width}}{value}")
    return 0


def _versions_text(models_dir: Path, saved: Sequence[str]) -> str:
    """The saved versions (the newest ten when there are more) and the active one, for an error message."""
    from inspector import profiles

    if not saved:
        return "no profile is saved there yet: run `inspector train DIR` first"
    shown = ", ".join(saved) if len(saved) <= 12 else f"{saved[0]}, ..., {', '.join(saved[-10:])}"
    try:
        active = f"; active: {profiles.active_version(models_dir)}"
    except ProfileError:
        active = "; none is active"
    return f"saved: {shown} ({len(saved)} in all{active})" if len(saved) > 12 else f"saved: {shown}{active}"


def cmd_profiles(args: argparse.Namespace) -> int:
    """List saved profile versions or activate one."""
    from inspector import profiles

    cfg = _product_config(args)
    if args.action == "activate":
        if not args.version:
            raise InspectorError("profiles activate needs a VERSION (see `inspector profiles list`)")
        saved = profiles.versions(cfg.models.dir)
        if args.version not in saved:
            raise ProfileError(f"no profile {args.version} in {cfg.models.dir}; "
                               + _versions_text(cfg.models.dir, saved))
        profiles.activate(cfg.models.dir, args.version)
        print(f"active profile: {args.version}")
        return 0
    if args.action == "rollback":
        if args.version:
            raise InspectorError("profiles rollback takes no VERSION; use `profiles activate VERSION` for that")
        old, new = profiles.rollback(cfg.models.dir)
        print(f"active profile: {new} (rolled back from {old}); a running watcher switches at the next part")
        return 0
    rows = profiles.describe(cfg.models.dir)
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        from inspector import products

        others = [] if args.product else [n for n in products.names(cfg.models.dir) if n != products.DEFAULT]
        print(f"no profiles in {cfg.models.dir}" + (f" (the default product); products: {', '.join(others)} "
                                                    "(use --product NAME)" if others else ""))
    for r in rows if not args.json else []:
        thr = "-" if r["threshold"] is None else f"{r['threshold']:.3f}"
        print(escape_controls(f"{'*' if r['active'] else ' '} {r['version']:<6} {r['created_at'] or '-':<26} "
                              f"threshold {thr:<8} n_train {r['n_train']}  {r['note']}"))
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """Build a candidate profile from what operators learned, compare it with the active one, gate it."""
    from inspector import retrain

    cfg = _product_config(args)
    with _open_store(cfg) as store:
        result = retrain.retrain(cfg, store, add_dirs=[Path(d) for d in args.add], force=args.force,
                                 product=args.product or "default",
                                 note=args.note or "", progress=lambda it, total: _progress(it, total, "retrain"),
                                 activate=not args.no_activate)
    if args.json:
        print(json.dumps(result.as_dict(), default=str))
    else:
        print(retrain.format_table(result))
    if result.dry_run:  # what the gate would have done
        return 0 if result.gate_passed else 7
    return 0 if result.activated else 7


def cmd_recipe(args: argparse.Namespace) -> int:
    """Set the current recipe (the product of the parts that arrive from now on), or show it and the products."""
    from inspector import products, profiles

    cfg = _load_config(args)
    if args.action == "set":
        if not args.name:
            raise InspectorError("recipe set needs a product NAME (see `inspector recipe show`)")
        entry = products.set_recipe(cfg.models.dir, products.check_name(args.name))
        if args.json:
            print(json.dumps({"recipe": entry.product, "at": entry.at.isoformat()}))
        else:
            print(f"recipe: {entry.product} (from {_local_time(entry.at)}); a running watcher judges parts that "
                  "arrive from now on with its profile")
        return 0
    if args.name:
        raise InspectorError("recipe show takes no NAME; use `recipe set NAME` to switch")
    current = products.current_recipe(cfg.models.dir)
    rows = []
    for name in products.names(cfg.models.dir):
        try:
            active = profiles.active_version(products.models_dir_for(cfg.models.dir, name))
        except ProfileError:
            active = None
        rows.append({"product": name, "active": active})
    if args.json:
        print(json.dumps({"recipe": current.product if current else None,
                          "since": current.at.isoformat() if current else None, "products": rows}))
        return 0
    print(f"recipe: {current.product} (since {_local_time(current.at)})" if current else "recipe: none set")
    for r in rows:
        mark = "*" if current and current.product == r["product"] else " "
        print(f"{mark} {r['product']:<24} active {r['active'] or '- (none)'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the review page until SIGTERM or Ctrl-C."""
    from inspector import web

    cfg = _load_config(args)
    web.serve(cfg, host=args.host, port=args.port)
    return 0


def _setup_logging(log_format: str = "text") -> None:
    """Service log lines on stderr, one per event, flushed as they come: the watcher's own lines as it wrote them,
    the lines of the modules around it (a profile switch, watchdog, paho) in the same form: a local timestamp and
    the text with control characters escaped, or a JSON object with `log_format = "json"` (they had neither; found
    by an adversarial test)."""
    import logging

    from inspector.service import LineFormatter

    class Stderr(logging.StreamHandler):
        """Writes to sys.stderr as it is at each line (a handler left on the root logger outlives a swapped stream)."""

        @property  # type: ignore[override]
        def stream(self):  # noqa: ANN202
            return sys.stderr

        @stream.setter
        def stream(self, value) -> None:  # noqa: ANN001
            pass

    handler = Stderr()
    handler.setFormatter(LineFormatter(log_format))
    root = logging.getLogger("inspector")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    # the libraries' warnings (watchdog, paho, pymodbus) in the same form: beside whatever else the root logger
    # has (a test runner's capture), replacing only a handler an earlier call put there
    top = logging.getLogger()
    handler._inspector = True  # type: ignore[attr-defined]
    top.handlers[:] = [h for h in top.handlers if not getattr(h, "_inspector", False)] + [handler]
    # watchdog logs an error when its emitter thread is stopped while reading ("queue_events() called when the
    # thread is inactive", gorakhargosh/watchdog#963): harmless at shutdown, so that one line is dropped
    logging.getLogger("watchdog.observers.inotify").addFilter(
        lambda record: "called when the thread is inactive" not in record.getMessage())


def cmd_watch(args: argparse.Namespace) -> int:
    """Run the hot-folder service until SIGTERM/SIGINT/SIGHUP (or, with --once, until the backlog is done)."""
    import dataclasses

    from inspector import profiles
    from inspector.service import WatchService

    cfg = _load_config(args)
    if args.workers is not None:
        if args.workers < 0:
            raise InspectorError("--workers must be 0 (= number of cores plus one) or more")
        cfg = dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, workers=args.workers))
    # without a profile nothing can be judged: say so before the service creates the archive folder and the
    # database (a cheap look at the pointer; the service loads and verifies the profile itself)
    if cfg.watch.product_from == "single":
        version = profiles.active_version(cfg.models.dir)
        if not (cfg.models.dir / version).is_dir():
            raise ProfileError(f"profile {version} not found in {cfg.models.dir} (named by {profiles.ACTIVE})")
    else:
        from inspector import products

        products.require_active(cfg.models.dir)  # several products: at least one must have a profile
    _setup_logging(cfg.watch.log_format)
    # a fatal signal (SIGBUS from a memory-mapped file made unwritable under SQLite, SIGSEGV, SIGABRT) ends the
    # process at once: leave the reason and the threads' stacks in the log instead of a silent exit 135
    faulthandler.enable(file=sys.stderr, all_threads=True)
    service = WatchService(cfg, Path(args.dir) if args.dir else None, once=args.once, observer=args.observer)
    return service.run()


def cmd_db(args: argparse.Namespace) -> int:
    """Database maintenance: apply migrations, or show the schema revision."""
    from inspector.store import Store

    cfg = _load_config(args)
    if args.action != "upgrade":  # only `db upgrade` creates a database
        _require_database(cfg)
    with Store(cfg.database.url, busy_timeout_ms=cfg.database.busy_timeout_ms, migrate=False) as store:
        if args.action == "upgrade":
            before = store.revision()
            head = store.upgrade()
            print(f"database at revision {head}" + ("" if before == head else f" (was {before or 'empty'})"))
        else:
            print(store.revision() or "empty (run `inspector db upgrade`)")
    return 0


# --since bounds: a few days inside the calendar, so that local times and periods around them stay in range
_EARLIEST = datetime(1, 1, 3, tzinfo=timezone.utc)  # earlier than this: no lower bound at all
_LATEST = datetime(9999, 12, 29, tzinfo=timezone.utc)  # later times are cut to this (nothing is that new)


def parse_since(text: str) -> datetime | None:
    """'8h', '30m', '2d', '90s' (ago) or an ISO date/time -> an aware UTC datetime; None (every inspection)
    for a time before the calendar's first days, however far back (99999999999d, 0001-01-01)."""
    import re
    from datetime import timedelta

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        try:
            when = datetime.now(timezone.utc) - timedelta(seconds=float(m.group(1)) * unit)
        except OverflowError:  # further back than year 1 (or than timedelta can count)
            return None
        return None if when < _EARLIEST else when
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InspectorError(f"--since takes a duration like 8h, 30m, 2d or an ISO time, got {text!r}") from None
    try:
        utc = (when if when.tzinfo else when.astimezone()).astimezone(timezone.utc)
    except (OverflowError, ValueError):  # in UTC (or local time) it falls before year 1 or after 9999
        return None if when.year < 5000 else _LATEST
    return None if utc < _EARLIEST else min(utc, _LATEST)


_LIST_KEYS = ("id", "sha256", "name", "verdict", "reason", "detail", "score", "threshold", "product", "profile_version",
              "received_at", "inspected_at", "archived_path", "overlay_path", "size", "width", "height", "ms",
              "station", "line", "camera", "exposure", "peak_x", "peak_y", "pos_x", "pos_y",
              "review")
_DECISIONS = ("defect", "good")


def _local_time(when: datetime) -> str:
    """An aware datetime as local time, to the second (UTC, marked so, when local time would leave the
    calendar)."""
    try:
        return when.astimezone().replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")
    except (OverflowError, ValueError):
        return when.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ", timespec="seconds") + " UTC"


def _jsonable(row: dict) -> dict:
    """A row with datetimes as ISO strings."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def _config_named(cfg) -> str:
    """Where the database URL came from, for messages: the config file, or the built-in defaults."""
    if cfg.source is not None:
        return f"[database] url in {cfg.source}"
    return "built-in defaults: no ./config.toml here, give --config PATH"


def _require_database(cfg) -> None:
    """Read commands never create a database: a SQLite file that does not exist is a one-line DatabaseError
    naming the path and the config it came from (before anything, even its folder, is created). In-memory
    SQLite and server URLs (PostgreSQL) are left to the Store and the server."""
    from inspector.store import DatabaseError, database_file

    try:
        path = database_file(cfg.database.url)
    except DatabaseError:  # not a database URL: the Store says so, in one line
        return
    if path is not None and not path.exists():
        raise DatabaseError(f"no database at {path} ({_config_named(cfg)}); nothing has been recorded there: "
                            "check the config, or record parts first with `inspector watch`")


def _open_store(cfg):
    """The configured store for reading and reviews; DatabaseError, creating and migrating nothing, when its SQLite
    file does not exist or the database is not at this build's schema (see store.open_recorded)."""
    from inspector.store import open_recorded

    _require_database(cfg)
    return open_recorded(cfg.database.url, busy_timeout_ms=cfg.database.busy_timeout_ms)




def _is_id(value: int) -> bool:
    """Whether value can be an inspection id at all (1 .. 2**63-1); no row has any other."""
    from inspector.store import MAX_ID

    return 1 <= value <= MAX_ID


def _check_choice(option: str, value: str | None, choices: Sequence[str]) -> None:
    """One-line error unless value is None or one of choices."""
    if value is not None and value not in choices:
        raise InspectorError(f"{option} takes {' or '.join(choices) if len(choices) < 3 else ', '.join(choices)}, "
                             f"got {value!r}")


def cmd_list(args: argparse.Namespace) -> int:
    """Print inspections, newest first."""
    cfg = _load_config(args)
    if args.limit is not None and args.limit < 1:
        raise InspectorError("--limit must be at least 1")
    from inspector.store import MAX_ID

    limit = None if args.limit is None or args.limit > MAX_ID else args.limit  # more than any table holds
    _check_choice("--reviewed", args.reviewed, _DECISIONS)
    since = parse_since(args.since) if args.since else None
    with _open_store(cfg) as store:
        rows = store.list(verdict=args.verdict, since=since, limit=limit, reviewed=args.reviewed,
                          unreviewed=args.unreviewed, station=args.station, line=args.line, product=args.product)
    if args.json:
        print(json.dumps([_jsonable({k: r.get(k) for k in _LIST_KEYS}) for r in rows]))
        return 0
    for r in rows:
        when = _local_time(r["inspected_at"])
        if r["verdict"] == "rejected":
            what = escape_controls(f"{r['reason']}")
        else:
            what = f"score {r['score']:.3f} / {r['threshold']:.3f}"
        review = f"marked {r['review']}" if r.get("review") else "unreviewed"
        version = escape_controls(_product_version(r))
        print(f"{r['id']:>7}  {when}  {r['verdict']:<8}  {what:<24}  {version:<5}  {review:<13}  "
              f"{escape_controls(r['name'])}")
    if not rows:
        print("no inspections match", file=sys.stderr)
    return 0


def _product_version(r: dict) -> str:
    """The profile version that judged a row, `product/version` for a product other than the default."""
    version = r["profile_version"] or "-"
    product = r.get("product", "default")
    return version if product == "default" else f"{product or '?'}/{version}"


def _review_line(r: dict) -> str:
    """One decision as text: local time, decision, reviewer, note."""
    note = f"  {escape_controls(r['note'])}" if r.get("note") else ""
    return f"{_local_time(r['reviewed_at'])}  {r['decision']:<6}  by {escape_controls(r['reviewer'])}{note}"


def cmd_show(args: argparse.Namespace) -> int:
    """Print one inspection in full, with its review history."""
    cfg = _load_config(args)
    with _open_store(cfg) as store:
        row = store.get(args.id) if _is_id(args.id) else None
        history = store.reviews(args.id) if row is not None else []
    if row is None:
        raise InspectorError(f"no inspection #{args.id}")
    row = _jsonable(row)
    row["review"] = history[-1]["decision"] if history else None
    if args.json:
        print(json.dumps({**row, "reviews": [_jsonable(r) for r in history]}))
        return 0
    for key, value in row.items():  # floats to 6 significant digits (`--json` keeps them whole)
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        print(f"{key:<16}{'-' if value is None else escape_controls(shown)}")
    if not history:
        print(f"{'reviews':<16}none")
    for i, r in enumerate(history):
        print(f"{'reviews' if i == 0 else '':<16}{_review_line(r)}")
    return 0


def _default_reviewer(cfg) -> str:
    """[review] reviewer, else the login name."""
    from inspector.store import MAX_REVIEWER

    if cfg.review.reviewer.strip():
        if len(cfg.review.reviewer.strip()) > MAX_REVIEWER:  # it said "--by must be 1 to 64 characters", no --by given
            raise InspectorError(f"[review] reviewer must be at most {MAX_REVIEWER} characters (or give --by NAME)")
        return cfg.review.reviewer.strip()
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no LOGNAME/USER and no passwd entry (containers): KeyError or OSError
        raise InspectorError("cannot tell who is reviewing: give --by NAME or set [review] reviewer") from None


def cmd_mark(args: argparse.Namespace) -> int:
    """Record an operator's decision on one inspection; earlier decisions are kept."""
    from inspector.store import MAX_NOTE, MAX_REVIEWER, reviewer_name

    cfg = _load_config(args)
    _check_choice("--as", args.decision, _DECISIONS)
    reviewer = reviewer_name(args.by if args.by is not None else _default_reviewer(cfg))
    if reviewer is None:  # as on the review page (found by an adversarial test: a name with a newline was taken)
        raise InspectorError(f"--by must be 1 to {MAX_REVIEWER} printable characters")
    note = (args.note or "").strip() or None
    if note is not None and len(note) > MAX_NOTE:  # the review page refuses it too (it took 600 here)
        raise InspectorError(f"--note is longer than {MAX_NOTE} characters ({len(note)})")
    with _open_store(cfg) as store:
        row = store.get(args.id) if _is_id(args.id) else None
        if row is None:
            raise InspectorError(f"no inspection #{args.id}")
        if row["verdict"] == "rejected":
            raise InspectorError(f"inspection #{args.id} ({row['name']}) was rejected ({row['reason']}), never "
                                 "judged: there is no verdict to confirm or clear")
        try:
            added = store.add_review(args.id, args.decision, reviewer, note=note)
        except KeyError:  # deleted in between
            raise InspectorError(f"no inspection #{args.id}") from None
        history = store.reviews(args.id)
    earlier = [r for r in history if r["id"] < added["id"]]
    previous = earlier[-1] if earlier else None
    if args.json:
        print(json.dumps({"inspection": _jsonable({k: row.get(k) for k in ("id", "name", "verdict", "score",
                                                                                "threshold")}),
                          "recorded": _jsonable(added), "previous": _jsonable(previous) if previous else None,
                          "decisions": len(history)}))
        return 0
    print(f"#{row['id']} {escape_controls(row['name'])} (judged {row['verdict']}): marked {added['decision']} by "
          f"{escape_controls(reviewer)} at {_local_time(added['reviewed_at'])}"
          + (f", note: {escape_controls(note)}" if note else ""))
    if previous is None:
        print("first decision on this part")
    else:
        same = " (unchanged)" if previous["decision"] == added["decision"] else ""
        print(f"previous decision{same}: {_review_line(previous)}; {len(history)} decisions kept")
    return 0


_STATS_COLUMNS = (("parts", "parts"), ("ok", "ok"), ("defect", "defect"), ("rejected", "rejected"),
                  ("lighting", "lighting"), ("defect_rate", "defect rate"), ("reviewed", "reviewed"),
                  ("confirmed_defects", "confirmed"),
                  ("false_alarms", "false alarms"), ("missed_defects", "missed"),
                  ("throughput_per_hour", "parts/h"))


def _stats_cell(key: str, value) -> str:
    """One number of the stats table as text."""
    if value is None:
        return "-"
    if key == "defect_rate":
        return f"{value:.1%}"
    if key == "throughput_per_hour":
        return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return str(value)


def _drift_lines(alarms: list[dict]) -> list[str]:
    """One line per active drift alarm (conditions.active_alarms), for `stats`."""
    lines = []
    for a in alarms:
        since = _local_time(a["since"]) if hasattr(a["since"], "astimezone") else "-"
        lines.append(escape_controls(
            f"DRIFT ALARM at station {a['station']} since {since} (part #{a['since_id']}, profile "
            f"{a['profile_version']}): {a['signal'].replace('_', ' ')}, {a['level']}: {a['meaning']}"))
    return lines


def cmd_stats(args: argparse.Namespace) -> int:
    """Counts, defect rate, review outcomes and throughput per hour, shift or day."""
    from datetime import datetime, timezone

    from inspector import config, stats

    cfg = _load_config(args)
    _check_choice("--by", args.by, stats.PERIODS)
    since = None if args.since.strip().lower() == "all" else parse_since(args.since)
    shifts = config.shift_periods(cfg.review.shifts) if args.by == "shift" else ()
    from inspector import conditions

    from inspector.store import Selection

    now = datetime.now(timezone.utc)
    sel = Selection(since=since, station=args.station, line=args.line, product=args.product)
    with _open_store(cfg) as store:  # SQL aggregates per time bucket, folded into periods: no rows are read
        span = store.time_span(sel)
        periods = stats.compute_from(span, lambda width, lo, hi: store.bucket_counts(sel, width, lo, hi), args.by,
                                     shifts=shifts, since=since, until=now, fill_empty=args.empty)
        drift_rows = store.drift_rows(sel, stats.DRIFT_WINDOW)
    total = stats.totals(periods)
    replayed = conditions.replay_rows(drift_rows, cfg.models.dir)
    alarms = conditions.active_alarms(replayed)
    if args.json:
        drift = {name: sd.as_dict() for name, sd in sorted(replayed.items())}
        print(json.dumps({"periods": [_jsonable(p) for p in periods], "total": total, "drift": drift},
                         default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v)))
        return 0
    if span is None:
        print("no inspections" + (f" since {_local_time(since)}" if since else ""), file=sys.stderr)
        if not periods:
            return 0
    labels = [escape_controls(p["period"]) for p in periods]  # shift names come from the config
    width = max([len("period"), len("total")] + [len(label) for label in labels])
    widths = [max(len(title), 7) for _, title in _STATS_COLUMNS]
    print(f"{'period':<{width}}" + "".join(f"  {title:>{w}}" for (_, title), w in zip(_STATS_COLUMNS, widths)))
    for label, p in zip([*labels, "total"], [*periods, total]):
        p = {**p, "lighting": p["rejected_by_reason"].get("lighting", 0)}
        print(f"{label:<{width}}" + "".join(f"  {_stats_cell(k, p[k]):>{w}}"
                                            for (k, _), w in zip(_STATS_COLUMNS, widths)))
    if total["rejected"]:
        reasons = sorted(total["rejected_by_reason"].items(), key=lambda kv: (-kv[1], kv[0]))
        print("rejected by reason: " + ", ".join(f"{escape_controls(reason)} {n}" for reason, n in reasons))
    for line in _drift_lines(alarms):
        print(line)
    return 0


_EXPORT_KEYS = ("id", "name", "verdict", "reason", "detail", "score", "threshold", "product", "profile_version",
                "received_at", "inspected_at", "sha256", "source_key", "source_path", "archived_path",
                "overlay_path", "size", "width", "height", "ms", "station", "line", "camera", "exposure", "peak_x",
                "peak_y", "pos_x", "pos_y")
_EXPORT_REVIEW_KEYS = ("review", "reviewer", "note", "reviewed_at", "decisions")


def _csv_value(value) -> object:
    """A value for a CSV cell: ISO time for datetimes, empty for None, and text that a spreadsheet would run
    as a formula (=, +, -, @, tab, CR first) prefixed with an apostrophe (OWASP's CSV-injection advice)."""
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


_EXPORT_PLAIN = frozenset({"id", "score", "threshold", "size", "width", "height", "ms", "exposure", "peak_x", "peak_y",
                           "pos_x", "pos_y",
                           "decisions",
                           "received_at", "inspected_at", "reviewed_at"})  # numbers, and times as ISO text
_FORMULA_STARTS = frozenset(("=", "+", "-", "@", "\t", "\r"))


def _write_csv(out, rows) -> int:
    """Header row, then one row per inspection with its latest decision: `rows` are sequences of _EXPORT_KEYS +
    _EXPORT_REVIEW_KEYS as Store.stream yields them (times already ISO text), written as they come. Each cell as
    _csv_value makes it: the csv module writes None as an empty cell and numbers as they are, so only texts need a
    look. Returns the number of rows."""
    import csv

    keys = _EXPORT_KEYS + _EXPORT_REVIEW_KEYS
    texts = [i for i, k in enumerate(keys) if k not in _EXPORT_PLAIN]
    writer = csv.writer(out)
    writer.writerow(keys)
    written = 0
    for row in rows:
        cells = list(row)
        for i in texts:
            value = cells[i]
            if value and value[0] in _FORMULA_STARTS:  # a formula to a spreadsheet: shown, never run
                cells[i] = "'" + value
        writer.writerow(cells)
        written += 1
    return written


def _is_stream(mode: int) -> bool:
    """Whether a file mode is a character device or a FIFO: written into, never replaced (/dev/null,
    /dev/stdout, a terminal, a named pipe)."""
    import stat

    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def _export_target(target: Path, force: bool) -> str:
    """How export may write to target: "new" (create it), "replace" (an existing regular file, with force) or
    "stream" (a character device or FIFO, also behind a symbolic link, written into); InspectorError for
    anything else: a symbolic link to a file is never replaced, nor is a folder, socket or block device."""
    import os
    import stat

    try:
        st = os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):
        if not target.parent.is_dir():
            raise InspectorError(f"no folder {target.parent} to write {target.name} into") from None
        return "new"
    except OSError as exc:
        raise InspectorError(f"cannot write {target}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        try:
            if _is_stream(os.stat(target).st_mode):
                return "stream"
        except OSError:  # a dangling link, or a loop
            pass
        raise InspectorError(f"{target} is a symbolic link: export never replaces one; give the file it points to")
    if _is_stream(st.st_mode):
        return "stream"
    if stat.S_ISDIR(st.st_mode):
        raise InspectorError(f"{target} is a folder")
    if not stat.S_ISREG(st.st_mode):
        raise InspectorError(f"{target} is not a regular file, a character device or a FIFO: not written")
    if not force:
        raise InspectorError(f"{target} exists: give --force to overwrite it")
    return "replace"


def _write_stream(target: Path, rows) -> int:
    """Write the CSV into the character device or FIFO at target: opened without creating or truncating, and
    refused if what was opened is something else (swapped in since it was looked at)."""
    import os

    try:
        fd = os.open(target, os.O_WRONLY | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise InspectorError(f"cannot write {target}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
        if not _is_stream(os.fstat(fd).st_mode):
            raise InspectorError(f"{target} changed while exporting: not written")
        try:
            written = _write_csv(out, rows)
            out.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise InspectorError(f"cannot write {target}: {exc.strerror or exc}") from None
    return written


def cmd_export(args: argparse.Namespace) -> int:
    """Write inspections and their latest review decisions to a CSV file, streamed: rows are written as the
    database cursor yields them (oldest first), so memory stays flat whatever the number of rows."""
    from inspector.store import Selection

    cfg = _load_config(args)
    since = parse_since(args.since) if args.since else None
    target = None if args.csv == "-" else Path(args.csv)
    kind = "stdout" if target is None else _export_target(target, args.force)
    sel = Selection(verdict=args.verdict, since=since, station=args.station, line=args.line, product=args.product)
    with _open_store(cfg) as store, store.stream(sel, _EXPORT_KEYS + _EXPORT_REVIEW_KEYS) as rows:
        if target is None:
            written = _write_csv(sys.stdout, rows)
            print(f"wrote {written} rows", file=sys.stderr)
            return 0
        if kind == "stream":  # the message goes to stderr: the stream may be our own standard output
            written = _write_stream(target, rows)
            print(escape_controls(f"wrote {written} rows to {target}"), file=sys.stderr)
            return 0
        written = _write_file(target, rows, args.force)
    print(escape_controls(f"wrote {written} rows to {target}"))
    return 0


def _write_file(target: Path, rows, force: bool) -> int:
    """Write the CSV to a temporary file beside the target, then move it into place: an interrupted export never
    leaves half a file under the name, and without `force` an existing file (even one created meanwhile) is kept."""
    import os
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise InspectorError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            written = _write_csv(out, rows)
        os.chmod(tmp, 0o666 & ~_umask())
        if not force:
            _move_no_replace(tmp, target)
        elif _export_target(target, force=True) == "stream":  # looked at again: a link or folder put there
            raise InspectorError(f"{target} changed while exporting: not replaced")  # meanwhile raises too
        else:
            os.replace(tmp, target)
    except BaseException as exc:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(exc, FileExistsError):
            raise InspectorError(f"{target} exists: give --force to overwrite it") from None
        if isinstance(exc, OSError):
            raise InspectorError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise
    return written


def _move_no_replace(src: str, dst: Path) -> None:
    """Move src to dst, FileExistsError when dst exists: a hard link where the filesystem has them, else a check
    and a rename."""
    import os

    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network and FAT filesystems)
        if os.path.lexists(dst):
            raise FileExistsError(dst) from None
        os.rename(src, dst)
    else:
        os.unlink(src)


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def _station_filters(p: argparse.ArgumentParser) -> None:
    """--station and --line: only the inspections of one station or line (default: all of them together)."""
    p.add_argument("--station", metavar="NAME", help="only this station ([station] name); default: all stations")
    p.add_argument("--line", metavar="NAME", help="only this line ([station] line); default: all lines")
    p.add_argument("--product", metavar="NAME", type=_product_filter,
                   help="only the parts of this product (`default`: the default product); default: every product")


def _product_filter(text: str) -> str:
    """A --product value of list/stats/export: a product name (a typo such as `../x` or `v1` is a usage error, not
    an empty answer; found by an adversarial test), or "" for the parts whose product could not be told."""
    from inspector import products

    if text == "":
        return text
    try:
        return products.check_name(text)
    except products.ProductError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per job; every command has help text."""
    parser = argparse.ArgumentParser(
        prog="inspector", description="Visual inspection of parts: learn what good parts look like, flag the rest.")
    parser.add_argument("--version", action="version", version=f"inspector {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=None,
                        help="config file (default: ./config.toml if present, else built-in defaults)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", parents=[common], help="fit, calibrate, save and activate a profile from good images",
                       description="Fit a normal profile on the good images in DIR, calibrate its threshold on "
                                   "cross-fitted good images, save it as a new version and activate it.")
    p.add_argument("dir", help="folder of defect-free images")
    p.add_argument("--note", help="a note stored with the version")
    p.add_argument("--no-activate", action="store_true", help="save the version without activating it")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _product_option(p, "save the version as a profile")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", parents=[common], help="judge image files with the active profile",
                       description="Print verdict (ok/defect/rejected), score and threshold per image. Exit code: "
                                   "0 all ok, 1 a defect, 3 a rejected file (unless --exit-zero); 2 when a file "
                                   "named does not exist (nothing is scored).")
    p.add_argument("images", nargs="+", help="image files (a name that does not exist is a usage error, exit 2)")
    p.add_argument("--json", action="store_true",
                   help='print one JSON object per line ("path": the file as given)')
    p.add_argument("--profile", metavar="VERSION", help="use this version instead of the active one")
    p.add_argument("--exit-zero", action="store_true", help="exit 0 whatever the verdicts")
    _product_option(p, "judge with the active profile")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("eval", parents=[common], help="measure detection quality on an MVTec-layout folder",
                       description="Fit on DIR/train/good with the current config (nothing is saved), score "
                                   "DIR/test/*, and print AUROC, average precision, false-alarm rate and recall "
                                   "at the calibrated threshold, per-type recall, pixel AUROC and ms per image.")
    p.add_argument("dir", help="folder with train/good, test/good, test/<defect_type>, optional ground_truth")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("--report", metavar="OUT", help="write ROC, histogram and overlays of the worst images to OUT")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("segment", parents=[common], help="the tutorial's figure: per-image k-means at several K",
                       description="Write a panel: the image beside per-image cv2.kmeans segmentations "
                                   "(KMEANS_PP_CENTERS, 10 attempts) at each K.")
    p.add_argument("image", help="an image file")
    p.add_argument("--k", default="2,4,10", help="comma-separated K values (default 2,4,10)")
    p.add_argument("--out", default="panel.png", help="output PNG (default panel.png)")
    p.add_argument("--max-side", type=int, default=512,
                   help="downscale so the longer side is at most this (at least 32; default 512)")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("bench", parents=[common], help="measure speed as ratios on generated 5 MP JPEGs",
                       description="Medians over generated 5 MP JPEGs: decode_ms (plain full decode), inspect_ms "
                                   "(bytes to verdict as the service runs it), their ratio, and fit_s_200. With "
                                   "--watch: run a real `inspector watch` in a temporary folder, drop 5 MP JPEGs "
                                   "into it and measure throughput (against decode-only throughput of the same "
                                   "files on the same cores, in the same run), latency from file complete to "
                                   "verdict committed, and resident memory after 1,000 and 10,000 parts. With "
                                   "--stations: throughput of one, two and three stations sharing one folder and "
                                   "one PostgreSQL, against one station on SQLite, in the same run. With "
                                   "--robustness: image and pixel AUROC, false alarms, recall and rejections on "
                                   "perturbed copies of each benchmark set, beside the clean figures.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--runs", type=int, default=15, help="timed repetitions per measure (default 15)")
    p.add_argument("--fit-images", type=int, default=200, help="images for the fit timing (default 200)")
    p.add_argument("--watch", action="store_true",
                   help="benchmark the hot-folder service end to end instead (takes minutes; see the options below)")
    p.add_argument("--stations", action="store_true",
                   help="benchmark one, two and three stations sharing one folder and one PostgreSQL against one "
                        "SQLite station, in one run (takes minutes; see inspector/tooling/stationbench.py)")
    p.add_argument("--pg-url", default=None,
                   help="with --stations: PostgreSQL server for the fresh benchmark databases (default "
                        "$INSPECTOR_TEST_POSTGRES_URL or postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    p.add_argument("--parts", type=int, default=None,
                   help="with --watch: files dropped for the throughput figure (default 2000); with --stations: "
                        "per configuration (default 600); with --defects: parts per kind and d (default 40)")
    p.add_argument("--latency-parts", type=int, default=300,
                   help="with --watch: files dropped at half the measured throughput for latency (default 300)")
    p.add_argument("--rss-parts", type=int, default=10000,
                   help="with --watch: keep the same watcher running until this many parts are committed, "
                        "sampling its resident memory at 1,000 and here (default 10000)")
    p.add_argument("--max-backlog", type=int, default=400,
                   help="with --watch or --stations: at most this many dropped files waiting for a verdict "
                        "(default 400)")
    p.add_argument("--keep", action="store_true",
                   help="with --watch or --stations: keep the temporary folder (databases, watcher logs) and "
                        "print its path")
    p.add_argument("--robustness", action="store_true",
                   help="measure detection quality on perturbed copies of every MVTec-layout set in --data "
                        "(lighting, colour, gamma, JPEG, sensor noise, defocus, magnification, random placement, "
                        "pasted spots) beside the clean figures; prints a markdown table (takes minutes; see "
                        "inspector/tooling/robustness.py)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="with --robustness or --defects --real: folder of MVTec-layout sets (default ../shared/data)")
    p.add_argument("--sets", default=None, metavar="A,B",
                   help="with --robustness or --defects --real: comma-separated set (sub-folder) names (default: "
                        "every set in --data)")
    p.add_argument("--perturb", default=None, metavar="P1,P2",
                   help="with --robustness: comma-separated perturbations (default all: clean, png, gain0.97, "
                        "gain0.9, gain1.1, offset-10, offset+10, offset-5, offset+5, warm, cool, gamma0.9, "
                        "gamma1.1, alternate, jpeg80, noise3, noise6, blur1, blur2, zoom1.03, zoom0.97, zoom1.05, "
                        "zoom0.95, motion15, side5, side10, vignette30, shadow20, placed, placed-black, pasted; "
                        "clean always runs as the reference)")
    p.add_argument("--seed", type=int, default=0,
                   help="with --robustness or --defects: seed of the random placement and pasting (default 0)")
    p.add_argument("--seeds", default=None, metavar="S1,S2",
                   help="with --robustness: the placed and pasted rows once per seed, with their median, e.g. 0,1,2 "
                        "(instead of --seed)")
    p.add_argument("--defects", action="store_true",
                   help="detection limit: paste dark spots, light spots, scratches and colour specks of diameter d "
                        "into 5 MP good parts and report the share caught per d, false alarms on the same parts, "
                        "min_defect_px_90 and inspect_over_decode, at the default and the finest setting (takes "
                        "minutes; see inspector/tooling/defectbench.py)")
    p.add_argument("--good", type=int, default=200,
                   help="with --defects: good parts scored for the false-alarm rate; defects are pasted into the "
                        "first --parts (default 40 per kind and d) of them (default 200)")
    p.add_argument("--train-parts", type=int, default=200,
                   help="with --defects: generated good 5 MP parts the profile is trained on (default 200)")
    p.add_argument("--diameters", default=None, metavar="D1,D2",
                   help="with --defects: defect diameters in px (default 4,6,8,12,16,24,32,48,64)")
    p.add_argument("--kinds", default=None, metavar="K1,K2",
                   help="with --defects: defect kinds (default dark_spot,light_spot,scratch,colour_speck)")
    p.add_argument("--finest-width", type=int, default=1024,
                   help="with --defects: [profile] fine_width of the finest setting (default 1024)")
    p.add_argument("--real", action="store_true",
                   help="with --defects: also the MVTec-layout sets in --data, upscaled to ~5 MP (skipped when "
                        "absent; --sets to choose)")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="with --defects: write a PNG of the share caught against d")
    p.add_argument("--fit-sizes", default=None, metavar="N1,N2",
                   help="training at volume: fit time, peak memory and profile size for each N generated "
                        "1296x972 JPEGs, each fit in a fresh process (e.g. 200,1000,5000; takes minutes; see "
                        "inspector/tooling/fitbench.py)")
    p.add_argument("--fit-folder", type=Path, default=None, metavar="DIR",
                   help="with --fit-sizes: write the generated parts here and reuse them in later runs "
                        "(default: a temporary folder)")
    p.add_argument("--db", action="store_true",
                   help="the reads of a long verdict log: fill a scratch database with --rows parts through the "
                        "Store (3%% defects, 30%% of them reviewed, 2 parts/s), then time list, stats, export and the "
                        "review pages, each CLI read in a fresh process (time and peak memory; see "
                        "inspector/tooling/dbbench.py)")
    p.add_argument("--rows", type=int, default=1_000_000, help="with --db: parts in the log (default 1000000)")
    p.add_argument("--url", default=None,
                   help="with --db: a PostgreSQL server (postgresql+psycopg://user@host/db) to create the scratch "
                        "database on (default: a SQLite file in a temporary folder)")
    p.add_argument("--template", action="store_true",
                   help="with --db: fill a template once per --rows and copy it for each run (SQLite: kept in "
                        "inspector-dbbench-templates in the temporary folder; PostgreSQL: database "
                        "inspector_dbbench_tpl_<rows>_<revision>); the reads' clock is the template's fill time")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("profiles", parents=[common], help="list profile versions, activate one, or roll back",
                       description="`profiles list` shows versions (* = active); `profiles activate VERSION`; "
                                   "`profiles rollback` re-activates the version that was active before the "
                                   "current one. A running watcher switches at the next part.")
    p.add_argument("action", nargs="?", choices=["list", "activate", "rollback"], default="list",
                   help="list (default), activate or rollback")
    p.add_argument("version", nargs="?", help="version to activate, e.g. v3")
    p.add_argument("--json", action="store_true", help="print JSON")
    _product_option(p, "the versions")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser("retrain", parents=[common], help="retrain the profile from reviews, with a gate",
                       description="Build a candidate from the active profile's good images, every part "
                                   "operators marked good (false alarms) and --add folders; compare it with the "
                                   "active profile on every reviewed part and on the calibration images; print "
                                   "a before/after table; activate it only when no confirmed defect the active "
                                   "profile caught would be missed and its cross-fitted false-alarm rate is "
                                   "within the active profile's budget (unless --force). A false alarm it clears "
                                   "only because it trained on it (held out, still flagged) is marked MEMORISED. "
                                   "Exit 0 when activated, 7 when the gate kept the active profile (the candidate "
                                   "stays saved); with --no-activate, 0 when the gate would activate it, else 7.")
    p.add_argument("--add", action="append", default=[], metavar="DIR", help="also train on the good images in DIR "
                                                                             "(repeatable)")
    gate = p.add_mutually_exclusive_group()
    gate.add_argument("--force", action="store_true", help="activate the candidate even when the gate refuses it")
    gate.add_argument("--no-activate", action="store_true",
                      help="dry run: save and compare the candidate, say what the gate would do, activate nothing")
    p.add_argument("--note", help="a note stored with the new version (shown by `inspector profiles list`)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _product_option(p, "retrain the profile (and read the reviews of the parts)")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("recipe", parents=[common], help="set or show the current recipe (product) of the station",
                       description="With [watch] product_from = \"recipe\", every part is judged with the profile of "
                                   "the recipe in force when it arrived. `recipe set NAME` switches (the product "
                                   "needs an active profile; recorded in models/RECIPE); `recipe show` (default) "
                                   "prints the current recipe and every product with its active version.")
    p.add_argument("action", nargs="?", choices=["show", "set"], default="show", help="show (default) or set")
    p.add_argument("name", nargs="?", help="with set: the product to switch to")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_recipe)

    p = sub.add_parser("serve", parents=[common], help="serve the review page (default 127.0.0.1:8080)",
                       description="The review page: flagged parts with image and anomaly map, confirm defect / "
                                   "false alarm buttons, and a stats page. Binds [web] host:port (loopback by "
                                   "default); any other address requires [web] token.")
    p.add_argument("--host", help="bind address (default [web] host)")
    p.add_argument("--port", type=int, help="port (default [web] port)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("watch", parents=[common], help="run the hot-folder service: every part gets one verdict",
                       description="Watch DIR (default: [watch] dir) for parts, judge each complete file once with "
                                   "the active profile, record the verdict in the database, and archive the file "
                                   "into ok/, defect/ or rejected/. Stops cleanly on SIGTERM, Ctrl-C or a hangup.")
    p.add_argument("dir", nargs="?", help="the folder to watch (default: [watch] dir from the config)")
    p.add_argument("--once", action="store_true", help="judge what is in the folder now, then exit")
    p.add_argument("--observer", choices=["native", "polling"], help="override [watch] observer")
    p.add_argument("--workers", type=int, help="override [watch] workers (0 = number of cores plus one)")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("db", parents=[common], help="database schema: upgrade or show the revision",
                       description="`db upgrade` applies the Alembic migrations to [database] url (the watcher "
                                   "also does this at start); `db current` prints the schema revision.")
    p.add_argument("action", choices=["upgrade", "current"], help="upgrade or current")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("list", parents=[common], help="list inspections, newest first",
                       description="List recorded inspections, newest first.")
    p.add_argument("--verdict", choices=["ok", "defect", "rejected"], help="only this verdict")
    p.add_argument("--since", metavar="WHEN", help="only newer than this: 8h, 30m, 2d, or an ISO date/time")
    p.add_argument("--limit", type=int, default=50, help="at most N rows (default 50)")
    review = p.add_mutually_exclusive_group()
    review.add_argument("--unreviewed", action="store_true", help="only parts no operator has decided on yet")
    review.add_argument("--reviewed", metavar="defect|good",
                        help="only parts whose latest operator decision is this")
    p.add_argument("--json", action="store_true", help='print one JSON array (key "review": the latest decision)')
    _station_filters(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", parents=[common], help="print one inspection in full, with its review history",
                       description="Print every recorded field of inspection ID, then every operator decision on "
                                   "it, oldest first (local time, decision, reviewer, note).")
    p.add_argument("id", type=int, help="inspection id (see `inspector list`)")
    p.add_argument("--json", action="store_true",
                   help='print one JSON object ("review": the latest decision, "reviews": the history)')
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("mark", parents=[common], help="record an operator's decision on an inspection",
                       description="Record whether inspection ID really is a defect (`--as defect`: a confirmed "
                                   "defect, or a missed one on a part judged ok) or a good part (`--as good`: a "
                                   "false alarm on a part judged defect). Every decision is kept with who, when "
                                   "and why; marking again adds to the history and the newest decision counts. "
                                   "Rejected files were never judged and cannot be marked.")
    p.add_argument("id", type=int, help="inspection id (see `inspector list`)")
    p.add_argument("--as", dest="decision", metavar="defect|good", required=True,
                   help="the decision: defect or good")
    p.add_argument("--note", metavar="TEXT", help="why (stored with the decision)")
    p.add_argument("--by", metavar="NAME",
                   help="who decides (default: [review] reviewer, else the login name)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: the decision recorded and the previous one")
    p.set_defaults(func=cmd_mark)

    p = sub.add_parser("stats", parents=[common], help="counts, defect rate, reviews and throughput per period",
                       description="Per hour, shift or day (local time; shifts from [review] shifts, a shift that "
                                   "runs past midnight belongs to the day it started): parts inspected; ok, "
                                   "defect and rejected counts; defect rate = defect / (ok + defect) (rejected "
                                   "files were never judged); from the latest operator decision on each part: "
                                   "reviewed parts, confirmed defects (judged defect, marked defect), false "
                                   "alarms (judged defect, marked good) and missed defects (judged ok, marked "
                                   "defect), counted as the review page counts them; "
                                   "throughput = parts per hour of the period's length, where the current period "
                                   "and the one --since falls into count only the time they cover. Periods "
                                   "without parts are left out unless --empty. The last line sums the periods. "
                                   "The lighting column counts parts rejected because their lighting was beyond "
                                   "tolerance; a line below lists rejections by reason. Drift: each station's "
                                   "newest 5,000 parts in the range (as on the review page) are replayed "
                                   "through the drift monitor (CUSUMs of "
                                   "exposure and score against the baseline in the profile.json of the version "
                                   "that judged them, restarted when the version changes); a line says when a "
                                   "drift alarm is active.")
    p.add_argument("--by", default="hour", metavar="hour|shift|day", help="period (default hour)")
    p.add_argument("--since", metavar="WHEN", default="7d",
                   help="only newer than this: 8h, 2d, an ISO date/time, or all (default 7d)")
    p.add_argument("--empty", action="store_true", help="also list periods without parts")
    p.add_argument("--json", action="store_true",
                   help='print one JSON object: "periods" (start and end as local ISO times), "total", and '
                        '"drift" per station (statistics, alarms raised in the range, whether one is active)')
    _station_filters(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("export", parents=[common], help="write inspections with their review decisions to CSV",
                       description="Write one CSV row per inspection (oldest first; UTF-8, a header row, times in "
                                   "ISO 8601 UTC) with its latest operator decision (review), that decision's "
                                   "reviewer, note and reviewed_at, and the number of decisions on it. An "
                                   "existing file is never overwritten without --force. A character device or "
                                   "FIFO (/dev/stdout, a named pipe) is written into, never replaced; a symbolic "
                                   "link to anything else, a folder or a socket is refused.")
    p.add_argument("--csv", metavar="FILE", required=True, help="the CSV file to write (- for standard output)")
    p.add_argument("--since", metavar="WHEN", help="only newer than this: 8h, 30m, 2d, or an ISO date/time")
    p.add_argument("--verdict", choices=["ok", "defect", "rejected"], help="only this verdict")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    _station_filters(p)
    p.set_defaults(func=cmd_export)

    from inspector import opscli  # issue 15: `prune` and `status` live in their own module

    opscli.add_commands(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InspectorError as exc:
        print(f"inspector: error: {escape_controls(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("inspector: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
