import os

import pytest

from jobfleet.core.naming import safe_file_name, safe_name


@pytest.mark.parametrize("name", ["task-1", "a.b_c", "X" * 100])
def test_safe_names_stay_as_they_are(name):
    assert safe_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "a/b",
        "../../etc/passwd",
        "$(rm -rf ~)",
        'it\'s "quoted"',
        "new\nline",
        "",
        ".",
        "..",
        ".hidden",
        "x" * 500,
        "ümlaut",
        "tab\tand space",
        "a\x00b",
    ],
)
def test_unsafe_names_become_safe_and_short(name):
    result = safe_name(name)
    assert result
    assert len(result) <= 100
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in result)
    assert not result.startswith(".")


def test_different_names_never_collide():
    assert safe_name("a/b") != safe_name("a?b")
    assert safe_name("x" * 500) != safe_name("x" * 501)


def test_file_name_fits_the_file_system(tmp_path):
    name = safe_file_name("/" * 3 + "é" * 400 + "$(touch pwned)", ".stdout.12345")
    assert name.endswith(".stdout.12345")
    assert len(name.encode()) <= 255
    path = tmp_path / name
    path.write_text("ok")
    assert os.listdir(tmp_path) == [name]
    assert not (tmp_path / "pwned").exists()


def test_max_length_must_leave_room_for_hash():
    with pytest.raises(ValueError, match="at least 12"):
        safe_name("abc", max_length=5)
