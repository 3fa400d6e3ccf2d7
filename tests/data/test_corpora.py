"""Corpora: deterministic, disjoint 90/5/5 splits by file; byte caps; linux from a tarball."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from workbench.data.corpora import SPLITS, load_corpus, split_of
from workbench.errors import CorpusNotFoundError


def _fake_stdlib(root: Path, n_files: int = 200) -> Path:
    for i in range(n_files):
        path = root / ("pkg" if i % 3 else "") / f"module_{i:03d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# module {i}\ndef f_{i}(x):\n    return x * {i}\n" * 5, encoding="utf-8")
    (root / "site-packages").mkdir()
    (root / "site-packages" / "third_party.py").write_text("import numpy\n")
    (root / "_sysconfigdata__linux.py").write_text("build_time_vars = {}\n")
    (root / "latin1.py").write_bytes("# caf\xe9\n".encode("latin-1"))
    return root


def test_split_of_is_stable_and_roughly_90_5_5() -> None:
    assert split_of("os.py") == split_of("os.py")
    names = [split_of(f"dir/file_{i}.py") for i in range(4000)]
    fractions = {name: names.count(name) / len(names) for name in SPLITS}
    assert 0.87 < fractions["train"] < 0.93
    assert 0.03 < fractions["validation"] < 0.07 and 0.03 < fractions["test"] < 0.07


def test_splits_are_deterministic_and_disjoint_by_file(tmp_path: Path) -> None:
    root = _fake_stdlib(tmp_path / "lib")
    first = load_corpus("python-stdlib", root=root)
    second = load_corpus("python-stdlib", root=str(root), max_bytes=None)
    assert first.fingerprint == second.fingerprint
    files = [set(first.files[name]) for name in SPLITS]
    assert all(files), "every split should hold at least one file"
    assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])
    for name in SPLITS:
        assert all(split_of(path) == name for path in first.files[name])
        assert first.char_counts[name] == len(first.split(name)) > 0


def test_stdlib_corpus_excludes_site_packages_build_files_and_non_utf8(tmp_path: Path) -> None:
    corpus = load_corpus("python-stdlib", root=_fake_stdlib(tmp_path / "lib"))
    every = {path for name in SPLITS for path in corpus.files[name]}
    assert len(every) == 200
    assert not any("site-packages" in p or "sysconfigdata" in p for p in every)
    assert corpus.skipped == ("latin1.py",)
    assert "import numpy" not in corpus.train


def test_max_bytes_caps_each_split_to_its_share(tmp_path: Path) -> None:
    root = _fake_stdlib(tmp_path / "lib")
    full = load_corpus("python-stdlib", root=root)
    capped = load_corpus("python-stdlib", root=root, max_bytes=2_000)
    assert len(capped.train.encode()) <= 1_800 and len(capped.test.encode()) <= 100
    assert all(capped.split(name) for name in SPLITS)
    for name in SPLITS:
        assert full.split(name).startswith(capped.split(name))


def test_real_stdlib_slice_has_all_splits_and_a_small_vocabulary() -> None:
    corpus = load_corpus("python-stdlib", max_bytes=200_000)
    assert all(corpus.char_counts[name] > 0 for name in SPLITS)
    tokenizer = corpus.build_tokenizer(min_count=1)
    assert tokenizer.unknown_id == 0 and 50 < len(tokenizer) < 300
    assert tokenizer.unknown == "error"  # a typo in a prompt is reported, not silently mapped
    tokenizer.encode(corpus.test, unknown="map")  # evaluation maps unseen characters


def test_linux_corpus_reads_c_and_h_files_from_a_tarball(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    tarball = tmp_path / "linux-source-9.9.tar.xz"
    with tarfile.open(tarball, "w:xz") as archive:
        for i in range(40):
            name = f"linux-source-9.9/kernel/file_{i}.{'c' if i % 2 else 'h'}"
            data = f"int f_{i}(void) {{ return {i}; }}\n".encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("linux-source-9.9/README")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    corpus = load_corpus("linux", root=tarball)
    every = sorted(path for name in SPLITS for path in corpus.files[name])
    assert len(every) == 40 and every[0].startswith("kernel/file_")
    assert "hello" not in corpus.train
    assert list((tmp_path / "cache" / "corpora").iterdir()), "the split tarball should be cached"


def test_missing_linux_source_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr("workbench.data.corpora.Path.glob", lambda self, pattern: iter(()))
    with pytest.raises(CorpusNotFoundError, match="apt-get install linux-source"):
        load_corpus("linux")


def test_unknown_corpus_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="python-stdlib"):
        load_corpus("shakespeare")


def test_linux_corpus_leaves_out_generated_register_maps_and_huge_tables(tmp_path):
    """Files under asic_reg/ and files over 600 kB are generated data, not code: never in any split."""
    from workbench.data.corpora import is_generated_linux_file

    assert is_generated_linux_file("drivers/gpu/drm/amd/include/asic_reg/dcn/dcn_3_1_2_offset.h", "#define x 1\n")
    assert is_generated_linux_file("drivers/net/wireless/realtek/rtw89/rtw8852a_table.c", "x" * 600_001)
    assert not is_generated_linux_file("kernel/sched/core.c", "int x;\n" * 1000)
    source = tmp_path / "linux"
    for relative, text in {
        "kernel/fork.c": "int fork(void) { return 0; }\n" * 50,
        "drivers/gpu/drm/amd/include/asic_reg/gc/gc_offset.h": "#define regA 0x1\n" * 50,
        "lib/table.c": "0x00, " * 110_000,
    }.items():
        path = source / relative
        path.parent.mkdir(parents=True)
        path.write_text(text)
    corpus = load_corpus("linux", root=source)
    kept = {f for split in corpus.files.values() for f in split}
    assert kept == {"kernel/fork.c"}
