"""Configuration archive validation and normalisation (pure functions, no database)."""

from __future__ import annotations

import tarfile

import pytest

from backend.archive import Limits, normalize
from backend.errors import Invalid, TooLarge
from tests.backend.archives import MAIN_TF, member, names_in, tar_gz, zip_bytes

LIMITS = Limits(max_files=100, max_unpacked_bytes=1024 * 1024)


def test_tar_gz_is_normalised_and_deterministic() -> None:
    data = tar_gz({"main.tf": MAIN_TF, "modules/a/x.tf": b"# x\n", "./vars.tf": b""})
    first = normalize(data, LIMITS)
    assert names_in(first.data) == {
        "main.tf": MAIN_TF,
        "modules/a/x.tf": b"# x\n",
        "vars.tf": b"",
    }
    assert first.files == 3
    assert normalize(data, LIMITS).sha256 == first.sha256


def test_zip_is_converted_to_tar_gz() -> None:
    out = normalize(zip_bytes({"main.tf": MAIN_TF, "sub/": b""}), LIMITS)
    assert out.data[:2] == b"\x1f\x8b"
    assert names_in(out.data)["main.tf"] == MAIN_TF
    assert names_in(out.data)["sub"] is None


def test_single_top_folder_is_unwrapped() -> None:
    out = normalize(tar_gz({"myconfig/main.tf": MAIN_TF, "myconfig/m/x.tf": b""}), LIMITS)
    assert set(names_in(out.data)) == {"main.tf", "m/x.tf"}


def test_tofu_files_count_as_configuration() -> None:
    assert normalize(tar_gz({"main.tofu": b""}), LIMITS).files == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (tar_gz({"/etc/main.tf": MAIN_TF}), "absolute path"),
        (tar_gz({"main.tf": MAIN_TF, "../evil.tf": b""}), "contains '..'"),
        (tar_gz({"main.tf": MAIN_TF, "a/../../evil": b""}), "contains '..'"),
        (tar_gz(extra=[member("link.tf", tarfile.SYMTYPE, "/etc/passwd")]), "is a link"),
        (tar_gz(extra=[member("hard.tf", tarfile.LNKTYPE, "main.tf")]), "is a link"),
        (tar_gz(extra=[member("dev", tarfile.CHRTYPE)]), "device"),
        (tar_gz(extra=[member("fifo", tarfile.FIFOTYPE)]), "device, fifo"),
        (tar_gz({"README.md": b"no config"}), "no *.tf or *.tofu file"),
        (tar_gz({"modules/x/main.tf": b"", "other/y.tf": b""}), "no *.tf or *.tofu file"),
        (tar_gz({"main.tf": b"", "a\\b.tf": b""}), "backslashes"),
        (zip_bytes({}, symlinks={"main.tf": "/etc/passwd"}), "is a link"),
        (zip_bytes({"main.tf": MAIN_TF, "../x": b""}), "contains '..'"),
        (b"not an archive at all", "tar.gz or zip"),
        (b"\x1f\x8bbroken gzip", "not a valid tar.gz"),
        (b"PK\x03\x04broken zip", "not a valid zip"),
    ],
)
def test_hostile_or_useless_archives_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(Invalid, match=message.replace("*", r"\*").replace("(", r"\(")):
        normalize(data, LIMITS)


def test_duplicate_entries_are_refused() -> None:
    with pytest.raises(Invalid, match="twice"):
        normalize(tar_gz({"main.tf": b"a", "./main.tf": b"b"}), LIMITS)


def test_file_count_cap() -> None:
    files = {f"f{i}.tf": b"" for i in range(101)}
    with pytest.raises(TooLarge, match="more than 100 entries"):
        normalize(tar_gz(files), LIMITS)


def test_unpacked_size_cap_stops_a_compression_bomb() -> None:
    bomb = tar_gz({"main.tf": b"", "zeros": b"\0" * (2 * 1024 * 1024)})
    assert len(bomb) < 20_000
    with pytest.raises(TooLarge, match="unpacks to more than|larger than"):
        normalize(bomb, LIMITS)
    zbomb = zip_bytes({"main.tf": b"", "zeros": b"\0" * (2 * 1024 * 1024)})
    with pytest.raises(TooLarge, match="unpacks to more than"):
        normalize(zbomb, LIMITS)
