"""The corpus registry: the packaged copy, local copies, checksums, downloads (through a replaced
fetch function, never the network) and the offline error; paths to files and directories."""

import gzip
import hashlib
import shutil
import urllib.error

import pytest

from jaxformer.data import corpus as corpus_module
from jaxformer.data import load_corpus
from jaxformer.errors import UserError

EXPECTED_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"  # published
PACKAGED = corpus_module.PACKAGE_DIR / "tinyshakespeare.txt.gz"


@pytest.fixture(scope="module")
def reference_copy(tmp_path_factory):
    """input.txt as a user would download it (here: unpacked from the package's copy)."""
    path = tmp_path_factory.mktemp("reference") / "input.txt"
    path.write_bytes(gzip.decompress(PACKAGED.read_bytes()))
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No packaged copy, no JAXFORMER_DATA_DIR, an empty cache, no shared copy beside the repo."""
    monkeypatch.setattr(corpus_module, "PACKAGE_DIR", tmp_path / "nowhere" / "package")
    monkeypatch.delenv("JAXFORMER_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(corpus_module, "REPO_ROOT", tmp_path / "nowhere" / "repo")
    return tmp_path


def copy_fetch(calls, source):
    def fetch(url, destination):
        calls.append(url)
        shutil.copyfile(source, destination)
    return fetch


def test_packaged_copy_is_the_published_text_and_comes_first(monkeypatch, caplog):
    assert corpus_module.REGISTRY["tinyshakespeare"].sha256 == EXPECTED_SHA256
    assert hashlib.sha256(gzip.decompress(PACKAGED.read_bytes())).hexdigest() == EXPECTED_SHA256
    monkeypatch.setenv("JAXFORMER_DATA_DIR", "/nonexistent")  # not even looked at
    monkeypatch.setattr(corpus_module, "fetch", lambda *a: pytest.fail("must not download"))
    with caplog.at_level("INFO", logger="jaxformer.data.corpus"):
        corpus = load_corpus("tinyshakespeare")
    assert corpus.source == PACKAGED and corpus.is_single_text
    assert len(corpus.text) == 1_115_394 and len(set(corpus.text)) == 65
    assert "packaged copy" in caplog.text


def test_damaged_packaged_copy_is_an_error(tmp_path, monkeypatch):
    package = tmp_path / "package"
    package.mkdir()
    monkeypatch.setattr(corpus_module, "PACKAGE_DIR", package)
    (package / "tinyshakespeare.txt.gz").write_bytes(gzip.compress(b"First Citizen:\n"))
    with pytest.raises(UserError, match="has sha256 .* reinstall"):
        load_corpus("tinyshakespeare")
    (package / "tinyshakespeare.txt.gz").write_bytes(PACKAGED.read_bytes()[:1000])  # truncated
    with pytest.raises(UserError, match="cannot be decompressed"):
        load_corpus("tinyshakespeare")


def test_shared_copy_beside_the_repo_is_used(isolated, monkeypatch, caplog, reference_copy):
    shared = isolated / "nowhere" / "shared" / "data" / "tinyshakespeare" / "input.txt"
    shared.parent.mkdir(parents=True)
    shutil.copyfile(reference_copy, shared)
    monkeypatch.setattr(corpus_module, "fetch", lambda *a: pytest.fail("must not download"))
    with caplog.at_level("INFO", logger="jaxformer.data.corpus"):
        corpus = load_corpus("tinyshakespeare")
    assert corpus.source == shared and len(corpus.text) == 1_115_394
    assert str(shared) in caplog.text


@pytest.mark.parametrize("layout", ["input.txt", "tinyshakespeare/input.txt"])
def test_data_dir_layouts(isolated, monkeypatch, layout, reference_copy):
    data_dir = isolated / "data"
    (data_dir / layout).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(reference_copy, data_dir / layout)
    monkeypatch.setenv("JAXFORMER_DATA_DIR", str(data_dir))
    monkeypatch.setattr(corpus_module, "fetch", lambda *a: pytest.fail("must not download"))
    assert load_corpus("tinyshakespeare").source == data_dir / layout


def test_download_verifies_and_caches(isolated, monkeypatch, reference_copy):
    calls = []
    monkeypatch.setattr(corpus_module, "fetch", copy_fetch(calls, reference_copy))
    corpus = load_corpus("tinyshakespeare")
    expected = isolated / "cache" / "jaxformer" / "tinyshakespeare" / "input.txt"
    assert corpus.source == expected and expected.read_bytes() == reference_copy.read_bytes()
    assert calls == ["https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                     "tinyshakespeare/input.txt"]
    load_corpus("tinyshakespeare")  # now cached: no second download
    assert len(calls) == 1
    assert list(expected.parent.iterdir()) == [expected]  # no temporary file left


def test_download_with_a_file_url(isolated, monkeypatch, reference_copy):
    """The real fetch function, pointed at a file:// URL instead of the network."""
    spec = corpus_module.REGISTRY["tinyshakespeare"]
    monkeypatch.setitem(corpus_module.REGISTRY, "tinyshakespeare",
                        corpus_module.RegisteredCorpus(spec.name, reference_copy.as_uri(),
                                                       spec.sha256))
    assert len(load_corpus("tinyshakespeare").text) == 1_115_394


def test_bad_download_checksum_leaves_nothing(isolated, monkeypatch):
    def fetch(url, destination):
        destination.write_text("not shakespeare")
    monkeypatch.setattr(corpus_module, "fetch", fetch)
    with pytest.raises(UserError, match="sha256.*not the expected 86c4e6aa"):
        load_corpus("tinyshakespeare")
    cache = isolated / "cache" / "jaxformer" / "tinyshakespeare"
    assert not cache.exists() or not any(cache.iterdir())


def test_interrupted_download_leaves_nothing(isolated, monkeypatch):
    def fetch(url, destination):
        destination.write_text("half a fi")
        raise urllib.error.URLError("connection reset")
    monkeypatch.setattr(corpus_module, "fetch", fetch)
    with pytest.raises(UserError):
        load_corpus("tinyshakespeare")
    cache = isolated / "cache" / "jaxformer" / "tinyshakespeare"
    assert not any(cache.iterdir())


def test_offline_error_says_where_to_put_the_file(isolated, monkeypatch):
    def offline(url, destination):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(corpus_module, "fetch", offline)
    with pytest.raises(UserError) as info:
        load_corpus("tinyshakespeare")
    message = str(info.value)
    assert str(isolated / "cache" / "jaxformer" / "tinyshakespeare" / "input.txt") in message
    assert "JAXFORMER_DATA_DIR" in message and "could not be downloaded" in message
    assert "\n" not in message


def test_corrupt_local_copy_is_reported(isolated, monkeypatch):
    data_dir = isolated / "data"
    data_dir.mkdir()
    (data_dir / "input.txt").write_text("First Citizen:\nBefore we proceed")
    monkeypatch.setenv("JAXFORMER_DATA_DIR", str(data_dir))
    with pytest.raises(UserError, match="not the expected"):
        load_corpus("tinyshakespeare")
    assert (data_dir / "input.txt").exists()  # never deleted behind the user's back


def test_paths_to_files_and_directories(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("second")
    (tmp_path / "1.txt").write_text("first")
    (tmp_path / "notes.md").write_text("ignored")
    corpus = load_corpus(tmp_path)
    assert corpus.documents == ["first", "second"] and not corpus.is_single_text
    with pytest.raises(ValueError):
        corpus.text
    single = load_corpus(str(tmp_path / "1.txt"))
    assert single.text == "first"


def test_bad_corpus_names(tmp_path):
    with pytest.raises(UserError, match="neither a registered corpus"):
        load_corpus("tinyshakespear")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .txt files"):
        load_corpus(tmp_path / "empty")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        load_corpus(tmp_path / "latin1.txt")
