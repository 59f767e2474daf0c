"""GraphiQL's page: served with its scripts from this server once they are installed."""

from pathlib import Path

from strawberry.http.ides import get_graphql_ide_html

from query import graphiql


def test_every_asset_of_strawberrys_page_is_found_with_its_hash() -> None:
    html = get_graphql_ide_html("graphiql")
    found = graphiql.assets(html)
    assert {a.package for a in found} >= {"react", "react-dom", "graphiql"}
    assert all(a.integrity.startswith("sha384-") for a in found)
    assert html.count(graphiql.CDN) == len(found)  # nothing else comes from the CDN


def test_the_page_points_at_this_server_only_when_the_assets_are_there(tmp_path: Path) -> None:
    assert graphiql.CDN in graphiql.page(tmp_path)
    for a in graphiql.assets(get_graphql_ide_html("graphiql")):
        (tmp_path / a.local).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / a.local).write_text("")
    page = graphiql.page(tmp_path)
    assert graphiql.CDN not in page and "https://" not in page.replace("http://www.w3.org", "")
    assert 'src="/graphiql/react@' in page
