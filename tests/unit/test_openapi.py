from pathlib import Path

from command.openapi import document, render

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_openapi_document_is_current() -> None:
    committed = (REPO / "openapi.json").read_text()
    assert committed == render(), "openapi.json drifted: run `python -m command.openapi`"


def test_every_route_of_the_api_is_documented() -> None:
    from command.api import create_app
    from common.settings import load

    app = create_app(load({"LEDGERLINE_JWT_SECRET": "k" * 40}))
    routes = {r.path for r in app.routes if r.path.startswith("/v1/")}  # type: ignore[attr-defined]
    assert routes == set(document()["paths"])
