from pathlib import Path

import pytest

from fixtures_live import tree_of
from live.errors import LiveError
from live.show import DEFAULT_SHOW, load_show


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def test_default_show_loads_with_paths_relative_to_itself():
    show = load_show(DEFAULT_SHOW)
    assert show.osc.port == 9000 and show.osc.host == "127.0.0.1"
    assert show.resolve(show.video.model).is_file()
    assert show.resolve(show.audio.model).is_file()


def test_unknown_key_names_file_line_and_allowed_keys(tmp_path):
    path = write(tmp_path, 'name = "x"\n\n[video]\nwidth = 640\nsorce = 0\n')
    with pytest.raises(LiveError) as err:
        load_show(path)
    text = str(err.value)
    assert f"{path}:5" in text and "[video] sorce" in text and "unknown key" in text
    assert "source" in text and "width" in text  # the allowed keys


def test_wrong_type_and_range_are_explained(tmp_path):
    path = write(tmp_path, '[osc]\nport = "nine"\n[video]\nfps = -5\n')
    with pytest.raises(LiveError) as err:
        load_show(path)
    text = str(err.value)
    assert "[osc] port" in text and f"{path}:2" in text
    assert "[video] fps" in text and "greater than 0" in text


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(LiveError, match="not valid TOML"):
        load_show(write(tmp_path, "[video\n"))
    with pytest.raises(LiveError, match="show file not found"):
        load_show(tmp_path / "none.toml")


def test_missing_model_names_the_file(tmp_path):
    path = write(tmp_path, '[video]\nmodel = "nowhere/styles.json"\n')
    with pytest.raises(LiveError) as err:
        tree_of(load_show(path))
    assert "nowhere/styles.json" in str(err.value) and "fix:" in str(err.value)


def test_params_section_is_checked_against_the_tree(tmp_path):
    models = Path(DEFAULT_SHOW).parent.parent / "exported_models"
    base = f'[video]\nmodel = "{models}/styles-procedural.json"\n[audio]\nmodel = "{models}/synth-decoder.json"\n'
    tree = tree_of(load_show(write(tmp_path, base + '[params]\n"/video/blend" = 0.25\n')))
    assert tree.get("/video/blend") == 0.25
    with pytest.raises(LiveError, match="'/video/nope' is not a parameter"):
        tree_of(load_show(write(tmp_path, base + '[params]\n"/video/nope" = 1\n')))
    with pytest.raises(LiveError, match="/video/style_a"):
        tree_of(load_show(write(tmp_path, base + '[params]\n"/video/style_a" = "cubism"\n')))


@pytest.mark.parametrize("name", ["default", "vj", "gallery", "duet"])
def test_shipped_shows_validate(name):
    from live.graph import check

    show = load_show(DEFAULT_SHOW.parent / f"{name}.toml")
    assert check(show) == []


def test_a_show_cannot_point_its_learn_file_outside_its_folder(tmp_path):
    (tmp_path / "shows").mkdir()
    path = tmp_path / "shows" / "show.toml"
    path.write_text('[midi]\nlearn_file = "../../etc/learned.json"\n')
    show = load_show(path)
    with pytest.raises(LiveError, match="outside the show's folder"):
        show.resolve_inside(show.midi.learn_file, "[midi] learn_file")
    assert show.resolve_inside("learned.json", "[midi] learn_file") == (tmp_path / "shows" / "learned.json").resolve()


def test_errors_in_nested_tables_name_the_table_key_and_line(tmp_path):
    path = tmp_path / "show.toml"
    path.write_text('[mod.pulse]\ntarget = "/video/blend"\nshape = "wobbly"\n'
                    '[controls."/video/blend"]\nspeed = 3\n'
                    '[[cues]]\nscene = "a"\n[[cues]]\nscene = "b"\nfade = -1\n'
                    '[scenes.intro]\n"/video/blend" = [1, 2]\n')
    with pytest.raises(LiveError) as caught:
        load_show(path)
    text = str(caught.value)
    assert f"{path}:3: [mod.pulse] shape:" in text and "'sine'" in text
    assert f'{path}:5: [controls."/video/blend"] speed: unknown key (allowed: curve,' in text
    assert f"{path}:10: [[cues]] #2 fade:" in text
    assert f"{path}:12: [scenes.intro] /video/blend: should be one of: number," in text


def test_audio_lead_is_auto_or_milliseconds(tmp_path):
    assert load_show(write(tmp_path, "[audio]\n")).audio.lead == "auto"
    assert load_show(write(tmp_path, "[audio]\nlead = 5.3\n")).audio.lead == 5.3
    for bad in ("0", '"fast"', "500"):
        path = write(tmp_path, f"[audio]\nlead = {bad}\n")
        with pytest.raises(LiveError) as err:
            load_show(path)
        assert f"{path}:2" in str(err.value) and "[audio] lead" in str(err.value) and '"auto"' in str(err.value)
