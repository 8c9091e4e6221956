#!/usr/bin/env python3
"""Check that a georob audit's report.html is self-contained and renders without errors.

    .venv/bin/python scripts/check_report_html.py DIR [--screenshot PATH] [--max-kb 400]

DIR is an `georob audit --out DIR` folder; DIR/report.html is checked in two steps.

(a) Static checks (Python only):
    - every <img> has a `data:image/png;base64,...` src whose payload decodes (strict base64) and opens and
      loads as a PNG with PIL;
    - every inline <svg>...</svg> element parses as XML (xml.etree.ElementTree);
    - no external reference at all: no src / href / xlink:href / srcset / poster / data / action attribute and
      no CSS url(...) or @import that points at http:, https:, file: or a protocol-relative `//host` address
      (data: URIs and `#fragment` links are fine; the SVG namespace declaration xmlns="http://www.w3.org/2000/svg"
      is a name, not a reference, and is ignored). Relative paths (e.g. `artifacts/x.png`) are reported too,
      since the report must not depend on files beside it.
(b) Rendering: the report is opened from a file:// URL in headless Chromium (Debian package `chromium`;
    when `chromium` is not on PATH the script runs `apt-get install -y chromium` and says so) with
    `--enable-logging=stderr --v=0`, `--screenshot=PATH --window-size=1200,2400 --hide-scrollbars`
    (and `--no-sandbox` when running as root). Chromium 148 logs every console message as INFO whatever its
    level and does not log failed file:// or http loads at --v=0, so what is opened is a copy of report.html
    (written beside it as .georob-check-PID.html, so relative URLs resolve alike, and deleted afterwards)
    with a small probe <script> at the top of <head> that reports through console.log: console.error and
    failed console.assert, elements whose resource failed to load, CSP violations, <img> elements that did
    not decode, and any non-data: resource fetched. The log is then scanned for those lines, for Chromium's
    own "Uncaught ..." lines, and for "Failed to load resource" / "net::ERR_" lines; Chromium's start-up
    noise (dbus, GPU, ...) is ignored. With --screenshot the PNG is kept (re-encoded, and downscaled with
    PIL until it is under --max-kb, default 400 kB); without it it goes to a temporary file and is deleted.

Prints every problem found, then a one-line verdict (`report.html OK: ...` / `report.html FAIL: ...`).
Exit status: 0 when both steps pass, 1 on any problem, 2 on usage errors (missing DIR/report.html, chromium
not installable). --no-browser skips step (b).
"""
from __future__ import annotations

import argparse
import base64
import binascii
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

# Attributes whose value is a URL the browser would fetch or navigate to.
URL_ATTRS = {"src", "href", "xlink:href", "srcset", "poster", "data", "action", "formaction",
             "background", "cite", "longdesc", "manifest", "ping", "codebase", "archive"}
EXTERNAL = re.compile(r"^\s*(https?:|file:|ftp:|//)", re.I)
CSS_URL = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.I | re.S)
CSS_IMPORT = re.compile(r"@import\s+(?:url\()?\s*['\"]?([^'\"\s);]+)", re.I)
SVG_BLOCK = re.compile(r"<svg\b.*?</svg\s*>", re.I | re.S)


def url_problem(where: str, url: str) -> str | None:
    """A description of why `url` breaks self-containment, or None when it is fine."""
    u = url.strip()
    if not u or u.startswith("#") or u.lower().startswith("data:") or u.lower().startswith("javascript:"):
        return None
    if EXTERNAL.match(u):
        return f"{where}: external reference {u[:120]!r}"
    if u.lower().startswith(("mailto:", "about:")):
        return None
    return f"{where}: reference to a file beside the report {u[:120]!r}"


class Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.imgs: list[tuple[int, str | None]] = []  # (line, src)
        self.problems: list[str] = []
        self.n_svg = 0
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        line = self.getpos()[0]
        if tag == "img":
            self.imgs.append((line, dict(attrs).get("src")))
        if tag == "svg":
            self.n_svg += 1
        if tag == "style":
            self._in_style = True
        for name, value in attrs:
            if value is None:
                continue
            name = name.lower()
            if name in URL_ATTRS:
                vals = [v.strip().split()[0] for v in value.split(",") if v.strip()] if name == "srcset" else [value]
                for v in vals:
                    p = url_problem(f"line {line} <{tag} {name}>", v)
                    if p:
                        self.problems.append(p)
            if name == "style":
                self.check_css(f"line {line} <{tag} style>", value)

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.check_css(f"line {self.getpos()[0]} <style>", data)

    def check_css(self, where: str, css: str) -> None:
        for m in CSS_URL.finditer(css):
            p = url_problem(where + " url()", m.group(2))
            if p:
                self.problems.append(p)
        for m in CSS_IMPORT.finditer(css):
            p = url_problem(where + " @import", m.group(1))
            if p:
                self.problems.append(p)


def check_static(html: str) -> tuple[list[str], str]:
    problems: list[str] = []
    sc = Scanner()
    sc.feed(html)
    sc.close()
    problems += sc.problems

    png_ok = 0
    for line, src in sc.imgs:
        prefix = "data:image/png;base64,"
        if not src or not src.startswith(prefix):
            problems.append(f"line {line} <img>: src is not a data:image/png;base64 URI: {str(src)[:60]!r}")
            continue
        try:
            raw = base64.b64decode(src[len(prefix):].strip(), validate=True)
        except (binascii.Error, ValueError) as e:
            problems.append(f"line {line} <img>: base64 payload does not decode: {e}")
            continue
        try:
            with Image.open(io.BytesIO(raw)) as im:
                fmt = im.format
                im.load()
            if fmt != "PNG":
                problems.append(f"line {line} <img>: payload is {fmt}, not PNG")
                continue
        except Exception as e:  # PIL raises several types
            problems.append(f"line {line} <img>: payload is not a readable PNG: {e}")
            continue
        png_ok += 1

    svgs = SVG_BLOCK.findall(html)
    svg_ok = 0
    for i, block in enumerate(svgs):
        line = html[: html.find(block)].count("\n") + 1
        try:
            ET.fromstring(block)
            svg_ok += 1
        except ET.ParseError as e:
            problems.append(f"line {line} <svg> #{i + 1}: not well-formed XML: {e}")
    if len(svgs) != sc.n_svg:
        problems.append(f"found {sc.n_svg} <svg> start tags but {len(svgs)} complete <svg>...</svg> blocks")

    summary = f"{png_ok}/{len(sc.imgs)} PNG images, {svg_ok}/{len(svgs)} SVGs"
    return problems, summary


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    print("chromium is not on PATH: installing the Debian package with `apt-get install -y chromium` ...",
          flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        # The package lists may be missing on a fresh container.
        subprocess.run(["apt-get", "update"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    p = shutil.which("chromium")
    if r.returncode != 0 or not p:
        print(r.stdout[-2000:], file=sys.stderr)
        raise SystemExit("error: could not install chromium (apt-get install -y chromium failed)")
    print(f"installed chromium: {p}", flush=True)
    return p


# Chromium 148 writes every console message at INFO ("[pid:tid:time:INFO:CONSOLE:4] "text", source: url (4)",
# older builds "CONSOLE(4)"), whatever its level, and it does not log failed file:// or http loads at --v=0.
# So the page is opened with a small probe script injected at the top of <head> that reports, through
# console.log with the MARK prefix: console.error / failed console.assert calls, uncaught errors and promise
# rejections (uncaught errors Chromium logs itself, as "Uncaught ..."), elements whose resource failed to load (capture-phase "error" events), CSP violations, <img>
# elements that did not decode, and every non-data: resource the page fetched (Resource Timing), plus a
# final "loaded" line proving the load event fired. The probed copy is written next to report.html (so
# relative URLs resolve the same way) and deleted afterwards; the report itself is not modified.
MARK = "GEOROB-CHECK"
PROBE = """<script>(function(){var L=console.log.bind(console),M='%s ';
function s(a){return Array.prototype.map.call(a,function(x){try{return typeof x==='string'?x:JSON.stringify(x)}catch(e){return String(x)}}).join(' ')}
console.error=function(){L(M+'console.error: '+s(arguments))};
console.assert=function(c){if(!c)L(M+'console.error: assertion failed: '+s(Array.prototype.slice.call(arguments,1)))};
window.addEventListener('error',function(e){var t=e.target;
 if(t&&t!==window&&t.tagName){t.georobFailed=1;L(M+'failed resource load: <'+t.tagName.toLowerCase()+'> '+String(t.currentSrc||t.src||t.href||'').slice(0,200))}},true);
window.addEventListener('unhandledrejection',function(e){L(M+'console.error: unhandled rejection: '+e.reason)});
document.addEventListener('securitypolicyviolation',function(e){L(M+'console.error: CSP violation: '+e.violatedDirective+' '+e.blockedURI)});
window.addEventListener('load',function(){var im=document.images,n=0;
 for(var i=0;i<im.length;i++){if(im[i].georobFailed){}else if(!im[i].complete||im[i].naturalWidth===0){L(M+'failed resource load: <img> #'+i+' did not decode: '+String(im[i].src).slice(0,80))}else{n++}}
 performance.getEntriesByType('resource').forEach(function(r){if(!/^data:/.test(r.name))L(M+'failed resource load: page fetched '+r.name)});
 L(M+'loaded: '+n+'/'+im.length+' images decoded, '+document.querySelectorAll('svg').length+' svg')});
})();</script>""" % MARK
CONSOLE_MSG = re.compile(r'^"(.*)", source: .* \((\d+)\)$')
CONSOLE = re.compile(r":(?P<level>[A-Z0-9]+):CONSOLE[(:]")
LOAD_FAIL = re.compile(r"Failed to load resource|net::ERR_|Not allowed to load local resource", re.I)


def probed_copy(report: Path) -> Path:
    html = report.read_text(encoding="utf-8")
    m = re.search(r"<head\b[^>]*>", html, re.I)
    at = m.end() if m else 0
    for folder in (report.parent, Path(tempfile.gettempdir())):
        path = folder / f".georob-check-{os.getpid()}.html"
        try:
            path.write_text(html[:at] + PROBE + html[at:], encoding="utf-8")
            return path
        except OSError:
            continue
    raise SystemExit("error: cannot write the probed copy of report.html")


def check_browser(report: Path, shot: Path, timeout: int) -> tuple[list[str], str]:
    chromium = find_chromium()
    ver = subprocess.run([chromium, "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True).stdout.strip()
    profile = tempfile.mkdtemp(prefix="georob-chromium-")
    page = probed_copy(report)
    cmd = [chromium, "--headless", "--disable-gpu", "--enable-logging=stderr", "--v=0",
           f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
           "--disable-extensions", "--disable-background-networking",
           f"--screenshot={shot}", "--window-size=1200,2400", "--hide-scrollbars",
           "--virtual-time-budget=5000"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--no-sandbox")
    cmd.append(page.resolve().as_uri())
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [f"chromium did not finish within {timeout} s"], ver
    finally:
        shutil.rmtree(profile, ignore_errors=True)
        page.unlink(missing_ok=True)
    problems: list[str] = []
    log = (r.stderr or "") + "\n" + (r.stdout or "")
    loaded = None
    for line in log.splitlines():
        m = CONSOLE.search(line)
        text = line.strip()
        if m:
            msg = text.split("] ", 1)[-1]
            mm = CONSOLE_MSG.match(msg)
            if mm:
                # line numbers of the probed copy, shifted back to report.html's
                line_no = int(mm.group(2)) - PROBE.count("\n")
                msg = mm.group(1) + (f" (report.html line {line_no})" if MARK not in mm.group(1) else "")
            if MARK in msg:
                what = msg.split(MARK, 1)[1].strip()
                if what.startswith("loaded:"):
                    loaded = what
                elif what.startswith("failed resource load"):
                    problems.append(what[:300])
                else:
                    problems.append(what[:300])
            elif m.group("level") in ("ERROR", "FATAL") or "Uncaught" in msg or LOAD_FAIL.search(msg):
                problems.append(f"console error: {msg[:300]}")
        elif LOAD_FAIL.search(line) and ("file://" in line or "http" in line):
            problems.append(f"failed resource load: {text[:300]}")
    if loaded is None:
        problems.append("the page's load event was not seen (probe printed nothing)")
    if r.returncode != 0:
        problems.append(f"chromium exited with status {r.returncode}: {log.strip()[-500:]}")
    if not shot.exists() or shot.stat().st_size == 0:
        problems.append("chromium wrote no screenshot")
    return problems, f"{ver} ({loaded or 'not loaded'})"


def shrink_png(path: Path, max_kb: int) -> str:
    """Re-encode (optimize) and downscale the screenshot until it is under max_kb."""
    im = Image.open(path)
    im.load()
    im = im.convert("RGB")
    size0 = im.size
    scale = 1.0
    while True:
        cur = im if scale == 1.0 else im.resize((round(size0[0] * scale), round(size0[1] * scale)),
                                                 Image.LANCZOS)
        buf = io.BytesIO()
        cur.save(buf, format="PNG", optimize=True)
        if buf.tell() <= max_kb * 1024 or scale < 0.2:
            path.write_bytes(buf.getvalue())
            return f"{cur.size[0]}x{cur.size[1]}, {buf.tell() / 1024:.0f} kB"
        scale *= 0.85


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path, help="georob audit output folder holding report.html")
    ap.add_argument("--screenshot", type=Path, help="keep Chromium's screenshot here (PNG)")
    ap.add_argument("--max-kb", type=int, default=400, help="downscale the screenshot below this size (kB)")
    ap.add_argument("--timeout", type=int, default=120, help="seconds to wait for Chromium")
    ap.add_argument("--no-browser", action="store_true", help="static checks only")
    a = ap.parse_args()

    report = a.dir / "report.html"
    if not report.is_file():
        print(f"error: {report} does not exist", file=sys.stderr)
        return 2
    html = report.read_text(encoding="utf-8")
    problems, summary = check_static(html)

    browser = "browser check skipped"
    if not a.no_browser:
        tmpdir = None
        if a.screenshot:
            shot = a.screenshot.resolve()
            shot.parent.mkdir(parents=True, exist_ok=True)
            if shot.exists():
                shot.unlink()
        else:
            tmpdir = tempfile.mkdtemp(prefix="georob-shot-")
            shot = Path(tmpdir) / "report.png"
        bp, ver = check_browser(report, shot, a.timeout)
        problems += bp
        n_console = sum(p.startswith("console") for p in bp)
        n_load = sum(p.startswith("failed resource") for p in bp)
        browser = f"Chromium: {n_console} console errors, {n_load} failed loads, {ver}"
        if a.screenshot and shot.exists() and shot.stat().st_size:
            browser += f"; screenshot {a.screenshot} ({shrink_png(shot, a.max_kb)})"
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)

    for p in problems:
        print(f"  - {p}")
    kb = report.stat().st_size / 1024
    n_ext = sum("reference" in p for p in problems)
    verdict = "OK" if not problems else f"FAIL ({len(problems)} problems)"
    print(f"report.html {verdict}: {kb:.0f} kB, {summary}, {n_ext} external references; {browser}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
