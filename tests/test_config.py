"""Configuration: strict loading, path resolution, and config.toml kept equal to the code defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from inspector import config
from inspector.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_config_toml_lists_every_default() -> None:
    """config.toml at the repo root holds exactly the defaults of config.py, key for key."""
    loaded = config.load(REPO / "config.toml")
    defaults = config.from_dict({}, REPO)
    for name in config.SECTIONS:
        assert getattr(loaded, name) == getattr(defaults, name), name
    import tomllib

    raw = tomllib.loads((REPO / "config.toml").read_text())
    for name, cls in config.SECTIONS.items():
        assert set(raw[name]) == {f.name for f in dataclasses.fields(cls)}, f"[{name}] lacks or adds keys"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("[profile]\nn_colour = 8\n")
    with pytest.raises(ConfigError, match=r"profile\.n_colour"):
        config.load(tmp_path / "c.toml")


def test_unknown_section_is_named(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("[profiles]\nn_colours = 8\n")
    with pytest.raises(ConfigError, match=r"\[profiles\]"):
        config.load(tmp_path / "c.toml")


@pytest.mark.parametrize("text,key", [
    ('[profile]\nn_colours = "8"\n', "profile.n_colours"),
    ("[profile]\nn_colours = 8.5\n", "profile.n_colours"),
    ("[profile]\nn_colours = true\n", "profile.n_colours"),
    ('[profile]\nneighbours = [5, "x"]\n', r"profile.neighbours\[1\]"),
    ("[input]\npatterns = \"*.jpg\"\n", "input.patterns"),
    ("[models]\ndir = 3\n", "models.dir"),
])
def test_wrong_type_is_named(tmp_path: Path, text: str, key: str) -> None:
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError, match=key):
        config.load(tmp_path / "c.toml")


@pytest.mark.parametrize("value,ok", [("true", True), ("false", False), ('"auto"', "auto"), ('"smooth"', "smooth"),
                                      ('"yes"', None), ("1", None)])
def test_shading_is_true_false_smooth_or_auto(tmp_path: Path, value: str, ok) -> None:
    (tmp_path / "c.toml").write_text(f"[profile]\nshading = {value}\n")
    if ok is None:
        with pytest.raises(ConfigError, match="profile.shading"):
            config.load(tmp_path / "c.toml")
    else:
        assert config.load(tmp_path / "c.toml").profile.shading == ok


def test_out_of_range_value(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("[profile]\nfalse_alarm_rate = 1.5\n")
    with pytest.raises(ConfigError, match="false_alarm_rate"):
        config.load(tmp_path / "c.toml")


@pytest.mark.parametrize("text,key", [
    ("[input]\nmax_pixels = 0\n", "input.max_pixels"),
    ("[input]\nmax_pixels = -1\n", "input.max_pixels"),
    ("[input]\nmax_bytes = 0\n", "input.max_bytes"),
    ("[input]\nmax_bytes = -5\n", "input.max_bytes"),
    ("[input]\npatterns = []\n", "input.patterns"),
    ('[input]\npatterns = ["*.jpg", ""]\n', "input.patterns"),
    ('[watch]\npatterns = [" "]\n', "watch.patterns"),
])
def test_values_that_would_stop_all_judging_are_refused(tmp_path: Path, text: str, key: str) -> None:
    """Each of these made every file rejected or unmatched, silently: refused at load, naming the key."""
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError, match=key):
        config.load(tmp_path / "c.toml")


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "c.toml").write_text('[models]\ndir = "profiles"\n')
    monkeypatch.chdir(tmp_path)
    cfg = config.load("site/c.toml")
    assert cfg.models.dir == (tmp_path / "site" / "profiles").resolve()
    (tmp_path / "site" / "d.toml").write_text("[profile]\nn_colours = 8\n")
    assert config.load("site/d.toml").models.dir == (tmp_path / "site" / "models").resolve()


def test_missing_explicit_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[profile\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(tmp_path / "bad.toml")


def test_no_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = config.load(None)
    assert cfg.profile == config.ProfileParams()
    assert cfg.models.dir == tmp_path / "models"


@pytest.mark.parametrize("token, ok", [(" ", False), ("a", False), ("s3cret-tok", False), (" s3cret-token", False),
                                       ("s3cret-token ", False), ("s3cret-token", True)])
def test_a_blank_or_short_web_token_is_refused_where_the_page_is_served(tmp_path: Path, token: str, ok: bool) -> None:
    """Found by an adversarial test: token = " " met "off loopback needs a token", and ?token=%20 let anyone in.
    Checked when serving (a watcher loading the same file does not stop over a setting only the page uses)."""
    from inspector.web.server import bound_config

    (tmp_path / "c.toml").write_text(f'[web]\ntoken = "{token}"\n')
    cfg = config.load(tmp_path / "c.toml")  # loads: the watcher of this station runs
    if ok:
        assert bound_config(cfg, host="0.0.0.0").web.token == token
    else:
        with pytest.raises(ConfigError, match="token must be at least 12 characters") as err:
            bound_config(cfg)
        assert "\n" not in str(err.value)


def test_a_reviewer_name_too_long_is_named_when_marking(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Found by an adversarial test: a 100-character [review] reviewer failed `mark` with "--by must be 1 to 64
    characters", though no --by was given."""
    from inspector import cli

    (tmp_path / "c.toml").write_text(f'[review]\nreviewer = "{"r" * 65}"\n'
                                     f'[database]\nurl = "sqlite:///{tmp_path / "i.db"}"\n')
    assert cli.main(["db", "upgrade", "--config", str(tmp_path / "c.toml")]) == 0
    capsys.readouterr()
    assert cli.main(["mark", "1", "--as", "good", "--config", str(tmp_path / "c.toml")]) == 1
    err = capsys.readouterr().err
    assert "[review] reviewer must be at most 64 characters" in err and "--by must" not in err
