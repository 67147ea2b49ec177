"""Faults an adversarial review found in the command line (issue 11, items 10, 14 and 16): export targets that
are not regular files, integers and --since values outside what the database and the calendar hold, and control
characters in file names and notes reaching terminals and text logs. Real SQLite files, real processes."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from inspector import cli
from inspector.store import Store
from watchkit import REPO, Site, make_site, part_jpeg, run_once

BIG = "99999999999999999999"  # 20 digits: more than a 64-bit database integer holds
FORGED = "x.jpg\n2025-03-10T13:10:00.000+00:00 #7 ok       forged.jpg"  # a name that forges a verdict line
NAMES = ["good.jpg", "Prüfteil_ä.jpg", FORGED, "\x1b[2J\x1b[31mred.jpg", "cod\u202egpj.exe", "empty.jpg"]


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, text: str) -> bool:
    return code == 1 and err.startswith("inspector: error: ") and text in err and err.count("\n") == 1


def raw_controls(text: str) -> list[str]:
    """The control, line-separator and bidi characters in text (a newline ending a line excepted)."""
    return [c for c in text.replace("\n", "") if ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f or c in "\u2028\u202e"]


@pytest.fixture
def site(tmp_path: Path, models: Path) -> Site:
    """A site whose SQLite database holds one row per name in NAMES (the last one rejected), recorded an hour ago."""
    site = make_site(tmp_path / "site", models)
    at = datetime.now(timezone.utc) - timedelta(hours=1)
    rows = []
    for i, name in enumerate(NAMES):
        judged = name != "empty.jpg"
        rows.append({"sha256": f"{i:064x}", "name": name, "source_path": f"/in/{name}", "received_at": at,
                     "inspected_at": at + timedelta(seconds=i), "verdict": "defect" if judged else "rejected",
                     "reason": None if judged else "empty", "detail": None if judged else f"{name}: 0 bytes",
                     "score": 2.0 if judged else None, "threshold": 1.0 if judged else None,
                     "profile_version": "v1", "station": "s", "line": "l", "camera": "c"})
    with Store(f"sqlite:///{site.db}") as store:
        store.record(rows)
    return site


def ids(site: Site) -> dict[str, int]:
    with Store(f"sqlite:///{site.db}") as store:
        return {r["name"]: r["id"] for r in store.list(limit=None)}


# ---------------------------------------------------------------------------------------------- item 10: export


def test_export_writes_into_dev_null_without_force_and_leaves_it_a_device(site: Site,
                                                                          capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys, "export", "--csv", "/dev/null", "--config", str(site.config))
    assert code == 0 and out == "" and "wrote 6 rows to /dev/null" in err, err
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_export_force_writes_into_a_fifo_and_keeps_it(site: Site, capsys: pytest.CaptureFixture,
                                                      tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader waiting, so the export's open does not block
    try:
        code, _, err = run(capsys, "export", "--force", "--csv", str(fifo), "--config", str(site.config))
        received = b""
        while chunk := os.read(reader, 65536):
            received += chunk
    finally:
        os.close(reader)
    assert code == 0, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # never replaced by a regular file
    lines = received.decode("utf-8").splitlines()
    assert lines[0].startswith("id,name,verdict") and len(received) > 200


def test_export_to_dev_stdout_writes_the_csv_to_standard_output(site: Site) -> None:
    done = subprocess.run([sys.executable, "-m", "inspector", "export", "--csv", "/dev/stdout", "--config",
                           str(site.config)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("id,name,verdict") and "wrote" not in done.stdout
    assert "wrote 6 rows to /dev/stdout" in done.stderr


def test_export_force_never_replaces_a_symbolic_link(site: Site, capsys: pytest.CaptureFixture,
                                                     tmp_path: Path) -> None:
    real = tmp_path / "real.csv"
    real.write_text("keep me\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "nowhere.csv")
    for path in (link, dangling):
        code, _, err = run(capsys, "export", "--force", "--csv", str(path), "--config", str(site.config))
        assert one_line_error(code, err, "is a symbolic link"), err
        assert path.is_symlink()
    assert real.read_text() == "keep me\n" and not (tmp_path / "nowhere.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.csv", "link.csv", "real.csv", "site"]


def test_export_refuses_a_socket(site: Site, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = tmp_path / "sock.csv"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
        code, _, err = run(capsys, "export", "--force", "--csv", str(path), "--config", str(site.config))
    finally:
        sock.close()
    assert one_line_error(code, err, "is not a regular file"), err
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


# ---------------------------------------------------------------------------------------------- item 14: numbers


def test_ids_and_limits_beyond_a_database_integer_are_answered_in_one_line(site: Site,
                                                                           capsys: pytest.CaptureFixture) -> None:
    cfg = str(site.config)
    for argv in (("show", BIG), ("show", "-" + BIG), ("mark", BIG, "--as", "good", "--by", "ana")):
        code, _, err = run(capsys, *argv, "--config", cfg)
        assert one_line_error(code, err, f"no inspection #{argv[1]}"), (argv, err)
    code, out, err = run(capsys, "list", "--limit", BIG, "--config", cfg)
    assert code == 0 and len(out.splitlines()) == len(NAMES), err


@pytest.mark.parametrize("since", ["99999999999d", "999999999h", "9" * 400 + "w", "0001-01-01"])
def test_since_before_the_calendar_means_every_inspection(site: Site, capsys: pytest.CaptureFixture,
                                                          since: str) -> None:
    cfg = str(site.config)
    code, out, err = run(capsys, "list", "--since", since, "--config", cfg)
    assert code == 0 and len(out.splitlines()) == len(NAMES), err
    code, out, err = run(capsys, "stats", "--since", since, "--json", "--config", cfg)
    assert code == 0 and json.loads(out)["total"]["parts"] == len(NAMES), err
    code, out, err = run(capsys, "export", "--csv", "-", "--since", since, "--config", cfg)
    assert code == 0 and len(list(csv.reader(io.StringIO(out)))) == 1 + len(NAMES), err


def test_since_after_the_calendar_matches_nothing(site: Site, capsys: pytest.CaptureFixture) -> None:
    cfg = str(site.config)
    code, out, err = run(capsys, "list", "--since", "9999-12-31T23:59:59-05:00", "--config", cfg)
    assert code == 0 and out == "" and "no inspections match" in err
    code, out, err = run(capsys, "stats", "--since", "9999-12-31T23:59:59-05:00", "--empty", "--config", cfg)
    assert code == 0 and out == "" and err.startswith("no inspections since 9999-12-")


def test_stats_empty_periods_over_decades_is_one_line(site: Site, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys, "stats", "--since", "2010-01-01", "--empty", "--config", str(site.config))
    assert one_line_error(code, err, "more than 100,000 periods"), err[-300:]
    assert out == ""
    code, out, err = run(capsys, "stats", "--since", "2010-01-01", "--empty", "--by", "day", "--json",
                         "--config", str(site.config))
    assert code == 0 and len(json.loads(out)["periods"]) > 5000


def test_segment_max_side_too_small_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "part.jpg"
    image.write_bytes(part_jpeg(5))
    code, _, err = run(capsys, "segment", str(image), "--max-side", "0", "--out", str(tmp_path / "p.png"))
    assert one_line_error(code, err, "--max-side must be at least 32"), err


def test_segment_to_a_name_without_an_image_writer_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Found by an adversarial test: OpenCV raised for `--out p.txt` (and a name without extension, or a folder) and
    the user saw a traceback."""
    image = tmp_path / "part.jpg"
    image.write_bytes(part_jpeg(5))
    (tmp_path / "folder.png").mkdir()
    for out, text in (("p.txt", "use a .png or .jpg name"), ("noext", "use a .png or .jpg name"),
                      ("folder.png", "it is a folder")):
        code, _, err = run(capsys, "segment", str(image), "--k", "2", "--out", str(tmp_path / out))
        assert one_line_error(code, err, text), err
    assert not (tmp_path / "p.txt").exists()


def test_eval_report_to_a_file_fails_at_once_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Found by an adversarial test: `eval --report` naming an existing file ran the whole evaluation, then ended in
    a traceback with the figures lost; the folder is checked first (here the dataset does not even exist)."""
    taken = tmp_path / "config.toml"
    taken.write_text("")
    code, _, err = run(capsys, "eval", str(tmp_path / "no-such-set"), "--report", str(taken))
    assert one_line_error(code, err, "is a file, not a folder"), err
    assert taken.read_text() == ""


def database_error(code: int, err: str, text: str) -> bool:
    return code == 6 and err.startswith("inspector: error: ") and text in err and err.count("\n") == 1


def _revision(url: str) -> str | None:
    with Store(url, migrate=False) as store:
        return store.revision()


def _config_for(tmp_path: Path, url: str) -> str:
    cfg = tmp_path / "read.toml"
    cfg.write_text(f'[database]\nurl = "{url}"\n')
    return str(cfg)


def test_reading_commands_and_the_review_page_never_migrate_an_older_database(site: Site, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    """Found by an adversarial test: `list` on a database one revision behind ran the migration (0011 rewrites the
    tables under an exclusive lock) while stations were recording. Reading and reviews say what to do instead, and
    leave the database as it is; `inspector db upgrade` migrates it."""
    from alembic import command

    from inspector.store import HEAD, alembic_config
    from inspector.web import create_app

    url = f"sqlite:///{site.db}"
    with Store(url) as store, store.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0010")
    for argv in (["list"], ["stats"], ["show", "1"], ["export", "--csv", "/dev/null"], ["mark", "1", "--as", "defect"]):
        code, out, err = run(capsys, *argv, "--config", str(site.config))
        assert database_error(code, err, "is at schema revision 0010, this inspector reads"), (argv, err)
        assert "inspector db upgrade" in err and out == ""
    from inspector import config
    from inspector.store import DatabaseError

    with pytest.raises(DatabaseError, match="schema revision 0010"):
        create_app(config.load(site.config))
    assert _revision(url) == "0010"
    assert cli.main(["db", "upgrade", "--config", str(site.config)]) == 0 and _revision(url) == HEAD
    code, out, _ = run(capsys, "list", "--config", str(site.config))
    assert code == 0 and out.count("\n") >= len(NAMES)
    with Store(url) as store, store.engine.begin() as conn:  # a newer inspector's database: said so
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    code, _, err = run(capsys, "list", "--config", str(site.config))
    assert database_error(code, err, "written by a newer inspector"), err


def test_the_review_page_never_creates_a_database(tmp_path: Path) -> None:
    """Found by an adversarial test: `serve` started from the wrong folder created ./inspector.db and showed an
    empty queue, as if nothing were left to review."""
    from inspector import config
    from inspector.store import DatabaseError
    from inspector.web import create_app

    missing = tmp_path / "nowhere" / "inspector.db"
    cfg = config.load(Path(_config_for(tmp_path, f"sqlite:///{missing}")))
    with pytest.raises(DatabaseError, match="no database at .*nothing has been recorded there"):
        create_app(cfg)
    assert not missing.exists() and not missing.parent.exists()


def test_reading_an_empty_postgres_database_creates_no_schema(postgres_database, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    """Found by an adversarial test: `list` on a fresh PostgreSQL database created the whole schema."""
    url = postgres_database()
    code, _, err = run(capsys, "list", "--config", _config_for(tmp_path, url))
    assert database_error(code, err, "holds no inspections (no inspector schema)"), err
    assert _revision(url) is None


# ---------------------------------------------------------------------------------------------- item 16: escapes


def test_escape_controls_keeps_printable_text_and_escapes_the_rest() -> None:
    from inspector.text import escape_controls

    assert escape_controls("Prüfteil_ä.jpg 日本 “ok” – \\x") == "Prüfteil_ä.jpg 日本 “ok” – \\x"
    assert escape_controls("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert escape_controls("\x1b[31m\x00\x7f\x85\x9b") == "\\x1b[31m\\x00\\x7f\\x85\\x9b"
    assert escape_controls("cod\u202egpj.exe \u2066\u2028\u200f") == "cod\\u202egpj.exe \\u2066\\u2028\\u200f"
    assert escape_controls("bad\udcff") == "bad\\udcff"
    once = escape_controls(FORGED + "\x1b")
    assert escape_controls(once) == once and "\n" not in once


def test_list_show_and_mark_print_control_characters_escaped(site: Site, capsys: pytest.CaptureFixture) -> None:
    cfg = str(site.config)
    by_name = ids(site)
    code, out, _ = run(capsys, "list", "--config", cfg)
    assert code == 0 and len(out.splitlines()) == len(NAMES) and not raw_controls(out), out
    assert "Prüfteil_ä.jpg" in out and "x.jpg\\n2025-03-10T13:10:00.000+00:00 #7 ok" in out
    assert "\\x1b[2J\\x1b[31mred.jpg" in out and "cod\\u202egpj.exe" in out

    forged = by_name[FORGED]
    # a reviewer name with control characters is refused, as on the review page (since 2026-12-06) ...
    code, _, err = run(capsys, "mark", str(forged), "--as", "good", "--by", "ana\x1b]0;owned\x07", "--config", cfg)
    assert one_line_error(code, err, "--by must be 1 to 64 printable characters") and not raw_controls(err), err
    code, out, _ = run(capsys, "mark", str(forged), "--as", "good", "--by", "ana",
                       "--note", "glare\nDRIFT ALARM at station s", "--config", cfg)
    assert code == 0 and len(out.splitlines()) == 2 and not raw_controls(out), out
    assert "glare\\nDRIFT ALARM" in out
    # ... and one recorded before, or by another program, is printed escaped
    with Store(f"sqlite:///{site.db}") as store:
        store.add_review(forged, "defect", "ana\x1b]0;owned\x07", note="x")
    code, out, _ = run(capsys, "show", str(forged), "--config", cfg)
    assert code == 0 and not raw_controls(out), out
    assert "glare\\nDRIFT ALARM" in out and sum(line.startswith("name ") for line in out.splitlines()) == 1
    assert "ana\\x1b]0;owned\\x07" in out
    code, out, _ = run(capsys, "show", str(by_name["Prüfteil_ä.jpg"]), "--config", cfg)
    assert "Prüfteil_ä.jpg" in out

    code, _, err = run(capsys, "mark", str(by_name["empty.jpg"]), "--as", "good", "--by", "ana", "--config", cfg)
    assert one_line_error(code, err, "was rejected"), err  # the message names the part


def test_score_prints_a_control_character_name_escaped(models: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[models]\ndir = "{models}"\n')
    part = tmp_path / "a\nb\x1b[1m.jpg"
    part.write_bytes(part_jpeg(77))
    code, out, _ = run(capsys, "score", str(part), "--exit-zero", "--config", str(cfg))
    assert code == 0 and len(out.splitlines()) == 1 and len(out.split("\t")) == 5, out  # tabs separate fields
    assert not raw_controls(out.replace("\t", " ")) and out.startswith(str(tmp_path) + "/a\\nb\\x1b[1m.jpg\tok"), out


def test_watcher_text_log_escapes_names_and_keeps_one_line_per_event(tmp_path: Path, models: Path) -> None:
    site = make_site(tmp_path / "site", models)
    names = ["Prüfteil_ä.jpg", FORGED, "\x1b[2J\x1b[31mred.jpg"]
    for i, name in enumerate(names):
        (site.inbox / name).write_bytes(part_jpeg(40_000 + i))
    done = run_once(site)
    assert done.returncode == 0, done.stderr
    log = done.stderr
    assert not raw_controls(log), log
    lines = log.splitlines()
    assert all(line[:4].isdigit() and line[4] == "-" for line in lines), log  # every line starts with its time
    verdicts = [line for line in lines if " #" in line and (" ok " in line or " defect " in line)]
    assert len(verdicts) == 3 and not any("forged.jpg" in v and "x.jpg" not in v for v in verdicts), log
    assert any("Prüfteil_ä.jpg" in v for v in verdicts) and any("\\x1b[2J\\x1b[31mred.jpg" in v for v in verdicts)
    assert len(site.rows()) == 3 and {r["name"] for r in site.rows()} == set(names)  # stored as they are
