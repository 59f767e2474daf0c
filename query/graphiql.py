"""GraphiQL, served from this process: the page and every script and style sheet it loads.

Strawberry's GraphiQL page loads React, GraphiQL and its explorer plugin from a CDN; where the
API runs without internet (as in development and CI here) the page stays blank. ``make install``
runs ``python -m query.graphiql`` once: it reads the asset URLs (``package@version/path``) and
their ``integrity`` hashes from Strawberry's own page, fetches each package's tarball from the
npm registry with ``npm pack`` (so the bytes are the published ones), checks every file against
Strawberry's hash and keeps it in the virtualenv (``share/ledgerline/graphiql``). The API then
serves the same page with those URLs pointing at itself (``/graphiql/…``); the browser checks
the hashes again. A Strawberry upgrade that moves to other versions needs only ``make install``.

Without the files (an install that skipped that step) the page is Strawberry's own, from the CDN.
"""

import base64
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from strawberry.http.ides import get_graphql_ide_html

CDN = "https://unpkg.com/"
PREFIX = "/graphiql/"
# src="https://unpkg.com/react@18.2.0/umd/react.production.min.js" integrity="sha384-…"
_ASSET = re.compile(r'(?:src|href)="https://unpkg\.com/((@[^/"]+/)?[^@/"]+)@([^/"]+)/([^"]+)"\s+'
                    r'integrity="(sha384-[^"]+)"')


@dataclass(frozen=True)
class Asset:
    package: str
    version: str
    path: str
    integrity: str

    @property
    def local(self) -> str:
        """Where the file lives, below the assets folder and below ``PREFIX``."""
        return f"{self.package}@{self.version}/{self.path}"


def default_dir() -> Path:
    return Path(sys.prefix) / "share" / "ledgerline" / "graphiql"


def assets(html: str) -> list[Asset]:
    return [Asset(m[1], m[3], m[4], m[5]) for m in _ASSET.finditer(html)]


def _hash(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def present(folder: Path, html: str) -> bool:
    wanted = assets(html)
    return bool(wanted) and all((folder / a.local).is_file() for a in wanted)


def page(folder: Path | None = None) -> str:
    """Strawberry's GraphiQL page, loading its assets from this server when they are installed."""
    html = get_graphql_ide_html("graphiql")
    if present(folder or default_dir(), html):
        html = html.replace(CDN, PREFIX)
    return html


def fetch(folder: Path) -> list[Asset]:
    """Puts every asset of Strawberry's GraphiQL page in ``folder``, each checked against the
    page's integrity hash; packages already there are not fetched again."""
    wanted = assets(get_graphql_ide_html("graphiql"))
    if not wanted:
        raise SystemExit("Strawberry's GraphiQL page names no assets on the CDN: nothing to fetch")
    missing = [a for a in wanted if not (folder / a.local).is_file()]
    packages = sorted({f"{a.package}@{a.version}" for a in missing})
    if packages:
        with tempfile.TemporaryDirectory() as scratch:
            packed = subprocess.run(["npm", "pack", *packages, "--json", "--pack-destination", scratch],
                                    check=True, capture_output=True, text=True, cwd=scratch).stdout
            tarballs = {f"{p['name']}@{p['version']}": Path(scratch) / p["filename"]
                        for p in json.loads(packed)}
            for a in missing:
                with tarfile.open(tarballs[f"{a.package}@{a.version}"]) as tar:
                    member = tar.extractfile(f"package/{a.path}")
                    if member is None:
                        raise SystemExit(f"{a.package}@{a.version} has no file {a.path}")
                    data = member.read()
                if _hash(data) != a.integrity:
                    raise SystemExit(f"{a.local} does not match the integrity hash of Strawberry's page")
                target = folder / a.local
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
    return wanted


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else default_dir()
    for a in fetch(folder):
        print(f"graphiql: {a.local}")


if __name__ == "__main__":
    main()
