"""Corpora: registered names that resolve to verified text, or any text file or directory of
`.txt` files given by path.

A registered corpus comes, in this order, from the gzip copy shipped inside the package (Tiny
Shakespeare: training works offline from a plain `pip install`), from a local copy
(`$JAXFORMER_DATA_DIR`, `../shared/data/` beside a checkout, the user cache), or from its public
URL, downloaded once. Every source is checked against the corpus's sha256.
"""

import dataclasses
import gzip
import hashlib
import logging
import os
import tempfile
import urllib.request
import zlib
from pathlib import Path

from jaxformer.errors import UserError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(__file__).resolve().parent  # where packaged corpora live


@dataclasses.dataclass(frozen=True)
class RegisteredCorpus:
    """A public text with a fixed content: where to fetch it and its sha256."""

    name: str
    url: str
    sha256: str
    filename: str = "input.txt"
    packaged: str | None = None  # a gzip copy in jaxformer/data/, tried first


REGISTRY = {
    "tinyshakespeare": RegisteredCorpus(
        name="tinyshakespeare",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"
            "input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        packaged="tinyshakespeare.txt.gz",
    ),
}


@dataclasses.dataclass
class Corpus:
    """A list of documents. A single long text (Tiny Shakespeare) is one document."""

    name: str
    documents: list[str]
    source: Path | None = None
    # Token arrays per tokenizer fingerprint, filled by `jaxformer.data.splits.encode_corpus`.
    cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def is_single_text(self) -> bool:
        return len(self.documents) == 1

    @property
    def text(self) -> str:
        """The text of a single-text corpus."""
        if not self.is_single_text:
            raise ValueError(f"corpus {self.name} has {len(self.documents)} documents, "
                             "not one text")
        return self.documents[0]

    @property
    def num_chars(self) -> int:
        return sum(len(d) for d in self.documents)


def cache_dir() -> Path:
    """Where downloaded corpora live: `$XDG_CACHE_HOME/jaxformer` or `~/.cache/jaxformer`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxformer"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, destination: Path) -> None:
    """Download `url` to `destination` (tests replace this function: they never use the net)."""
    with urllib.request.urlopen(url, timeout=30) as response, open(destination, "wb") as out:
        while block := response.read(1 << 20):
            out.write(block)


def _candidates(spec: RegisteredCorpus) -> list[Path]:
    """Local places the file may already be, in the order they are tried."""
    data_dir = os.environ.get("JAXFORMER_DATA_DIR")
    if data_dir:
        return [Path(data_dir) / spec.filename, Path(data_dir) / spec.name / spec.filename]
    # This project's layout: <repo>/../shared/data/<name>/<file> (the CI copy).
    return [REPO_ROOT.parent / "shared" / "data" / spec.name / spec.filename,
            cache_dir() / spec.name / spec.filename]


def _verify(path: Path, spec: RegisteredCorpus) -> None:
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise UserError(f"{path} has sha256 {actual}, not the expected {spec.sha256} for "
                        f"{spec.name}: delete it (it is re-downloaded from {spec.url}) or replace "
                        "it with a good copy")


def _download(spec: RegisteredCorpus, destination: Path) -> None:
    """Fetch into a temporary file beside `destination`, verify, then rename: a failed or
    corrupt download never leaves a file at `destination`."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{spec.filename}.",
                                    suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            fetch(spec.url, tmp)
        except OSError as e:  # URLError, timeouts, refused connections are all OSErrors
            where = " or ".join(str(p) for p in _candidates(spec))
            raise UserError(
                f"{spec.name} is not in {where} and could not be downloaded from {spec.url} "
                f"({getattr(e, 'reason', e)}): download it yourself and save it as {destination}, "
                f"or set JAXFORMER_DATA_DIR to a directory holding a copy as {spec.filename}"
            ) from None
        actual = sha256_of(tmp)
        if actual != spec.sha256:
            raise UserError(f"the download of {spec.name} from {spec.url} has sha256 {actual}, "
                            f"not the expected {spec.sha256}; nothing was saved. Try again, or "
                            f"save a good copy as {destination}")
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)


def read_packaged(spec: RegisteredCorpus) -> tuple[str, Path] | None:
    """(text, path) of the copy shipped in the package, checked against its sha256; None when
    the corpus is not packaged (or this installation left the file out)."""
    path = PACKAGE_DIR / spec.packaged if spec.packaged else None
    if path is None or not path.is_file():
        return None
    try:
        data = gzip.decompress(path.read_bytes())
        actual = hashlib.sha256(data).hexdigest()
        found = f"has sha256 {actual}"
    except (OSError, EOFError, zlib.error) as e:  # a damaged gzip stream
        actual, found = None, f"cannot be decompressed ({type(e).__name__}: {e})"
    if actual != spec.sha256:
        raise UserError(f"the packaged copy of {spec.name}, {path}, {found}, not the expected "
                        f"{spec.sha256}: this jaxformer installation is damaged; reinstall it")
    return data.decode("utf-8"), path


def registered_path(name: str) -> Path:
    """The verified local file of a registered corpus, downloading it if no copy is found."""
    spec = REGISTRY[name]
    candidates = _candidates(spec)
    for path in candidates:
        if path.is_file():
            _verify(path, spec)
            log.info("corpus %s: using %s", name, path)
            return path
    # Download into JAXFORMER_DATA_DIR when it is set, else into the user cache.
    destination = candidates[-1]
    log.info("corpus %s: downloading %s to %s", name, spec.url, destination)
    _download(spec, destination)
    return destination


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): "
                        "convert it to UTF-8") from None


def load_corpus(name_or_path: str | Path) -> Corpus:
    """A registered corpus name, a text file (one document) or a directory whose `*.txt` files,
    found recursively and sorted by path, are the documents."""
    name = str(name_or_path)
    if name in REGISTRY:
        packaged = read_packaged(REGISTRY[name])
        if packaged is not None:
            log.info("corpus %s: using the packaged copy %s", name, packaged[1])
            return Corpus(name=name, documents=[packaged[0]], source=packaged[1])
        path = registered_path(name)
        return Corpus(name=name, documents=[_read_text(path)], source=path)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return Corpus(name=path.stem, documents=[_read_text(path)], source=path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise UserError(f"corpus directory {path} holds no .txt files: add some (each file "
                            "is one document)")
        return Corpus(name=path.name, documents=[_read_text(p) for p in files], source=path)
    raise UserError(f"corpus {name!r} is neither a registered corpus ({', '.join(REGISTRY)}) nor "
                    "an existing text file or directory: check the name or the path")
