"""README.md and docs/: a short front page, links and paths that resolve, examples that work.

The tenants page's JSON imports and exports as written. The walks (the README's five minutes, the
API page's consumer walk) run as written against the real platform/demo, on its free ports instead
of 8000 and 8001; each ``#   `` line under a command is output that must appear, in order
(whitespace aside, ``...`` for anything).
"""

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenants.config_io import export_tenants, import_tenants
from tests.test_config_io import TENANTS_PAGE_DOCUMENT
from tests.test_demo import Demo, serving_demo, stop_demo

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TENANTS_PAGE = ROOT / "docs" / "tenants.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
FRONT_PAGE_LINES = 150
FENCE = re.compile(r"^```.*?^```$", re.M | re.S)
HEADING = re.compile(r"^#+ (.+)$", re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
# Code spans naming a file or folder of this repository (placeholders like <role> aside).
REPOSITORY_PATH = re.compile(
    r"(?:platform|bench|tests|docs|config|tenants|authz|ops|messages|devissuer)/[\w./-]*"
)
EXPECTED_OUTPUT = "#   "


def prose(page: Path) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", page.read_text())


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of every heading of a page."""
    return {anchor(heading) for heading in HEADING.findall(prose(page))}


def relative_links(page: Path) -> list[str]:
    """Every link of a page that points into this repository."""
    return [link for link in LINK.findall(prose(page)) if not re.match(r"[a-z]+:", link)]


def section(page: Path, title: str) -> str:
    """The text of a page from the heading ``title`` to the next heading of its level or above."""
    text = page.read_text()
    start = re.search(rf"^(#+) {re.escape(title)}$", text, re.M)
    assert start, f"no heading {title!r} in {page.name}"
    level = len(start.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(FENCE.sub(blank, text), start.end())
    return text[start.end() : end.start() if end else len(text)]


def blank(block: re.Match[str]) -> str:
    """A fenced block as spaces, so headings are found outside code only, at the same offsets."""
    return re.sub(r"[^\n]", " ", block.group(0))


def fenced(text: str, language: str) -> list[str]:
    """The contents of a text's fenced blocks in this language."""
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.M | re.S)


def as_written(value: object, written: object) -> object:
    """The value cut to what an example writes: its keys only (export adds the defaults)."""
    if isinstance(written, dict) and isinstance(value, dict):
        return {name: as_written(value.get(name), written[name]) for name in written}
    if isinstance(written, list) and isinstance(value, list) and len(value) == len(written):
        return [as_written(item, example) for item, example in zip(value, written, strict=True)]
    return value


def test_the_readme_is_a_front_page_of_at_most_150_lines():
    assert len(README.read_text().splitlines()) <= FRONT_PAGE_LINES


def test_the_readme_maps_every_page_under_docs():
    mapped = {(ROOT / link).resolve() for link in relative_links(README)}

    assert PAGES and [page for page in PAGES if page not in mapped] == []


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda page: page.name)
def test_every_relative_link_names_a_file_and_heading_that_exist(page):
    broken = []
    for link in relative_links(page):
        path, _, fragment = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists() or (fragment and fragment not in anchors(target)):
            broken.append(link)

    assert broken == []


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda page: page.name)
def test_every_repository_path_a_page_names_exists(page):
    named = {span for span in CODE_SPAN.findall(prose(page)) if REPOSITORY_PATH.fullmatch(span)}

    assert sorted(path for path in named if not (ROOT / path).exists()) == []


def test_the_readmes_two_commands_are_the_demo_and_the_test_suite():
    # tests/test_demo.py runs the one, CI (.ci/run) the other.
    assert fenced(section(README, "Two commands"), "sh") == [
        "platform/demo\n",
        "platform/run-tests\n",
    ]


def test_the_tenants_pages_example_is_the_document_the_import_tests_use():
    example = fenced(section(TENANTS_PAGE, "Admin or code"), "json")[0]

    assert json.loads(example) == TENANTS_PAGE_DOCUMENT


@pytest.mark.django_db
@pytest.mark.parametrize(
    "title", ["Several issuers", "Routes: the paths of your own API"], ids=["issuers", "routes"]
)
def test_the_tenants_pages_fields_import_and_export_as_written(title):
    snippet = fenced(section(TENANTS_PAGE, title), "json")[0]  # one field, as it sits in a tenant
    field = json.loads("{" + snippet + "}")
    tenant = {**TENANTS_PAGE_DOCUMENT["tenants"][0], **field}
    if "issuers" in field:
        del tenant["domain"]

    import_tenants({"tenants": [tenant]})

    [exported] = export_tenants()["tenants"]
    assert as_written(exported, field) == field


def output_pattern(expected: str) -> re.Pattern[str]:
    """A documented output line as a pattern over output without whitespace."""
    literal = re.escape(re.sub(r"\s", "", expected))
    return re.compile(literal.replace(re.escape("..."), ".*?"))


def missing_output(script: str, output: str) -> list[str]:
    """The documented output lines that do not appear, in order, in the output."""
    squeezed, position, missing = re.sub(r"\s", "", output), 0, []
    for line in script.splitlines():
        if not line.startswith(EXPECTED_OUTPUT):
            continue
        found = output_pattern(line[len(EXPECTED_OUTPUT) :]).search(squeezed, position)
        if found:
            position = found.end()
        else:
            missing.append(line)
    return missing


def on_demo_ports(script: str, demo: Demo) -> str:
    """The script with the documented ports replaced by the test demo's."""
    issuer_port = re.search(r"issuer http://127\.0\.0\.1:(\d+)/demo/", demo.output).group(1)
    return script.replace(":8000", f":{demo.port}").replace(":8001", f":{issuer_port}")


def run_walk(script: str, demo: Demo, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a script with bash in a new shell of the demo, stopping at the first failing command."""
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=demo.shell_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """platform/demo, serving, for the walks; stopped after them."""
    running = serving_demo(tmp_path_factory.mktemp("demo-home"))
    yield running
    stop_demo(running)


@pytest.mark.demo
def test_the_readmes_five_minute_walk_answers_as_documented(demo):
    script = on_demo_ports(
        "\n".join(fenced(section(README, "Five minutes with the demo"), "sh")), demo
    )

    walked = run_walk(script, demo, ROOT)

    assert walked.returncode == 0, walked.stderr
    assert script.count(EXPECTED_OUTPUT) >= 8
    assert missing_output(script, walked.stdout) == [], walked.stdout


@pytest.mark.demo
def test_the_api_pages_consumer_walk_answers_as_documented(demo, tmp_path):
    walk = section(ROOT / "docs" / "api.md", "A consumer's walk through the API")
    script = on_demo_ports("\n".join(fenced(walk, "sh")), demo)

    walked = run_walk(script, demo, tmp_path)  # it writes openapi.yaml where it runs

    assert walked.returncode == 0, walked.stderr
    assert script.count(EXPECTED_OUTPUT) >= 4
    assert missing_output(script, walked.stdout) == [], walked.stdout
    assert (tmp_path / "openapi.yaml").read_text().startswith("openapi: 3")
