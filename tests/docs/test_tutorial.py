"""docs/softmax-backprop.md runs: every ```python block, in order, in one shared namespace, so that the tutorial
cannot rot. One test per ``## `` section runs that section's blocks (after any earlier section not yet run, so a
single section can be selected with -k); a failure names the section, the block's first line and the failing line
of the document, and the traceback shows the document's own line numbers."""
from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "softmax-backprop.md"
DOC_NAME = str(DOC.relative_to(ROOT))
SECTIONS_WANTED = 7


@dataclass
class Block:
    line: int  # the document's line number of the block's first line of code
    code: str


@dataclass
class Section:
    heading: str
    line: int
    blocks: list[Block] = field(default_factory=list)


def parse(text: str) -> tuple[list[Block], list[Section]]:
    """The python blocks before the first ``## `` heading, and each ``## `` section with its python blocks.
    Headings inside fenced blocks do not count."""
    preamble, sections = [], []
    fence, code, start = None, [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is None:
            opening = re.match(r"^(`{3,})\s*([^`\s]*)[^`]*$", line)  # CommonMark: no backtick after the fence
            if opening:
                fence, language, code, start = opening.group(1), opening.group(2), [], number + 1
                fence = (fence, language == "python")
            elif line.startswith("## "):
                sections.append(Section(line[3:].strip(), number))
        elif line.strip() == fence[0]:
            if fence[1]:
                (sections[-1].blocks if sections else preamble).append(Block(start, "\n".join(code) + "\n"))
            fence = None
        else:
            code.append(line)
    assert fence is None, f"{DOC_NAME}: a code block opened at line {start - 1} is never closed"
    return preamble, sections


PREAMBLE, SECTIONS = parse(DOC.read_text(encoding="utf-8"))


def where(section: Section | None, block: Block) -> str:
    name = f"section {section.heading!r}" if section else "the text before the first section"
    return f"{DOC_NAME}, {name}, the python block starting at line {block.line}"


def run_block(section: Section | None, block: Block, namespace: dict) -> None:
    """Execute one block; line numbers in its traceback are the document's."""
    try:
        compiled = compile("\n" * (block.line - 1) + block.code, str(DOC), "exec")
        exec(compiled, namespace)  # noqa: S102 - the tutorial's own code, which is what is under test
        return
    except Exception as error:  # noqa: BLE001 - any failure of the block is the test's failure
        lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == str(DOC)]
        if isinstance(error, SyntaxError) and error.lineno:
            lines.append(error.lineno)
        at = f", failed at line {lines[-1]}" if lines else ""
        detail = "".join(traceback.format_exception(type(error), error, error.__traceback__.tb_next))
    pytest.fail(f"{where(section, block)}{at}:\n{detail}", pytrace=False)  # outside except: no chained traceback


class Tutorial:
    """The shared namespace, and which sections have run in it (and whether they passed)."""

    def __init__(self):
        self.namespace = {"__name__": "softmax_backprop_tutorial"}
        self.outcome: dict[int, bool] = {}

    def run_through(self, index: int) -> None:
        if not self.outcome:
            for block in PREAMBLE:
                run_block(None, block, self.namespace)
        for earlier in range(index):
            if earlier not in self.outcome:
                self.run_section(earlier)
            if not self.outcome[earlier]:
                pytest.fail(f"{DOC_NAME}: section {SECTIONS[index].heading!r} needs section "
                            f"{SECTIONS[earlier].heading!r} (line {SECTIONS[earlier].line}), which failed",
                            pytrace=False)
        if index in self.outcome:  # already run as an earlier test's prerequisite
            assert self.outcome[index], f"section {SECTIONS[index].heading!r} failed"
            return
        self.run_section(index)

    def run_section(self, index: int) -> None:
        self.outcome[index] = False
        for block in SECTIONS[index].blocks:
            run_block(SECTIONS[index], block, self.namespace)
        self.outcome[index] = True


@pytest.fixture(scope="module")
def tutorial():
    return Tutorial()


def test_the_document_has_seven_sections_each_with_code():
    headings = [f"line {s.line}: {s.heading}" for s in SECTIONS]
    assert len(SECTIONS) == SECTIONS_WANTED, (f"{DOC_NAME} has {len(SECTIONS)} '## ' sections, not "
                                              f"{SECTIONS_WANTED}:\n" + "\n".join(headings))
    without = [h for s, h in zip(SECTIONS, headings) if not s.blocks]
    assert not without, f"{DOC_NAME}: sections without a python block:\n" + "\n".join(without)


def test_the_readme_links_the_tutorial():
    assert "(docs/softmax-backprop.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("index", range(len(SECTIONS)), ids=[s.heading.split(".")[0] for s in SECTIONS])
def test_section_runs(tutorial, index):
    tutorial.run_through(index)
