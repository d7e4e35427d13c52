"""The docs keep to their own rules (issue 27):

- numbers live only in bench/RESULTS.md: no measured number appears both there and in
  README.md or docs/ (those link to RESULTS' sections instead);
- every relative link in README.md, docs/ and RESULTS resolves, down to its `#section`;
- the README stays short, and its quick start (the STEP blocks test_readme.py runs) lies in
  its first 60 lines.

A "number" is one with a unit of time, size, rate or count ("2039 s", "0.33 s", "~640 bytes",
"7,126 req/s", "368 checks", "20–35 s"), compared after dropping `~`, thousands commas and the
space before the unit. Settings and limits are not measurements, and some of them are written
in both places (RESULTS names the settings it measured under); SETTINGS lists those, each with
what it is, so that anything else found in both is a measured number written twice.
"""

import re

from deploy_helpers import REPO

RESULTS = REPO / "bench/RESULTS.md"
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))

UNITS = (r"ms|µs|s|min|h|KB|MB|GB|KiB|MiB|GiB|bytes|req/s|%|×"
         r"|checks|passed|POSTs|entries|claims|reads|instructions|requests")
NUMBER = r"\d[\d,]*(?:\.\d+)?"
NUMBER_WITH_UNIT = re.compile(rf"(?<![\w.,/-])~?({NUMBER}(?:\s*[–-]\s*{NUMBER})?)\s?({UNITS})(?![\w/])")

# Written in both places, and none of them measured. Anything else in both fails the test.
SETTINGS = {
    "0.5 s": "Dapr's first retry interval (resiliency.yaml, exponential)",
    "1 s": "probe periods",
    "2 s": "the claim's lease (src/delivery/claims.rs)",
    "5 s": "the grace for a write that may still land (PENDING_GRACE, src/delivery/mod.rs)",
    "45 s": "about how long Dapr's retries of one route last (resiliency.yaml: 10, from 0.5 s to 10 s apart)",
    "10 s": "the operator's watchdog interval; the longest interval between Dapr's retries (resiliency.yaml)",
    "60 s": "pubsub.redis's processingTimeout (scripts/dapr/pubsub.yaml)",
    "600 s": "Spin's default limit per outbound call, which the benchmark's wasmtime serve sets too (-Wtimeout)",
    "24 h": "how long claims and unstored marks are kept",
    "4 KiB": "the longest message (src/messages.rs)",
    "16 KiB": "the largest body",
    "10000 entries": "the streams' maxLenApprox (scripts/dapr/, kubernetes/)",
}


def numbers(text):
    found = set()
    for m in NUMBER_WITH_UNIT.finditer(text):
        value = re.sub(r"\s+", "", m.group(1)).replace(",", "").replace("-", "–")
        found.add(f"{value} {m.group(2)}")
    return found


def test_the_number_pattern_finds_measurements_and_keeps_them_apart():
    text = "34 min (2039 s, 368 checks), ~640 bytes, 7,126 req/s, 0.33 s, 20–35 s, 19.3×, 4 KiB"
    assert numbers(text) == {"34 min", "2039 s", "368 checks", "640 bytes", "7126 req/s", "0.33 s",
                             "20–35 s", "19.3 ×", "4 KiB"}
    # Versions, ports, commits and names are not numbers with a unit.
    assert numbers("Dapr 1.18.1, port 8000, 2d8dc04, wasm32-wasip2, v0.25.1, sha256, /api/v1.0/s") == set()


def test_no_measured_number_is_written_both_in_the_docs_and_in_results():
    in_results = numbers(RESULTS.read_text())
    twice = []
    for doc in [README, *DOCS]:
        for number in sorted(numbers(doc.read_text()) & in_results):
            if number not in SETTINGS:
                twice.append(f"{doc.relative_to(REPO)}: {number}")
    assert not twice, ("measured numbers live only in bench/RESULTS.md: link to its section instead of "
                       "writing these again (or, for a setting, add it to SETTINGS with what it is):\n"
                       + "\n".join(twice))


def test_each_setting_is_still_written_somewhere():
    # A setting no doc uses any more would only widen the gate.
    in_docs = set().union(*(numbers(doc.read_text()) for doc in [README, *DOCS]))
    assert set(SETTINGS) <= in_docs, set(SETTINGS) - in_docs


def headings(path):
    """The GitHub anchors of a Markdown file's headings (outside code blocks)."""
    anchors, seen, fence = set(), {}, False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        m = None if fence else re.match(r"#{1,6} +(.*?) *#*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def links(path):
    """(line number, target) of each Markdown link outside code blocks and code spans."""
    found, fence = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence:
            line = re.sub(r"`[^`]*`", "", line)
            found += [(number, target) for target in re.findall(r"\]\(([^)\s]+)\)", line)]
    return found


def test_every_relative_link_resolves_to_a_file_and_section():
    broken = []
    for doc in [README, *DOCS, RESULTS]:
        for number, target in links(doc):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            where = f"{doc.relative_to(REPO)}:{number}: {target}"
            if not path.exists():
                broken.append(f"{where}: no such file")
            elif anchor and path.suffix == ".md" and anchor not in headings(path):
                broken.append(f"{where}: no such section in {path.relative_to(REPO)}")
    assert not broken, "\n".join(broken)


def test_the_readme_is_short_and_its_quick_start_comes_first():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/"
    steps = [n for n, line in enumerate(lines, 1) if line.strip() == "<!-- END_STEP -->"]
    assert steps, "README.md has no quick-start steps (<!-- STEP name --> ... <!-- END_STEP -->)"
    assert max(steps) <= 60, f"the quick start ends on line {max(steps)}: a reader must reach the loop in 60 lines"


def test_every_doc_opens_with_what_a_reader_comes_for():
    # A title, then a paragraph of prose before any section, list, table or code.
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        assert lines[0].startswith("# ") and not lines[1].strip(), f"{doc.name}: no title"
        assert re.match(r"[A-Z]", lines[2]), f"{doc.name}: open with a sentence on what a reader comes for"
