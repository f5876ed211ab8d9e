"""Settings: env vars, CLI flags and the configuration page's table all come from one model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from facepipe.cli.main import build_parser
from facepipe.config import Settings, env_name, flag_name, settings_markdown
from facepipe.errors import ConfigError
from tests.conftest import ROOT


def test_defaults_and_env_parsing() -> None:
    s = Settings.from_env({})
    assert (s.embedder, s.image_size, s.margin, s.min_face_probability) == (
        "vggface2",
        160,
        0,
        0.95,
    )
    s = Settings.from_env({"FACEPIPE_MARGIN": "20", "FACEPIPE_MATCH_THRESHOLD": "0.9"})
    assert (s.margin, s.match_threshold) == (20, 0.9)


@pytest.mark.parametrize(
    ("env", "threshold"),
    [
        ({}, 1.1),  # vggface2: facenet-pytorch's customary value
        ({"FACEPIPE_EMBEDDER": "casia-webface"}, 1.1),
        ({"FACEPIPE_EMBEDDER": "dlib"}, 0.39),  # calibrated with `facepipe eval`
        ({"FACEPIPE_EMBEDDER": "dlib", "FACEPIPE_MATCH_THRESHOLD": ""}, 0.39),
        ({"FACEPIPE_EMBEDDER": "dlib", "FACEPIPE_MATCH_THRESHOLD": "0.5"}, 0.5),
    ],
)
def test_an_empty_match_threshold_is_the_embedders_default(
    env: dict[str, str], threshold: float
) -> None:
    s = Settings.from_env(env)
    assert s.effective_match_threshold == threshold
    assert (s.match_threshold is None) == (not env.get("FACEPIPE_MATCH_THRESHOLD"))


def test_overrides_beat_env_and_none_is_ignored() -> None:
    s = Settings.from_env({"FACEPIPE_MARGIN": "20"}, margin="10", weights=None)
    assert s.margin == 10
    assert s.weights == ""


def test_invalid_values_name_the_env_var() -> None:
    with pytest.raises(ConfigError, match="FACEPIPE_MIN_FACE_PROBABILITY"):
        Settings.from_env({"FACEPIPE_MIN_FACE_PROBABILITY": "1.5"})
    with pytest.raises(ConfigError, match="FACEPIPE_EMBEDDER"):
        Settings.from_env({"FACEPIPE_EMBEDDER": "resnet9000"})


def test_every_setting_is_a_cli_flag() -> None:
    parser = build_parser()
    for command in ("run", "config"):
        sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        flags = {opt for a in sub._actions for opt in a.option_strings}
        assert {flag_name(n) for n in Settings.model_fields} <= flags


def test_cli_flag_reaches_settings() -> None:
    from facepipe.cli.options import settings_from_args

    args = build_parser().parse_args(["config", "--margin", "12", "--weights", "random:3"])
    s = settings_from_args(args)
    assert (s.margin, s.weights) == (12, "random:3")


def test_the_configuration_page_lists_every_setting() -> None:
    """docs/configuration.md holds the marker that the site's hook replaces with the table
    generated from Settings: the page as built lists every setting, and cannot drift."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert hooks.SETTINGS_MARKER in page
    rendered = hooks.on_page_markdown(page)
    assert hooks.SETTINGS_MARKER not in rendered and settings_markdown() in rendered
    for name in Settings.model_fields:
        assert f"`{env_name(name)}`" in rendered, f"the page does not document {env_name(name)}"


def test_accepted_formats_are_a_setting() -> None:
    assert Settings.from_env({}).accepted_formats == {"JPEG", "PNG", "WEBP"}
    s = Settings.from_env({"FACEPIPE_FORMATS": " jpg, png ,TIF"})
    assert (s.formats, s.accepted_formats) == ("JPEG,PNG,TIFF", {"JPEG", "PNG", "TIFF"})
    with pytest.raises(ConfigError, match=r"FACEPIPE_FORMATS \(--formats\).*SVG"):
        Settings.from_env({"FACEPIPE_FORMATS": "jpeg,svg"})


def test_an_image_size_the_embedder_cannot_take_is_refused() -> None:
    with pytest.raises(ConfigError, match="FACEPIPE_IMAGE_SIZE"):
        Settings.from_env({"FACEPIPE_IMAGE_SIZE": "64"})  # InceptionResnetV1 needs 75


def test_the_data_dir_is_the_users_not_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from facepipe.app.stores import albums_location

    assert Settings.from_env({"FACEPIPE_DATA_DIR": "~/fp"}).data_path == Path("~/fp").expanduser()
    if sys.platform == "linux":
        monkeypatch.setenv("XDG_DATA_HOME", "/srv/data")
        settings = Settings.from_env({})
        assert settings.default_gallery == Path("/srv/data/facepipe/gallery.npz")
        assert albums_location(settings) == "/srv/data/facepipe"  # its albums/ folder
    assert albums_location(Settings.from_env({}, bucket="b")) == "s3://b"
