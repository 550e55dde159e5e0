"""The scripts the report ships: dagre vendored with its licence, inert in a page."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from dagvisor.supervisor._assets import DAGRE_VERSION, dagre_script, graph_view_script

ASSETS = resources.files("dagvisor.supervisor").joinpath("_static")


def test_dagre_ships_with_its_licences_and_versions():
    dagre = ASSETS.joinpath("dagre")
    versions = dagre.joinpath("VERSIONS").read_text(encoding="utf-8").split("\n")
    assert versions[0] == f"@dagrejs/dagre {DAGRE_VERSION} MIT"
    assert re.fullmatch(r"@dagrejs/graphlib \S+ MIT", versions[1])
    for licence in ("LICENSE", "LICENSE.graphlib"):
        text = dagre.joinpath(licence).read_text(encoding="utf-8")
        assert "Permission is hereby granted, free of charge" in text
        assert "Copyright (c)" in text
    # The vendored file is the release the Makefile names.
    code = dagre.joinpath("dagre.min.js").read_text(encoding="utf-8")
    assert f'"{DAGRE_VERSION}"' in code
    makefile = resources.files("dagvisor").joinpath("..", "Makefile")
    if makefile.is_file():  # a checkout, not an installed wheel
        assert f"DAGRE_VERSION := {DAGRE_VERSION}" in makefile.read_text()


def test_the_inlined_scripts_carry_the_licence_and_fetch_nothing():
    script = dagre_script()
    assert script.startswith(f"/*! @dagrejs/dagre {DAGRE_VERSION} MIT")
    assert "Permission is hereby granted" in script
    assert "sourceMappingURL" not in script  # nothing for a browser to fetch
    # The only address is SVG's namespace, which is a name, not a fetch.
    addresses = re.findall(r"https?://[^\s\"']*", graph_view_script())
    assert set(addresses) == {"http://www.w3.org/2000/svg"}


@pytest.mark.parametrize("script", [dagre_script, graph_view_script])
def test_the_scripts_cannot_end_or_reopen_their_script_element(script):
    # Inside <script>, "</script" ends the element and "<!--" with
    # "<script" switches the parser into a state that can swallow the page.
    text = script().lower()
    for marker in ("</script", "<!--", "<script"):
        assert marker not in text
