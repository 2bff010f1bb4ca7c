#!/usr/bin/env bash
# Regenerates deps_licenses/: the licence texts of every third-party crate
# that the workspace's shipped code links (normal dependencies, Linux
# targets; dev- and build-dependencies, workspace crates and the test
# fixtures under tests/ excluded),
# and deps_licenses/README.md, a table of name, version and declared licence.
#
# Usage: scripts/gen-deps-licenses.sh [OUT_DIR]     (default: deps_licenses)
set -euo pipefail

cd "$(dirname "$0")/.."
out="${1:-deps_licenses}"
triple="$(rustc -vV | sed -n 's/^host: //p')"

cargo metadata --format-version 1 --filter-platform "$triple" >"${TMPDIR:-/tmp}/switchyard-metadata.$$.json"
trap 'rm -f "${TMPDIR:-/tmp}/switchyard-metadata.$$.json"' EXIT

python3 - "${TMPDIR:-/tmp}/switchyard-metadata.$$.json" "$out" "$triple" <<'PY'
import json
import os
import re
import shutil
import sys

meta_path, out, triple = sys.argv[1:4]
with open(meta_path) as f:
    meta = json.load(f)

packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}

# Walk the resolved graph from the shipped workspace members (not the test
# fixtures under tests/) along normal edges.
tests_dir = os.path.join(meta["workspace_root"], "tests") + os.sep
seen = set()
stack = [
    pid for pid in meta["workspace_members"]
    if not packages[pid]["manifest_path"].startswith(tests_dir)
]
while stack:
    pid = stack.pop()
    if pid in seen:
        continue
    seen.add(pid)
    for dep in nodes[pid]["deps"]:
        if any(k["kind"] is None for k in dep["dep_kinds"]):
            stack.append(dep["pkg"])

# Third-party only: workspace and path crates have no source.
third_party = sorted(
    (packages[pid] for pid in seen if packages[pid]["source"] is not None),
    key=lambda p: (p["name"], p["version"]),
)

# LICENSE-MIT, COPYING, NOTICE, UNLICENSE, but also MIT_license and the like.
LICENCE_FILE = re.compile(r"(licen[cs]e|copying|notice|copyright)", re.IGNORECASE)
SOURCE_FILE = re.compile(r"\.(rs|toml|lock|json|ya?ml|sh|py)$", re.IGNORECASE)

# For the few crates that declare a licence but ship no text of it, write the
# standard text with the crate's authors as the copyright holders.
MIT_TEXT = """\
Copyright (c) {holders}

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""
ZLIB_TEXT = """\
Copyright (c) {holders}

This software is provided 'as-is', without any express or implied
warranty. In no event will the authors be held liable for any damages
arising from the use of this software.

Permission is granted to anyone to use this software for any purpose,
including commercial applications, and to alter it and redistribute it
freely, subject to the following restrictions:

1. The origin of this software must not be misrepresented; you must not
   claim that you wrote the original software. If you use this software
   in a product, an acknowledgment in the product documentation would be
   appreciated but is not required.
2. Altered source versions must be plainly marked as such, and must not be
   misrepresented as being the original software.
3. This notice may not be removed or altered from any source distribution.
"""
TEMPLATES = {"MIT": MIT_TEXT, "Zlib": ZLIB_TEXT}


def fallback_text(pkg):
    """The standard text of the first licence in the expression we know."""
    for spdx in re.findall(r"[A-Za-z0-9.+-]+", pkg.get("license") or ""):
        if spdx in TEMPLATES:
            authors = ", ".join(re.sub(r"\s*<[^>]*>", "", a) for a in pkg["authors"])
            holders = authors or f"the {pkg['name']} authors"
            return f"LICENSE-{spdx}.generated", TEMPLATES[spdx].format(holders=holders)
    return None

# Start from an empty directory so that dropped dependencies disappear.
if os.path.isdir(out):
    shutil.rmtree(out)
os.makedirs(out)

rows = []
for pkg in third_party:
    src_dir = os.path.dirname(pkg["manifest_path"])
    files = sorted(
        name for name in os.listdir(src_dir)
        if LICENCE_FILE.search(name) and not SOURCE_FILE.search(name)
        and os.path.isfile(os.path.join(src_dir, name))
    )
    if pkg.get("license_file"):
        declared = os.path.normpath(pkg["license_file"])
        if os.path.isfile(os.path.join(src_dir, declared)) and declared not in files:
            files.append(declared)
    dest = os.path.join(out, f"{pkg['name']}-{pkg['version']}")
    os.makedirs(dest)
    for name in files:
        shutil.copyfile(os.path.join(src_dir, name), os.path.join(dest, os.path.basename(name)))
    if not files and (generated := fallback_text(pkg)):
        name, text = generated
        with open(os.path.join(dest, name), "w") as f:
            f.write(text)
        files.append(name)
        print(f"note: {pkg['name']} {pkg['version']} ships no licence text; wrote {name}", file=sys.stderr)
    licence = pkg.get("license") or (f"see {pkg['license_file']}" if pkg.get("license_file") else "UNKNOWN")
    if not files:
        print(f"warning: {pkg['name']} {pkg['version']} ships no licence file", file=sys.stderr)
    rows.append((pkg["name"], pkg["version"], licence,
                 ", ".join(os.path.basename(n) for n in files) or "(none shipped)"))

with open(os.path.join(out, "README.md"), "w") as f:
    f.write("# Third-party licences\n\n")
    f.write(
        "Every third-party crate compiled into Switchyard's host, SDK and shipped\n"
        f"modules (normal dependencies for `{triple}`), with the licence it declares.\n"
        "Each directory `<name>-<version>/` holds the licence files that the crate\n"
        "ships (`*.generated`: the standard text, written because the crate ships\n"
        "none). Generated by `scripts/gen-deps-licenses.sh` (`make licenses`) from\n"
        "`cargo metadata`; do not edit by hand.\n\n"
    )
    f.write("| crate | version | licence | files |\n")
    f.write("| --- | --- | --- | --- |\n")
    for name, version, licence, files in rows:
        f.write(f"| {name} | {version} | {licence.replace('|', chr(92) + '|')} | {files} |\n")

print(f"{out}: {len(rows)} third-party crates")
PY
