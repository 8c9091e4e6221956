#!/usr/bin/env python3
"""Check the machine-readable report files of a georob audit: junit.xml and report.sarif.

    .venv/bin/pip install -r scripts/requirements.txt      # junitparser, jsonschema (+ format checkers)
    .venv/bin/python scripts/check_report_formats.py DIR

DIR is a `georob audit --out DIR` folder.

1. DIR/junit.xml is parsed with junitparser (PyPI). Every suite and test case is printed with its result
   (pass / failure / error / skipped and the message); the `tests` / `failures` / `errors` / `skipped`
   counts written on <testsuites> and on each <testsuite> must match the test cases actually present.
   Failing test cases are printed but are not an error of this script: a failing gate is a valid report.
2. DIR/report.sarif is validated against the official OASIS SARIF 2.1.0 JSON schema (errata 01, the
   deliverable `sarif-2.1/schema/sarif-schema-2.1.0.json` of github.com/oasis-tcs/sarif-spec), stored in this
   repository at docs/schemas/sarif-schema-2.1.0.json so no network access is needed. That schema declares
   `"$schema": "http://json-schema.org/draft-04/schema#"`, so the validator class is chosen from that
   declaration (jsonschema.validators.validator_for -> Draft4Validator), with format checking on: "uri" and
   "date-time" are checked when rfc3986-validator and rfc3339-validator are installed (they are in
   scripts/requirements.txt; without them jsonschema skips those formats silently, and the script says so);
   "uri-reference" is not a draft-04 format and is not checked. Every error is printed with its JSON path.
   The runs / results / rules are summarised.

Exit status: 0 when both files are valid, 1 on any parse or validation error (or a missing file).
"""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from pathlib import Path

import jsonschema
from jsonschema.validators import validator_for
from junitparser import Error, Failure, JUnitXml, Skipped, TestSuite

SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "schemas" / "sarif-schema-2.1.0.json"


def check_junit(path: Path) -> list[str]:
    problems: list[str] = []
    print(f"== {path} (junitparser {version('junitparser')})")
    try:
        xml = JUnitXml.fromfile(str(path))
    except Exception as e:  # lxml / ElementTree parse errors, junitparser's JUnitXmlError
        return [f"{path.name}: does not parse: {e}"]
    suites = [xml] if isinstance(xml, TestSuite) else list(xml)
    tot = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        lines = []
        for case in suite:
            counts["tests"] += 1
            res = case.result  # list of Failure / Error / Skipped
            kind = "pass"
            msg = ""
            for r in res:
                if isinstance(r, Failure):
                    kind, counts["failures"] = "FAILURE", counts["failures"] + 1
                elif isinstance(r, Error):
                    kind, counts["errors"] = "ERROR", counts["errors"] + 1
                elif isinstance(r, Skipped):
                    kind, counts["skipped"] = "skipped", counts["skipped"] + 1
                msg = (r.message or r.text or "").strip().replace("\n", " ")[:160]
            lines.append(f"    [{kind}] {case.classname} :: {case.name}" + (f" - {msg}" if msg else ""))
        print(f"  suite {suite.name!r}: {counts['tests']} cases, {counts['failures']} failures, "
              f"{counts['errors']} errors, {counts['skipped']} skipped")
        print("\n".join(lines))
        for k, v in counts.items():
            declared = suite._elem.get(k)  # only counts actually written are compared
            if declared is not None and int(declared) != v:
                problems.append(f"{path.name}: suite {suite.name!r} declares {k}={declared} but has {v}")
            tot[k] += v
    if not isinstance(xml, TestSuite):
        for k, v in tot.items():
            declared = xml._elem.get(k)  # <testsuites> attributes are optional
            if declared is not None and int(declared) != v:
                problems.append(f"{path.name}: <testsuites> declares {k}={declared} but the suites hold {v}")
    print(f"  total: {len(suites)} suites, {tot['tests']} cases, {tot['failures']} failures, "
          f"{tot['errors']} errors, {tot['skipped']} skipped")
    if tot["tests"] == 0:
        problems.append(f"{path.name}: no test cases")
    return problems


def check_sarif(path: Path) -> list[str]:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    cls = validator_for(schema)
    print(f"== {path} (schema {SCHEMA.name}, {schema.get('$schema')}, "
          f"jsonschema {version('jsonschema')} {cls.__name__})")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return [f"{path.name}: not JSON: {e}"]
    cls.check_schema(schema)
    fc = cls.FORMAT_CHECKER
    skipped = [f for f in ("uri", "date-time") if f not in fc.checkers]
    if skipped:
        print(f"  note: formats {skipped} are not checked (pip install -r scripts/requirements.txt)")
    v = cls(schema, format_checker=fc)
    problems = []
    for err in sorted(v.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        problems.append(f"{path.name}: {where}: {err.message} (schema {'/'.join(map(str, err.absolute_schema_path))})")
    if isinstance(doc, dict):
        print(f"  version {doc.get('version')!r}, $schema {doc.get('$schema')!r}")
        for i, run in enumerate(doc.get("runs") or []):
            drv = ((run.get("tool") or {}).get("driver") or {})
            rules = [r.get("id") for r in drv.get("rules") or []]
            results = run.get("results") or []
            print(f"  run {i}: tool {drv.get('name')} {drv.get('version')}, rules {rules}, {len(results)} results")
            for r in results:
                loc = ""
                locs = r.get("locations") or []
                if locs:
                    loc = (((locs[0].get("physicalLocation") or {}).get("artifactLocation") or {}).get("uri") or "")
                print(f"    [{r.get('level', 'warning')}] {r.get('ruleId')}: "
                      f"{((r.get('message') or {}).get('text') or '')[:160]}" + (f" @ {loc}" if loc else ""))
    print(f"  schema validation: {'OK' if not problems else f'{len(problems)} errors'}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path, help="georob audit output folder")
    a = ap.parse_args()
    problems: list[str] = []
    for name, fn in (("junit.xml", check_junit), ("report.sarif", check_sarif)):
        p = a.dir / name
        if not p.is_file():
            problems.append(f"{name}: missing in {a.dir}")
            continue
        problems += fn(p)
    for p in problems:
        print(f"  - {p}")
    print(f"report formats {'OK' if not problems else f'FAIL ({len(problems)} problems)'}: "
          f"junit.xml parsed by junitparser, report.sarif validated against SARIF 2.1.0")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
