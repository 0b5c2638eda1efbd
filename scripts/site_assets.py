"""The rendered site's one vendored asset, MathJax 3, fetched from the npm registry so the site works offline.

`npm pack mathjax@3.2.2` (npm's own registry, proxy and cache settings), the tarball checked against the
sha512 integrity the registry publishes (pinned below), then only the files the CHTML TeX build loads
(es5/tex-mml-chtml.js, its autoloaded TeX extensions, the a11y/menu parts, the woff-v2 fonts) are extracted into
<user cache>/site/mathjax-3.2.2 (atomically: a half-written folder is never used). build_site.py copies that folder
into the site's _static/mathjax; docs/site/conf.py points Sphinx's mathjax_path at it, so no page names a CDN.
Offline with no cached copy: put mathjax-3.2.2.tgz (the registry's tarball) into <user cache>/site/.
`python scripts/site_assets.py` fetches it now and prints where it is.
"""
from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

MATHJAX_VERSION = "3.2.2"
MATHJAX_PACKAGE = f"mathjax@{MATHJAX_VERSION}"
MATHJAX_TARBALL = f"mathjax-{MATHJAX_VERSION}.tgz"
# `npm view mathjax@3.2.2 dist.integrity` (the registry's sha512 of the tarball)
MATHJAX_INTEGRITY = "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
MATHJAX_PATH = "mathjax/tex-mml-chtml.js"  # Sphinx's mathjax_path, relative to _static
# What tex-mml-chtml.js loads (everything else in the 6 MB package, e.g. the SVG output or speech maps, is left out)
KEEP = ("es5/tex-mml-chtml.js", "es5/input/tex/extensions/", "es5/output/chtml/fonts/woff-v2/", "es5/a11y/",
        "es5/ui/")
COMPLETE = ".complete"  # written last into the cached folder, holding the integrity it was checked against


class AssetError(RuntimeError):
    """MathJax could not be had: says what was tried and what to do."""


def cache_root() -> Path:
    """<user cache>/site (KD_CACHE_DIR, else ~/.cache/kd_lessons, as kd_lessons.config says)."""
    from kd_lessons import config

    return config.cache_dir() / "site"


def integrity_of(path: Path) -> str:
    """The npm-style sha512 integrity string of a file."""
    digest = hashlib.sha512()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def _npm_pack(folder: Path) -> Path:
    """Download the tarball with `npm pack` into folder."""
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError("npm not found on PATH (install Node.js, which provides npm)")
    try:
        run = subprocess.run([npm, "pack", MATHJAX_PACKAGE, "--silent"], cwd=folder, capture_output=True,
                             text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:
        raise AssetError(f"`npm pack {MATHJAX_PACKAGE}` timed out after {exc.timeout:.0f} s") from exc
    tarball = folder / MATHJAX_TARBALL
    if run.returncode != 0 or not tarball.is_file():
        raise AssetError(f"`npm pack {MATHJAX_PACKAGE}` failed: {(run.stderr or run.stdout).strip()[-300:]}")
    return tarball


def _extract(tarball: Path, dest: Path) -> None:
    """Only KEEP's regular files, by their checked names (never arbitrary paths from the archive)."""
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("package/")
            if not (member.isfile() and name.startswith(KEEP)) or ".." in Path(name).parts:
                continue
            target = dest / name.removeprefix("es5/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())


def mathjax_dir() -> Path:
    """The cached, checked MathJax folder (tex-mml-chtml.js at its top), fetching it first if need be."""
    root = cache_root()
    final = root / f"mathjax-{MATHJAX_VERSION}"
    marker = final / COMPLETE
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == MATHJAX_INTEGRITY:
        return final
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".mathjax-") as tmp:
        local = root / MATHJAX_TARBALL  # a copy put there by hand, for a machine that is offline
        try:
            tarball = local if local.is_file() else _npm_pack(Path(tmp))
        except AssetError as exc:
            raise AssetError(f"MathJax {MATHJAX_VERSION} (the site's equations, bundled so it works offline) is "
                             f"not cached in {final} and could not be fetched: {exc}. Run `make site` once with "
                             f"access to the npm registry, or copy {MATHJAX_TARBALL} (integrity "
                             f"{MATHJAX_INTEGRITY}) into {root}") from exc
        got = integrity_of(tarball)
        if got != MATHJAX_INTEGRITY:
            raise AssetError(f"{tarball} has integrity {got}, not the pinned {MATHJAX_INTEGRITY}; delete it and "
                             f"run again")
        staged = Path(tmp) / "mathjax"
        _extract(tarball, staged)
        if not (staged / "tex-mml-chtml.js").is_file():
            raise AssetError(f"{tarball} holds no es5/tex-mml-chtml.js")
        (staged / COMPLETE).write_text(MATHJAX_INTEGRITY + "\n", encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)  # an unfinished or older copy
        try:
            staged.rename(final)
        except OSError:  # another build put it there first: use theirs if it is complete
            if not marker.is_file():
                raise
    return final


def install_mathjax(static: Path) -> Path:
    """Copy the cached MathJax into <static>/mathjax (the site's _static), fetching it first if need be."""
    dest = Path(static) / "mathjax"
    shutil.copytree(mathjax_dir(), dest, ignore=shutil.ignore_patterns(COMPLETE), dirs_exist_ok=True)
    return dest


if __name__ == "__main__":
    try:
        print(mathjax_dir())
    except AssetError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
