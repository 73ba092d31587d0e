"""The one JUnit XML writer: the gate's rules as test cases, and a run that ended in an error as an error case.

CI dashboards count `errors` and `failures`; a run that could not decide (exit 2: bad input, or nothing could execute
here) must show an error there, never a clean-looking suite of skips.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

SUITE = "hetero.check"


@dataclass(frozen=True)
class Case:
    classname: str
    name: str
    output: str = ""
    failure: str = ""  # a rule that failed
    skipped: str = ""  # a rule that could not be evaluated here, with the reason
    error: str = ""  # the run itself ended in an error (exit 2)


def suite(cases: list[Case]) -> str:
    """A testsuite document whose counts agree with its cases."""
    root = ET.Element("testsuite", name=SUITE)
    for c in cases:
        case = ET.SubElement(root, "testcase", classname=c.classname, name=c.name)
        if c.output:
            ET.SubElement(case, "system-out").text = c.output
        for tag in ("failure", "skipped", "error"):
            if getattr(c, tag):
                ET.SubElement(case, tag, message=getattr(c, tag))
    counts = {"tests": len(cases), "failures": 0, "skipped": 0, "errors": 0}
    for c in cases:
        counts["failures"] += bool(c.failure)
        counts["skipped"] += bool(c.skipped)
        counts["errors"] += bool(c.error)
    for k, v in counts.items():
        root.set(k, str(v))
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def error_case(message: str) -> Case:
    """The case that records why a run ended with exit 2."""
    return Case(SUITE, "inputs", error=message)
