"""The one rule for which embedder a command runs with (``facepipe.app.embedder_choice``), on
a machine without the VGGFace2 file (``no_vggface2``) and with the real dlib model."""

from __future__ import annotations

import pytest

from facepipe.app.embedder_choice import choose_embedder, for_speed
from facepipe.config import Settings
from facepipe.errors import WeightsUnavailable

pytestmark = pytest.mark.usefixtures("no_vggface2")


def test_nothing_asked_falls_back_to_dlib_and_says_so() -> None:
    said: list[str] = []
    choice = choose_embedder(Settings.from_env({}), say=said.append)
    assert choice.settings.embedder == "dlib" and choice.embedder.name == "dlib"
    assert "embedder" in choice.settings.model_fields_set  # passed on to the functions' env
    assert said == [
        "facepipe: the vggface2 weights are not available: recognising with the offline dlib "
        "embedder (choose with --embedder or FACEPIPE_EMBEDDER)"
    ]


def test_an_embedder_asked_for_is_not_replaced_and_its_error_names_the_offline_choice() -> None:
    said: list[str] = []
    with pytest.raises(WeightsUnavailable) as info:
        choose_embedder(Settings.from_env({"FACEPIPE_EMBEDDER": "vggface2"}), say=said.append)
    assert (
        "--embedder dlib" in info.value.message and "FACEPIPE_EMBEDDER=dlib" in info.value.message
    )
    assert said == []


def test_the_recorded_embedder_is_used_without_asking() -> None:
    said: list[str] = []
    choice = choose_embedder(
        Settings.from_env({}), "dlib", recorded_by="album 'x'", say=said.append
    )
    assert choice.settings.embedder == "dlib"
    assert said == ["facepipe: using the dlib embedder, which album 'x' was made with"]


def test_a_recorded_embedder_that_cannot_load_is_an_error_not_another_embedder() -> None:
    """A vggface2 gallery cannot be matched with dlib embeddings: no fallback then."""
    with pytest.raises(WeightsUnavailable, match="vggface2 weights are not available"):
        choose_embedder(Settings.from_env({}), "vggface2", say=lambda line: None)


def test_benches_measure_with_random_weights_without_the_real_ones() -> None:
    said: list[str] = []
    settings = for_speed(Settings.from_env({}), say=said.append)
    assert settings.weights == "random:0" and settings.embedder == "vggface2"
    assert len(said) == 1 and "values do not change speed" in said[0]
    asked = Settings.from_env({"FACEPIPE_WEIGHTS": "/nowhere.pt"})
    assert for_speed(asked, say=said.append) is asked  # asked for: its own error later
