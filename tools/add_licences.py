"""Add the licence of each runtime library a repaired wheel bundles.

    python tools/add_licences.py WHEEL [WHEEL ...]

Run after the repair step (auditwheel, delocate, delvewheel), which copies
the OpenMP runtime into the wheel: a wheel that bundles GNU libgomp
(adamc.libs/libgomp*.so*) gets adamc/_vendor/LICENSE.libgomp.txt (GPLv3
with the GCC Runtime Library Exception), from tools/licences/; a wheel that
bundles no libgomp is left as it is, so the licence ships exactly with the
library (tools/wheelcheck.py checks both ways).  The wheel is rewritten in
place with its RECORD updated.  Standard library only.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
#: (pattern of a bundled library inside the wheel, licence file in
#: tools/licences/, where the licence goes in the wheel)
LICENCES = [(re.compile(r"adamc\.libs/libgomp[^/]*\.so[^/]*"), "LICENSE.libgomp.txt",
             "adamc/_vendor/LICENSE.libgomp.txt")]


def _record_row(name: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def add_licences(path: str) -> list[str]:
    """Add the licences the wheel at ``path`` needs; return what was added."""
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        names = {i.filename for i in infos}
        wanted = [(src, dst) for pattern, src, dst in LICENCES
                  if any(pattern.fullmatch(n) for n in names) and dst not in names]
        if not wanted:
            return []
        record = next(n for n in names if re.fullmatch(r"[^/]+\.dist-info/RECORD", n))
        contents = {i.filename: zf.read(i) for i in infos}
    added = {}
    for src, dst in wanted:
        with open(os.path.join(HERE, "licences", src), "rb") as f:
            added[dst] = f.read()
    rows = [r for r in csv.reader(io.StringIO(contents[record].decode())) if r]
    rows = [r for r in rows if r[0] != record]
    rows += [_record_row(dst, data) for dst, data in added.items()] + [[record, "", ""]]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for info in infos:
            if info.filename != record:
                zf.writestr(info, contents[info.filename])
        for dst, data in added.items():
            zf.writestr(zipfile.ZipInfo(dst, date_time=infos[0].date_time), data,
                        compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(zipfile.ZipInfo(record, date_time=infos[0].date_time), out.getvalue(),
                    compress_type=zipfile.ZIP_DEFLATED)
    os.replace(tmp, path)
    return sorted(added)


def main(argv=None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    for path in paths:
        added = add_licences(path)
        print(f"{os.path.basename(path)}: " + (f"added {' '.join(added)}" if added
                                                else "bundles no library that needs a licence"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
