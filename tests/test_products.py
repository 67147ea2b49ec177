"""Several products on one station (issue 16): a profile per product, the product of each part chosen by its
folder, its file name or the current recipe, and the product recorded on every row downstream.

Three generated products (inspector/synthetic.py PRODUCTS: the same part in other colours; a profile of one flags
the good parts of the others) are trained with `inspector train --product`, then real `inspector watch` processes
judge interleaved parts; the rows are read with plain sqlite3 and compared with the test's own ledger and with
what each product's profile alone says about the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from inspector import cli, products, profiles
from inspector.config import InputConfig
from inspector.errors import ConfigError, NoActiveProfile
from inspector.pipeline import Inspector
from inspector.synthetic import make_part
from watchkit import atomic_drop, make_site, run_once, start, stop, wait_for, wait_started

PRODUCTS = ("flange", "cap", "ring")
SIZE = (160, 120)


def jpeg(product: str, seed: int, defect: str | None = None) -> bytes:
    """A small synthetic part of a product as JPEG bytes."""
    img = make_part(np.random.default_rng(seed), *SIZE, defect=defect, product=product)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def train(config: Path, good: Path, product: str | None, *extra: str) -> None:
    """`inspector train` in this process (quiet)."""
    argv = ["train", str(good), "--config", str(config), *extra] + (["--product", product] if product else [])
    assert cli.main(argv) == 0


def good_folder(root: Path, product: str, n: int = 24, seed: int = 0) -> Path:
    """n good training parts of a product."""
    folder = root / f"good-{product}-{seed}"
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"g{i:02d}.jpg").write_bytes(jpeg(product, 50_000 + seed * 1000 + PRODUCTS.index(product) * 100 + i))
    return folder


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with a profile for each of the three products (v1 each), none for the default product."""
    root = tmp_path_factory.mktemp("products")
    cfg = root / "train.toml"
    cfg.write_text(f'[models]\ndir = "{root / "models"}"\n')
    for product in PRODUCTS:
        train(cfg, good_folder(root, product), product)
    return root / "models"


def copy_models(models: Path, dest: Path) -> Path:
    """A private copy of a models folder (a test that activates versions must not touch the shared one)."""
    shutil.copytree(models, dest)
    return dest


def alone(models: Path, product: str) -> Inspector:
    """The product's active profile as a single-product station would judge with it (BLAS held to one thread, as in
    the watcher's workers, so the sums add up in the same order)."""
    threadpool_limits(limits=1, user_api="blas")
    stored = profiles.load(products.models_dir_for(models, product))
    return Inspector(stored.profile, stored.version, InputConfig())


# ------------------------------------------------------------------------------------------ names and layout


def test_product_names_and_folders(tmp_path: Path) -> None:
    assert products.models_dir_for(tmp_path, "default") == tmp_path
    assert products.models_dir_for(tmp_path, "cap") == tmp_path / "cap"
    for bad in ("", "v1", "v12", "ACTIVE", "RECIPE", "../x", "a/b", ".hidden", "-x", "a b", "x" * 65):
        with pytest.raises(ConfigError):
            products.models_dir_for(tmp_path, bad)
    assert products.check_name("Line_2-cap") == "Line_2-cap"


def test_three_products_are_listed_and_the_old_layout_is_the_default_product(three: Path, models: Path) -> None:
    assert products.names(three) == ["cap", "flange", "ring"]
    assert products.names(models) == ["default"]  # today's layout: models/ACTIVE, models/v1, models/v2
    assert profiles.active_version(products.models_dir_for(models, "default")) == "v1"
    for product in PRODUCTS:
        assert (three / product / "ACTIVE").read_text().strip() == "v1"
        assert json.loads((three / product / "v1" / "profile.json").read_text())["product"] == product


def test_a_profile_of_one_product_flags_the_others(three: Path) -> None:
    """What makes the other tests able to fail: judged with the wrong product's profile, a good part is a defect."""
    for product in PRODUCTS:
        insp = alone(three, product)
        for other in PRODUCTS:
            verdicts = {insp.inspect_bytes(jpeg(other, 900 + i), "p.jpg").verdict for i in range(4)}
            assert verdicts == ({"ok"} if other == product else {"defect"}), (product, other, verdicts)


# ------------------------------------------------------------------------------------------ the recipe log


def test_the_recipe_in_force_when_a_part_arrived(tmp_path: Path, three: Path) -> None:
    models = copy_models(three, tmp_path / "models")
    log = products.RecipeLog(models)
    assert log.at(datetime.now(timezone.utc)) is None and products.current_recipe(models) is None
    t1 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
    t2 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    products.set_recipe(models, "cap", at=t1)
    assert log.at(t1) == "cap"
    products.set_recipe(models, "ring", at=t2)
    with open(models / products.RECIPE, "ab") as fh:
        fh.write(b"garbage without a time\n2026-12-01T10:00:00+00:00 v1\n2026-12-01T10:00")  # torn last line
    products.set_recipe(models, "flange", at=datetime(2026, 12, 1, 11, 0, tzinfo=timezone.utc))
    assert [(e.at.hour, e.product) for e in products.read_recipes(models)] == [(8, "cap"), (9, "ring"), (11, "flange")]
    assert log.at(datetime(2026, 12, 1, 7, 59, tzinfo=timezone.utc)) is None
    assert log.at(datetime(2026, 12, 1, 8, 30, tzinfo=timezone.utc)) == "cap"
    assert log.at(datetime(2026, 12, 1, 10, 30, tzinfo=timezone.utc)) == "ring"  # the v1 line is not a product
    assert log.at(datetime(2026, 12, 2, tzinfo=timezone.utc)) == "flange"
    with pytest.raises(NoActiveProfile):
        products.set_recipe(models, "bolt")  # nothing could judge it: refused, the log unchanged
    assert products.current_recipe(models).product == "flange"


# ------------------------------------------------------------------------------------------ the watcher


def _rows(site) -> list[dict]:
    return site.rows()


def _check_rows(rows: list[dict], ledger: dict[str, tuple[str, str | None]], models: Path) -> list[dict]:
    """Every row carries its part's product and that product's active version, and its verdict and score are what
    the product's profile alone gives the same bytes (returned: those single-product verdicts)."""
    assert sorted(r["name"] for r in rows) == sorted(ledger)
    judges = {p: alone(models, p) for p in PRODUCTS}
    for r in rows:
        product, _defect = ledger[r["name"]]
        assert r["product"] == product, r
        assert r["profile_version"] == judges[product].version
    archived = {r["name"]: r for r in rows}
    singles = []
    for name, (product, _defect) in ledger.items():
        r = archived[name]
        data = Path(r["archived_path"]).read_bytes()
        single = judges[product].inspect_bytes(data, name)
        assert r["verdict"] == single.verdict and r["score"] == pytest.approx(single.score, rel=1e-6, abs=1e-9), name
        singles.append({"name": name, "verdict": single.verdict})
    return singles


def _detection(rows: list[dict], ledger: dict[str, tuple[str, str | None]]) -> dict[str, dict[str, float]]:
    """Per product: recall on the defects and false alarms on the good parts."""
    out = {}
    for product in PRODUCTS:
        mine = [r for r in rows if ledger[r["name"]][0] == product]
        bad = [r for r in mine if ledger[r["name"]][1]]
        good = [r for r in mine if not ledger[r["name"]][1]]
        out[product] = {"parts": len(mine), "recall": sum(r["verdict"] == "defect" for r in bad) / max(1, len(bad)),
                        "false_alarms": sum(r["verdict"] == "defect" for r in good) / max(1, len(good))}
    return out


def _compare_detection(rows: list[dict], singles: list[dict], ledger: dict[str, tuple[str, str | None]],
                       what: str) -> None:
    """Per product, recall and false alarms on the station equal those of the product's profile alone on the same
    parts; every product catches its defects (the synthetic defects are plain, a wrong profile would flag all)."""
    figures, single = _detection(rows, ledger), _detection(singles, ledger)
    print(f"\n{what}: {json.dumps(figures)}")
    assert figures == single
    assert all(figures[p]["parts"] > 150 and figures[p]["recall"] >= 0.9 and figures[p]["false_alarms"] < 0.5
               for p in PRODUCTS), figures


def _interleaved(n: int, seed: int) -> list[tuple[str, int, str | None]]:
    """n parts of the three products in a shuffled order, one in eight a defect (spot or missing)."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n):
        product = PRODUCTS[int(rng.integers(0, 3))]
        defect = ("spot", "missing")[i % 2] if i % 8 == 0 else None
        parts.append((product, 70_000 + seed * 10_000 + i, defect))
    return parts


def test_600_parts_of_three_products_by_folder(tmp_path: Path, three: Path) -> None:
    site = make_site(tmp_path / "site", three, product_from="folder", recursive=True, workers=3)
    ledger: dict[str, tuple[str, str | None]] = {}
    for product in PRODUCTS:
        (site.inbox / product).mkdir()
    proc = start(site)
    try:
        wait_started(site, proc)
        began = time.monotonic()
        for product, seed, defect in _interleaved(600, 1):
            name = f"{product}_{seed}.jpg"
            ledger[name] = (product, defect)
            atomic_drop(site.inbox / product, name, jpeg(product, seed, defect))
        wait_for(lambda: len(_rows(site)) >= 600, 300, "600 verdicts", proc, site)
        took = time.monotonic() - began
    finally:
        assert stop(proc) == 0
    rows = _rows(site)
    _compare_detection(rows, _check_rows(rows, ledger, three), ledger, f"600 parts by folder in {took:.1f} s")


def test_600_parts_of_three_products_by_name_and_unknown_products(tmp_path: Path, three: Path) -> None:
    site = make_site(tmp_path / "site", three, product_from="name", product_regex="^(?P<product>[a-z]+)-", workers=3)
    ledger: dict[str, tuple[str, str | None]] = {}
    for product, seed, defect in _interleaved(600, 2):
        name = f"{product}-{seed}.jpg"
        ledger[name] = (product, defect)
        (site.inbox / name).write_bytes(jpeg(product, seed, defect))
    # no product in the name, a product without a profile, and a name that cannot be a product
    unknown = {"part-1.jpg": "part", "nomatch.jpg": "", "bolt-2.jpg": "bolt"}
    for i, name in enumerate(unknown):
        (site.inbox / name).write_bytes(jpeg("flange", 99 + i))
    began = time.monotonic()
    done = run_once(site, timeout=400)
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _rows(site)
    rejected = {r["name"]: r for r in rows if r["name"] in unknown}
    assert all(r["verdict"] == "rejected" and r["reason"] == "unknown_product" and r["profile_version"] is None
               and r["score"] is None for r in rejected.values())
    assert {n: r["product"] for n, r in rejected.items()} == unknown
    assert "has no active profile" in rejected["bolt-2.jpg"]["detail"]
    rows = [r for r in rows if r["name"] not in unknown]
    _compare_detection(rows, _check_rows(rows, ledger, three), ledger, f"600 parts by name (--once) in {took:.1f} s")


def test_folder_rule_rejects_parts_outside_a_product_folder(tmp_path: Path, three: Path) -> None:
    site = make_site(tmp_path / "site", three, product_from="folder", recursive=True)
    (site.inbox / "cap").mkdir()
    (site.inbox / "bolt").mkdir()
    (site.inbox / "cap" / "a.jpg").write_bytes(jpeg("cap", 1))
    (site.inbox / "bolt" / "b.jpg").write_bytes(jpeg("cap", 2))
    (site.inbox / "top.jpg").write_bytes(jpeg("cap", 3))
    assert run_once(site).returncode == 0
    rows = {r["name"]: r for r in _rows(site)}
    assert (rows["a.jpg"]["product"], rows["a.jpg"]["verdict"], rows["a.jpg"]["profile_version"]) == ("cap", "ok", "v1")
    assert (rows["b.jpg"]["product"], rows["b.jpg"]["reason"]) == ("bolt", "unknown_product")
    assert (rows["top.jpg"]["product"], rows["top.jpg"]["reason"]) == ("", "unknown_product")


def test_folder_rule_needs_recursive(tmp_path: Path, three: Path, capsys: pytest.CaptureFixture) -> None:
    site = make_site(tmp_path / "site", three, product_from="folder")
    assert cli.main(["watch", "--once", "--config", str(site.config)]) == 2
    assert "needs watch.recursive = true" in capsys.readouterr().err
    site.write_config(product_from="name", product_regex="^x")
    assert cli.main(["watch", "--once", "--config", str(site.config)]) == 2
    assert "named group (?P<product>" in capsys.readouterr().err


def test_twenty_recipe_switches_while_parts_arrive(tmp_path: Path, three: Path, capsys: pytest.CaptureFixture) -> None:
    """20 switches, each followed at once by a burst of the new product's parts while the previous burst may still
    be waiting: every part is judged with the recipe in force when it arrived, never another product's profile."""
    site = make_site(tmp_path / "site", three, product_from="recipe", workers=2)
    cfg = str(site.config)
    assert cli.main(["recipe", "set", "flange", "--config", cfg]) == 0
    ledger: dict[str, tuple[str, str | None]] = {}
    switches: list[tuple[str, float, float]] = []  # product, set at (epoch s), the command's duration
    proc = start(site)
    try:
        wait_started(site, proc)
        for k in range(20):
            product = PRODUCTS[(k + 1) % 3]
            t0 = time.time()
            assert cli.main(["recipe", "set", product, "--config", cfg]) == 0
            switches.append((product, t0, time.time() - t0))
            for i in range(5):
                name = f"s{k:02d}-{i}.jpg"
                ledger[name] = (product, "spot" if i == 4 and k % 4 == 0 else None)
                atomic_drop(site.inbox, name, jpeg(product, 80_000 + k * 10 + i, ledger[name][1]))
            time.sleep(0.3)  # the line's gap between the last part of one product and the next switch
        wait_for(lambda: len(_rows(site)) >= 100, 120, "100 verdicts", proc, site)
    finally:
        assert stop(proc) == 0
    capsys.readouterr()
    rows = _rows(site)
    _check_rows(rows, ledger, three)
    assert all(r["verdict"] == "defect" for r in rows if ledger[r["name"]][1])
    # latency: from the switch to the first verdict of its burst recorded (the part's judging and commit included)
    first = {}
    for r in rows:
        k = int(r["name"][1:3])
        at = datetime.fromisoformat(r["inspected_at"]).replace(tzinfo=timezone.utc).timestamp()
        first[k] = min(first.get(k, at), at)
    latency = sorted(first[k] - switches[k][1] for k in range(20))
    command = sorted(d for _, _, d in switches)
    print(f"\nrecipe switches: set command {command[10] * 1000:.1f} ms median, {command[-1] * 1000:.1f} ms max; "
          f"switch -> first verdict of the new product recorded {latency[10] * 1000:.0f} ms median, "
          f"{latency[-1] * 1000:.0f} ms max")


def test_parts_that_arrived_before_a_switch_keep_their_recipe(tmp_path: Path, three: Path) -> None:
    """A part judged after a switch is judged with the recipe in force when it arrived, not the current one."""
    from inspector.config import Config, ModelsConfig, WatchConfig

    models = copy_models(three, tmp_path / "models")
    cfg = Config(models=ModelsConfig(dir=models), watch=WatchConfig(product_from="recipe"))
    chooser = products.Products(cfg, tmp_path)
    t1 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
    t2 = datetime(2026, 12, 1, 8, 0, 1, tzinfo=timezone.utc)
    assert chooser.choose("/in/x.jpg", t1).inspector is None  # no recipe set yet: unknown_product
    products.set_recipe(models, "cap", at=t1)
    products.set_recipe(models, "ring", at=t2)
    before = chooser.choose("/in/a.jpg", datetime(2026, 12, 1, 8, 0, 0, 999_999, tzinfo=timezone.utc))
    after = chooser.choose("/in/b.jpg", t2)
    assert (before.product, after.product) == ("cap", "ring")
    assert before.inspector is chooser._active["cap"].get() and after.inspector is chooser._active["ring"].get()
    assert before.inspector.inspect_bytes(jpeg("cap", 1), "a.jpg").verdict == "ok"


def test_a_live_retrain_or_rollback_of_one_product_leaves_the_others_alone(tmp_path: Path, three: Path) -> None:
    models = copy_models(three, tmp_path / "models")
    site = make_site(tmp_path / "site", models, product_from="folder", recursive=True)
    for product in PRODUCTS:
        (site.inbox / product).mkdir()
    ledger: dict[str, tuple[str, str | None]] = {}
    ring_before = alone(models, "ring")
    proc = start(site)
    try:
        wait_started(site, proc)

        def burst(tag: str, n: int) -> None:
            for i in range(n):
                for product in ("cap", "ring"):
                    name = f"{tag}-{product}-{i}.jpg"
                    ledger[name] = (product, None)
                    atomic_drop(site.inbox / product, name, jpeg(product, 60_000 + len(ledger)))

        burst("a", 10)
        wait_for(lambda: len(_rows(site)) >= 20, 60, "20 verdicts", proc, site)
        # retrain cap live (a new version from other good parts), then roll it back, with parts arriving
        train(site.config, good_folder(tmp_path, "cap", n=12, seed=7), "cap", "--note", "live")
        assert profiles.active_version(models / "cap") == "v2"
        burst("b", 10)
        wait_for(lambda: len(_rows(site)) >= 40, 60, "40 verdicts", proc, site)
        assert cli.main(["profiles", "rollback", "--product", "cap", "--config", str(site.config)]) == 0
        burst("c", 10)
        wait_for(lambda: len(_rows(site)) >= 60, 60, "60 verdicts", proc, site)
    finally:
        assert stop(proc) == 0
    rows = {r["name"]: r for r in _rows(site)}
    for name, r in rows.items():
        assert r["product"] == ledger[name][0]
        if ledger[name][0] == "ring":  # never touched: same version, same verdict and score as ring alone
            single = ring_before.inspect_bytes(Path(r["archived_path"]).read_bytes(), name)
            assert r["profile_version"] == "v1" and r["verdict"] == single.verdict
            assert r["score"] == pytest.approx(single.score, rel=1e-6, abs=1e-9)
    cap = {tag: {r["profile_version"] for n, r in rows.items() if n.startswith(f"{tag}-cap")} for tag in "abc"}
    assert cap == {"a": {"v1"}, "b": {"v2"}, "c": {"v1"}}
    assert profiles.active_version(models / "ring") == "v1" and profiles.versions(models / "ring") == ["v1"]
    log = site.log.read_text()
    assert "profile of product cap switched: v1 -> v2" in log and "product ring" not in log.replace("product ring profile", "")


# ------------------------------------------------------------------------------------------ migration


def test_an_install_from_before_products_keeps_working(tmp_path: Path, models: Path) -> None:
    """Today's layout (models/ACTIVE, models/v1, a database at 0008 with rows): nothing moved, the rows and new
    parts are the default product, and `--product default` names the same profiles."""
    from alembic import command

    from inspector.store import Store, alembic_config

    old = copy_models(models, tmp_path / "models")
    before = sorted(str(p.relative_to(old)) for p in old.rglob("*"))
    site = make_site(tmp_path / "site", old)
    url = f"sqlite:///{site.db}"
    with Store(url, migrate=False) as s, s.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0008")
    con = sqlite3.connect(site.db)
    con.execute("INSERT INTO inspections (sha256, name, source_path, received_at, inspected_at, verdict, score, "
                "threshold, profile_version, station, line, camera) VALUES ('" + "b" * 64 + "', 'old.jpg', "
                "'/in/old.jpg', '2026-11-01 08:00:00', '2026-11-01 08:00:01', 'ok', 0.1, 1.0, 'v1', 's', 'l', 'c')")
    con.commit()
    con.close()
    from watchkit import part_jpeg

    (site.inbox / "new.jpg").write_bytes(part_jpeg(123))
    done = run_once(site)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["name"]: r for r in _rows(site)}
    assert rows["old.jpg"]["product"] == "default" and rows["new.jpg"]["product"] == "default"
    assert rows["new.jpg"]["profile_version"] == "v1" and rows["new.jpg"]["verdict"] == "ok"
    assert sorted(str(p.relative_to(old)) for p in old.rglob("*")) == before
    assert cli.main(["profiles", "activate", "v2", "--product", "default", "--config", str(site.config)]) == 0
    assert profiles.active_version(old) == "v2"


# ------------------------------------------------------------------------------------------ reads by product


def test_list_stats_export_and_show_by_product(tmp_path: Path, three: Path, capsys: pytest.CaptureFixture) -> None:
    site = make_site(tmp_path / "site", three, product_from="folder", recursive=True)
    for product, n in (("cap", 3), ("ring", 2)):
        (site.inbox / product).mkdir()
        for i in range(n):
            (site.inbox / product / f"{product}{i}.jpg").write_bytes(jpeg(product, 300 + i, "spot" if i == 0 else None))
    assert run_once(site).returncode == 0
    cfg = str(site.config)
    capsys.readouterr()
    assert cli.main(["list", "--product", "cap", "--json", "--config", cfg]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(r["name"] for r in listed) == ["cap0.jpg", "cap1.jpg", "cap2.jpg"]
    assert {r["product"] for r in listed} == {"cap"}
    assert cli.main(["list", "--config", cfg]) == 0
    assert "cap/v1" in capsys.readouterr().out
    assert cli.main(["stats", "--product", "ring", "--since", "all", "--json", "--config", cfg]) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    assert (total["parts"], total["defect"]) == (2, 1)
    assert cli.main(["stats", "--product", "bolt", "--since", "all", "--json", "--config", cfg]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["parts"] == 0
    out = tmp_path / "cap.csv"
    assert cli.main(["export", "--csv", str(out), "--product", "cap", "--config", cfg]) == 0
    lines = out.read_text().splitlines()
    header = lines[0].split(",")
    assert len(lines) == 4 and {line.split(",")[header.index("product")] for line in lines[1:]} == {"cap"}
    capsys.readouterr()
    assert cli.main(["show", str(listed[0]["id"]), "--json", "--config", cfg]) == 0
    assert json.loads(capsys.readouterr().out)["product"] == "cap"

    # the review page: a product menu, the queue and the stats of one product
    from inspector import config
    from inspector.web import create_app

    client = create_app(config.load(site.config)).test_client()
    everything = client.get("/?verdict=all&review=all").get_data(as_text=True)
    assert '<select name="product">' in everything and all(f"{p}0.jpg" in everything for p in ("cap", "ring"))
    caps = client.get("/?verdict=all&review=all&product=cap").get_data(as_text=True)
    assert "cap0.jpg" in caps and "ring0.jpg" not in caps and "cap · test-station" in caps
    assert '<input type="hidden" name="product" value="cap">' in caps  # a decision comes back to the same filter
    ring = client.get("/stats?since=all&product=ring").get_data(as_text=True)
    whole = client.get("/stats?since=all").get_data(as_text=True)
    assert "product=ring" in ring and "product=ring" not in whole  # the plots of that product
    assert client.get("/stats/scores.png?since=all&product=ring").mimetype == "image/png"
    from inspector.store import Store
    from inspector.web import data

    with Store(f"sqlite:///{site.db}") as store:
        assert data.stats_data(store, "all", product="ring", parts=("counts",)).counts["defect"] == 1
        assert data.stats_data(store, "all", product="cap", parts=("counts",)).counts["ok"] + \
            data.stats_data(store, "all", product="cap", parts=("counts",)).counts["defect"] == 3


def test_train_profiles_and_recipe_commands_by_product(tmp_path: Path, three: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    models = copy_models(three, tmp_path / "models")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models]\ndir = "{models}"\n')
    c = str(cfg)
    assert cli.main(["profiles", "list", "--product", "cap", "--json", "--config", c]) == 0
    assert [r["version"] for r in json.loads(capsys.readouterr().out)] == ["v1"]
    assert cli.main(["profiles", "list", "--config", c]) == 0  # the default product has none here
    assert "products: cap, flange, ring (use --product NAME)" in capsys.readouterr().out
    assert cli.main(["profiles", "activate", "v2", "--product", "cap", "--config", c]) == 4
    assert cli.main(["train", str(tmp_path), "--product", "v1", "--config", c]) == 2
    assert "is not a product name" in capsys.readouterr().err
    assert cli.main(["recipe", "set", "bolt", "--config", c]) == 4
    assert cli.main(["recipe", "set", "../x", "--config", c]) == 2
    capsys.readouterr()
    assert cli.main(["recipe", "set", "ring", "--config", c]) == 0
    assert "recipe: ring" in capsys.readouterr().out
    assert cli.main(["recipe", "show", "--json", "--config", c]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["recipe"] == "ring"
    assert shown["products"] == [{"product": p, "active": "v1"} for p in ("cap", "flange", "ring")]
    for name in ("train", "profiles", "retrain", "score", "list", "stats", "export", "recipe"):
        with pytest.raises(SystemExit):
            cli.main([name, "--help"])
        assert "--product" in capsys.readouterr().out or name == "recipe"
    assert os.path.exists(models / products.RECIPE)


def test_the_recipe_switched_over_mqtt(tmp_path: Path, three: Path) -> None:
    """A PLC publishes the product on <topic>/recipe/set; the watcher confirms it on <topic>/recipe (retained), judges
    the next parts with it, and every verdict message names the product."""
    import uuid

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from test_mqtt import BROKER, Subscriber, clear_retained, reachable

    if not reachable(*BROKER):
        pytest.skip("no MQTT broker at 127.0.0.1:1883 (Debian package mosquitto)")
    models = copy_models(three, tmp_path / "models")
    line = f"test-{uuid.uuid4().hex[:10]}"
    site = make_site(tmp_path / "site", models, product_from="recipe")
    text = site.config.read_text().replace('line = "L1"', f'line = "{line}"')
    site.config.write_text(text + f'\n[mqtt]\nurl = "mqtt://{BROKER[0]}:{BROKER[1]}"\nheartbeat_s = 0\n')
    prefix = f"inspector/{line}/test-station"
    sub = Subscriber(prefix)
    plc = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    plc.connect(*BROKER, keepalive=5)
    plc.loop_start()
    proc = start(site)
    try:
        wait_started(site, proc)
        wait_for(lambda: sub.payloads("state")[-1:] == ["online"], 20, "the watcher online", proc, site)
        latencies = []
        for k, product in enumerate(("cap", "ring", "bolt", "cap")):
            seen = len(sub.payloads("recipe")) + len(sub.payloads("recipe/set/error"))
            t0 = time.monotonic()
            plc.publish(f"{prefix}/recipe/set", product, qos=1).wait_for_publish(5)
            wait_for(lambda: len(sub.payloads("recipe")) + len(sub.payloads("recipe/set/error")) > seen, 20,
                     f"the answer to recipe/set {product}", proc, site)
            latencies.append(time.monotonic() - t0)
            if product == "bolt":  # no profile: refused, the recipe stays
                assert "has no active profile" in sub.payloads("recipe/set/error")[-1]
                assert products.current_recipe(models).product == "ring"
                continue
            assert sub.payloads("recipe")[-1] == product and products.current_recipe(models).product == product
            atomic_drop(site.inbox, f"m{k}.jpg", jpeg(product, 4_000 + k))
            wait_for(lambda: any(r["name"] == f"m{k}.jpg" for r in _rows(site)), 30, f"m{k}.jpg judged", proc, site)
        wait_for(lambda: len(sub.verdicts()) >= 3, 30, "3 verdict messages", proc, site)
    finally:
        assert stop(proc) == 0
        plc.loop_stop()
        sub.close()
        clear_retained(prefix)
        cleaner = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        cleaner.connect(*BROKER, keepalive=5)
        cleaner.loop_start()
        cleaner.publish(f"{prefix}/recipe", b"", qos=1, retain=True).wait_for_publish(5)
        cleaner.loop_stop()
    rows = {r["name"]: r for r in _rows(site)}
    ledger = {"m0.jpg": ("cap", None), "m1.jpg": ("ring", None), "m3.jpg": ("cap", None)}
    _check_rows(list(rows.values()), ledger, models)  # each judged with its product's profile, as that alone would
    assert {v["name"]: v["product"] for v in sub.verdicts()} == {"m0.jpg": "cap", "m1.jpg": "ring", "m3.jpg": "cap"}
    print(f"\nMQTT recipe/set -> confirmation on <topic>/recipe: {', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")


def test_a_station_of_products_without_any_profile_says_so_before_creating_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    site = make_site(tmp_path / "site", tmp_path / "models", product_from="name", product_regex="^(?P<product>[a-z]+)_")
    assert cli.main(["watch", "--once", "--config", str(site.config)]) == 4
    assert "no product has an active profile" in capsys.readouterr().err
    assert not site.db.exists() and not site.archive.exists()


def test_retrain_and_score_of_one_product(tmp_path: Path, three: Path, capsys: pytest.CaptureFixture) -> None:
    """`retrain --product cap` learns from the reviews of cap's parts only and saves into models/cap; `score
    --product` judges with that product's profile."""
    models = copy_models(three, tmp_path / "models")
    site = make_site(tmp_path / "site", models, product_from="folder", recursive=True)
    for product in ("cap", "ring"):
        (site.inbox / product).mkdir()
        for i in range(3):
            (site.inbox / product / f"{product}{i}.jpg").write_bytes(jpeg(product, 500 + i, "spot" if i == 0 else None))
    assert run_once(site).returncode == 0
    rows = {r["name"]: r for r in _rows(site)}
    cfg = str(site.config)
    for name, decision in (("cap1.jpg", "good"), ("cap0.jpg", "defect"), ("ring1.jpg", "good"), ("ring0.jpg", "defect")):
        assert cli.main(["mark", str(rows[name]["id"]), "--as", decision, "--by", "ana", "--config", cfg]) == 0
    capsys.readouterr()
    code = cli.main(["retrain", "--product", "cap", "--no-activate", "--json", "--config", cfg])
    result = json.loads(capsys.readouterr().out)
    assert code in (0, 7) and result["version"] == "v2" and result["previous"] == "v1"
    assert sorted(p["inspection_id"] for p in result["parts"]) == sorted(rows[n]["id"] for n in ("cap0.jpg", "cap1.jpg"))
    assert result["sources"]["false_alarm"] == 1
    assert profiles.versions(models / "cap") == ["v1", "v2"] and profiles.versions(models / "ring") == ["v1"]
    assert profiles.read_meta(models / "cap", "v2")["product"] == "cap" and not profiles.versions(models)
    ring_part = site.archive.rglob("ring2.jpg").__next__()
    assert cli.main(["score", str(ring_part), "--product", "ring", "--json", "--config", cfg]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "ok"
    assert cli.main(["score", str(ring_part), "--product", "cap", "--json", "--config", cfg]) == 1  # the wrong one
    assert json.loads(capsys.readouterr().out)["verdict"] == "defect"


def test_drift_is_replayed_per_product_against_its_own_baselines(tmp_path: Path, three: Path) -> None:
    """Two products judged by their own v1 on one station: one monitor each (station/product), each started from
    its own profile's baseline; a much darker lamp raises the exposure alarm of the product that saw it only."""
    from inspector import conditions, drift

    models = copy_models(three, tmp_path / "models")
    rows = []
    for i in range(60):
        for product in ("cap", "ring"):
            rows.append({"id": len(rows) + 1, "station": "s1", "product": product, "profile_version": "v1",
                         "verdict": "ok", "reason": None, "exposure": 0.6 if product == "cap" and i >= 20 else 1.0,
                         "score": None, "inspected_at": None})
    rows.append({"id": 999, "station": "s1", "product": "", "profile_version": None, "verdict": "rejected",
                 "reason": "unknown_product", "exposure": None, "score": None, "inspected_at": None})
    replayed = conditions.replay_rows(rows, models)
    assert set(replayed) == {"s1/cap", "s1/ring"}
    for product in ("cap", "ring"):
        baseline = drift.Baseline.from_meta(profiles.read_meta(models / product, "v1"))
        assert replayed[f"s1/{product}"].monitor is not None and replayed[f"s1/{product}"].monitor.baseline == baseline
    assert {a["station"] for a in conditions.active_alarms(replayed)} == {"s1/cap"}


def test_the_watchers_drift_and_lighting_lines_name_the_product(tmp_path: Path, three: Path) -> None:
    """The watcher's monitor per product (fed rows as the committer records them): a darker lamp on cap parts
    raises cap's alarm, named so; ring's parts, judged meanwhile, raise none."""
    lines: list[tuple[str, str, dict]] = []
    monitor = products.ProductConditions(three, lambda event, level, text, **f: lines.append((event, text, f)))
    for i in range(40):
        for product in ("cap", "ring"):
            monitor.observe({"id": 2 * i + (product == "ring"), "product": product, "profile_version": "v1",
                             "verdict": "ok", "reason": None, "score": None, "inspected_at": None,
                             "exposure": 0.6 if product == "cap" and i >= 10 else 1.0})
    monitor.observe({"id": 100, "product": "", "profile_version": None, "verdict": "rejected",
                     "reason": "unknown_product", "score": None, "exposure": None, "inspected_at": None})
    drift = [(text, f) for event, text, f in lines if event == "drift"]
    assert drift and all(text.startswith("product cap: drift alarm") and f["product"] == "cap" for text, f in drift)
