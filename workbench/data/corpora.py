"""Text corpora every fresh machine has, split deterministically by file into train/validation/test.

`python-stdlib` (the default) is the running interpreter's own standard library source: our
counterpart of the Linux kernel source Karpathy et al. 2015 trained their character LSTMs on, and
present wherever Python is. `linux` is that kernel source itself, from Debian's `linux-source`
package when it is installed.

Each file goes to one split by a stable hash of its relative path (90/5/5), so the split never
depends on the order a filesystem lists files, on the machine, or on the byte cap. Within a split,
files are ordered by a second hash, so a byte-capped slice (`max_bytes`) samples the whole corpus
rather than its alphabetically first directories. Files that are not UTF-8 are skipped, and listed.

The `linux` corpus leaves out machine-generated data that is not code written by people: the AMD
register maps under `asic_reg/` (a third of the 6.1 tree's bytes) and any file over 600 kB (register
tables, firmware and codepage arrays). Without this, one 1.3 MB `#define regX 0x...` header makes up
half the test split and its random hex addresses dominate the held-out loss.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from workbench.data.tokenizer import DEFAULT_UNKNOWN_TOKEN, CharTokenizer
from workbench.errors import CorpusNotFoundError

__all__ = [
    "CORPORA",
    "DEFAULT_CORPUS",
    "DEFAULT_MIN_COUNT",
    "SPLITS",
    "SPLIT_FRACTIONS",
    "Corpus",
    "cache_dir",
    "load_corpus",
    "split_of",
]

SPLITS: tuple[str, ...] = ("train", "validation", "test")
SPLIT_FRACTIONS: tuple[float, ...] = (0.90, 0.05, 0.05)
DEFAULT_CORPUS = "python-stdlib"
# A character must occur this many times in the training split to get its own token; rarer ones
# (stray accents, CJK in test data) become the unknown token. Keeps the vocabulary near ASCII size.
DEFAULT_MIN_COUNT = 10

# Parts of the stdlib tree that are not the standard library's own source.
_STDLIB_EXCLUDED_DIRS = {"site-packages", "dist-packages", "__pycache__"}
# _sysconfigdata_*.py is generated per build (compiler flags, install paths): not portable text.
_STDLIB_EXCLUDED_PREFIXES = ("_sysconfigdata_",)
_LINUX_SUFFIXES = (".c", ".h")
_LINUX_GENERATED_DIRS = ("/asic_reg/",)  # machine-generated register maps (AMD GPUs)
_LINUX_MAX_FILE_CHARS = 600_000  # above this, kernel files are generated tables, not code
_LINUX_TARBALL_GLOBS = ("linux-source-*.tar.xz", "linux-source-*.tar.bz2")
_CACHE_VERSION = 1


def cache_dir() -> Path:
    """Corpus cache: `$WORKBENCH_CACHE_DIR`, else `$XDG_CACHE_HOME/recurrent-workbench`."""
    explicit = os.environ.get("WORKBENCH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "recurrent-workbench"


def _unit_hash(key: str) -> float:
    """A stable number in [0, 1) from `key` (sha256; unlike hash(), the same on every run)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(relative_path: str) -> str:
    """The split a file belongs to, from a stable hash of its relative POSIX path (90/5/5)."""
    u = _unit_hash("split:" + relative_path)
    edge = 0.0
    for name, fraction in zip(SPLITS, SPLIT_FRACTIONS, strict=True):
        edge += fraction
        if u < edge:
            return name
    return SPLITS[-1]


@dataclass(frozen=True, repr=False)
class Corpus:
    """A corpus as three texts (the files of each split, concatenated) and the files behind them."""

    name: str
    source: str  # where the text came from, for provenance
    train: str
    validation: str
    test: str
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)  # split -> relative paths
    skipped: tuple[str, ...] = ()  # files left out because they are not UTF-8
    max_bytes: int | None = None

    def split(self, name: str) -> str:
        """The text of split `name` ('train', 'validation' or 'test')."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    @property
    def char_counts(self) -> dict[str, int]:
        """Characters per split."""
        return {name: len(self.split(name)) for name in SPLITS}

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of the three texts (first 16 hex digits): the same corpus gives the same value."""
        digest = hashlib.sha256()
        for name in SPLITS:
            digest.update(name.encode())
            digest.update(self.split(name).encode("utf-8"))
        return digest.hexdigest()[:16]

    def build_tokenizer(
        self, min_count: int = DEFAULT_MIN_COUNT, unknown_token: str = DEFAULT_UNKNOWN_TOKEN
    ) -> CharTokenizer:
        """Vocabulary: characters seen at least `min_count` times in the training split, plus an
        explicit unknown token (id 0) for every rarer or unseen character.

        The tokenizer raises on unknown characters unless asked to map them (`unknown="map"`),
        so a typo in a notebook prompt is reported, while training and evaluation map them.
        """
        return CharTokenizer.from_text(self.train, min_count=min_count, unknown_token=unknown_token)

    def __repr__(self) -> str:
        counts = ", ".join(
            f"{name}={len(self.split(name)):,} chars/{len(self.files.get(name, ())):,} files"
            for name in SPLITS
        )
        cap = f", max_bytes={self.max_bytes:,}" if self.max_bytes is not None else ""
        return f"Corpus({self.name!r}, {counts}{cap}, source={self.source!r})"


# --------------------------------------------------------------------------------------- sources
def _decode(relative_path: str, data: bytes, skipped: list[str]) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        skipped.append(relative_path)
        return None


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(root: Path, skipped: list[str]) -> Iterator[tuple[str, str]]:
    """(relative path, text) of every `.py` file under the stdlib directory `root`, sorted."""
    paths = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if _STDLIB_EXCLUDED_DIRS.intersection(relative.parts[:-1]):
            continue
        if relative.name.startswith(_STDLIB_EXCLUDED_PREFIXES) or not path.is_file():
            continue
        paths.append(relative.as_posix())
    for relative in sorted(paths):
        text = _decode(relative, (root / relative).read_bytes(), skipped)
        if text is not None:
            yield relative, text


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.name))


def _find_linux_source() -> Path:
    candidates = [p for pattern in _LINUX_TARBALL_GLOBS for p in Path("/usr/src").glob(pattern)]
    if not candidates:
        raise CorpusNotFoundError(
            "the 'linux' corpus needs the Linux kernel source from Debian's linux-source package, "
            "and no /usr/src/linux-source-*.tar.xz (or .tar.bz2) is installed; run "
            "`apt-get install linux-source` (as root), or pass root= a kernel tarball or source "
            "directory, or use the default corpus 'python-stdlib'"
        )
    return max(candidates, key=_version_key)


def _linux_files(source: Path, skipped: list[str]) -> Iterator[tuple[str, str]]:
    """(relative path, text) of every `.c`/`.h` file of a kernel tarball or directory, sorted."""
    if source.is_dir():
        paths = sorted(
            p.relative_to(source).as_posix()
            for p in source.rglob("*")
            if p.suffix in _LINUX_SUFFIXES and p.is_file()
        )
        for relative in paths:
            text = _decode(relative, (source / relative).read_bytes(), skipped)
            if text is not None:
                yield relative, text
        return
    texts: dict[str, str] = {}
    with tarfile.open(source, mode="r:*") as archive:
        for member in archive:
            if not member.isfile() or not member.name.endswith(_LINUX_SUFFIXES):
                continue
            # Drop the top directory (linux-source-6.1/...), so paths read as in the kernel tree.
            parts = member.name.split("/", 1)
            relative = parts[1] if len(parts) == 2 else parts[0]
            handle = archive.extractfile(member)
            if handle is None:
                continue
            text = _decode(relative, handle.read(), skipped)
            if text is not None:
                texts[relative] = text
    for relative in sorted(texts):
        yield relative, texts[relative]


# --------------------------------------------------------------------------------------- building
def _split_files(
    files: Iterator[tuple[str, str]],
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Group (path, text) pairs by split; order each split by a stable hash of the path."""
    paths: dict[str, list[str]] = {name: [] for name in SPLITS}
    texts: dict[str, list[str]] = {name: [] for name in SPLITS}
    for relative, text in files:
        name = split_of(relative)
        paths[name].append(relative)
        texts[name].append(text if text.endswith("\n") or not text else text + "\n")
    for name in SPLITS:
        order = sorted(range(len(paths[name])), key=lambda i, n=name: _unit_hash("order:" + paths[n][i]))
        paths[name] = [paths[name][i] for i in order]
        texts[name] = [texts[name][i] for i in order]
    return paths, texts


def _cap(texts: list[str], paths: list[str], max_bytes: int) -> tuple[str, tuple[str, ...]]:
    # texts[i] is the text of paths[i]; the result keeps a prefix of both.
    """The first `max_bytes` UTF-8 bytes of the concatenated files, and the files they touch."""
    kept: list[str] = []
    used = 0
    for text in texts:
        if used >= max_bytes:
            break
        data = text.encode("utf-8")
        if used + len(data) > max_bytes:
            # Cut mid-file; drop a partial multi-byte character at the cut.
            text = data[: max_bytes - used].decode("utf-8", errors="ignore")
            data = text.encode("utf-8")
        kept.append(text)
        used += len(data)
    return "".join(kept), tuple(paths[: len(kept)])


def _build(
    name: str,
    source: str,
    paths: dict[str, list[str]],
    texts: dict[str, list[str]],
    skipped: list[str],
    max_bytes: int | None,
) -> Corpus:
    split_texts: dict[str, str] = {}
    split_files: dict[str, tuple[str, ...]] = {}
    for split, fraction in zip(SPLITS, SPLIT_FRACTIONS, strict=True):
        if max_bytes is None:
            split_texts[split] = "".join(texts[split])
            split_files[split] = tuple(paths[split])
        else:
            budget = max(1, int(max_bytes * fraction))
            split_texts[split], split_files[split] = _cap(texts[split], paths[split], budget)
    return Corpus(
        name=name,
        source=source,
        train=split_texts["train"],
        validation=split_texts["validation"],
        test=split_texts["test"],
        files=split_files,
        skipped=tuple(skipped),
        max_bytes=max_bytes,
    )


def _load_stdlib(root: Path | None, max_bytes: int | None) -> Corpus:
    root = Path(root) if root is not None else _stdlib_root()
    if not root.is_dir():
        raise CorpusNotFoundError(f"no Python standard library directory at {root}")
    skipped: list[str] = []
    paths, texts = _split_files(_stdlib_files(root, skipped))
    if not any(paths.values()):
        raise CorpusNotFoundError(f"no .py files under {root}")
    version = ".".join(map(str, sys.version_info[:3]))
    source = f"{sys.implementation.name} {version} standard library at {root}"
    return _build("python-stdlib", source, paths, texts, skipped, max_bytes)


def _load_linux(root: Path | None, max_bytes: int | None) -> Corpus:
    source = Path(root) if root is not None else _find_linux_source()
    if not source.exists():
        raise CorpusNotFoundError(f"no Linux source tarball or directory at {source}")
    if source.is_dir():
        skipped: list[str] = []
        paths, texts = _split_files(_linux_files(source, skipped))
    else:
        paths, texts, skipped = _cached_linux_splits(source)
    paths, texts = _drop_generated_linux_files(paths, texts)
    if not any(paths.values()):
        raise CorpusNotFoundError(f"no .c or .h files in {source}")
    return _build("linux", str(source), paths, texts, skipped, max_bytes)


def is_generated_linux_file(relative_path: str, text: str) -> bool:
    """True for kernel files that are generated data rather than code (see the module docstring)."""
    return any(part in "/" + relative_path for part in _LINUX_GENERATED_DIRS) or len(text) > _LINUX_MAX_FILE_CHARS


def _drop_generated_linux_files(
    paths: dict[str, list[str]], texts: dict[str, list[str]]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    kept_paths: dict[str, list[str]] = {}
    kept_texts: dict[str, list[str]] = {}
    for split in paths:
        pairs = [(p, t) for p, t in zip(paths[split], texts[split], strict=True) if not is_generated_linux_file(p, t)]
        kept_paths[split] = [p for p, _ in pairs]
        kept_texts[split] = [t for _, t in pairs]
    return kept_paths, kept_texts


def _cached_linux_splits(
    tarball: Path,
) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """Split a kernel tarball once (decompressing it takes minutes) and cache per-file texts."""
    stat = tarball.stat()
    key = hashlib.sha256(
        f"{_CACHE_VERSION}:{tarball.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    ).hexdigest()[:16]
    directory = cache_dir() / "corpora" / f"linux-{key}"
    index_path = directory / "index.json"
    if index_path.exists():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        texts = {
            split: json.loads((directory / f"{split}.json").read_text(encoding="utf-8")) for split in SPLITS
        }
        return index["files"], texts, index["skipped"]
    skipped: list[str] = []
    paths, texts = _split_files(_linux_files(tarball, skipped))
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    for split in SPLITS:
        (staging / f"{split}.json").write_text(json.dumps(texts[split]), encoding="utf-8")
    index = {"source": str(tarball), "files": paths, "skipped": skipped}
    (staging / "index.json").write_text(json.dumps(index), encoding="utf-8")
    try:
        os.replace(staging, directory)  # atomic: a half-written cache is never read
    except OSError:  # another process cached it first
        for child in staging.iterdir():
            child.unlink()
        staging.rmdir()
    return paths, texts, skipped


CORPORA = {
    "python-stdlib": "the running CPython's standard library source (.py), excluding site-packages",
    "linux": "Linux kernel C source (.c/.h) from Debian's linux-source package in /usr/src",
}


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, root: str | None, max_bytes: int | None) -> Corpus:
    path = Path(root) if root is not None else None
    if name == "python-stdlib":
        return _load_stdlib(path, max_bytes)
    return _load_linux(path, max_bytes)


def load_corpus(
    name: str = DEFAULT_CORPUS, max_bytes: int | None = None, root: str | Path | None = None
) -> Corpus:
    """Load corpus `name` ('python-stdlib' or 'linux'), split 90/5/5 by file.

    `max_bytes` caps the corpus for a quick run: each split keeps its share (90/5/5) of the bytes,
    from files in their hashed order, so every split stays non-empty. `root` points at another
    source (a stdlib directory; a kernel tarball or source directory). Results are memoised.

    >>> corpus = load_corpus("python-stdlib", max_bytes=20_000)
    >>> sorted(corpus.char_counts) == ["test", "train", "validation"]
    True
    """
    if name not in CORPORA:
        known = ", ".join(f"{key!r} ({what})" for key, what in CORPORA.items())
        raise ValueError(f"unknown corpus {name!r}; known corpora: {known}")
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    return _load_cached(name, str(root) if root is not None else None, max_bytes)
