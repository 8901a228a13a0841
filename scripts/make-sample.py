#!/usr/bin/env python3
"""Build the bundled sample data set, data/sample/verses.parquet (+ tiny.parquet).

Every verse of the 66-book Protestant canon that is non-empty in both the
World English Bible (WEB, modern wording) and the King James Version (KJV,
archaic wording), aligned by (book, chapter, verse). The texts come from the
Debian packages sword-text-web and sword-text-kjv (SWORD modules, read with
the `pysword` package) and are cleaned to plain text: footnotes,
cross-references, headings, Psalm superscriptions, KJV book subscriptions,
speaker labels (Song of Solomon), Strong's numbers and all other markup are
removed. The words of the verses themselves are not changed.

Columns, in order:
    id         int64   0..N-1 in canonical book/chapter/verse order
    label      int32   book index, 0 (Genesis) .. 65 (Revelation)
    book       utf8    book name, e.g. "1 Samuel"
    reference  utf8    e.g. "Genesis 1:1"
    text       utf8    WEB wording
    kjv        utf8    KJV wording

The output is deterministic: running this twice gives the same bytes. A file
whose bytes would not change is left untouched.

Normally run through scripts/make-sample.sh, which installs the Debian
packages and the virtualenv first. Run inside the project venv:
    .venv/bin/python scripts/make-sample.py [--out-dir DIR] [--sword-path DIR] [--audit]
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

KJV_MODULE = "engKJV2006eb"  # Debian sword-text-kjv
WEB_MODULE = "engWEB2015eb"  # Debian sword-text-web

ROW_GROUP_SIZE = 4096
TINY_STEP = 60  # tiny.parquet: every 60th verse, so 60 of the 66 books (labels) are present

# (OSIS id, name) in canonical order; the index is the label.
BOOKS = [
    ("Gen", "Genesis"), ("Exod", "Exodus"), ("Lev", "Leviticus"), ("Num", "Numbers"),
    ("Deut", "Deuteronomy"), ("Josh", "Joshua"), ("Judg", "Judges"), ("Ruth", "Ruth"),
    ("1Sam", "1 Samuel"), ("2Sam", "2 Samuel"), ("1Kgs", "1 Kings"), ("2Kgs", "2 Kings"),
    ("1Chr", "1 Chronicles"), ("2Chr", "2 Chronicles"), ("Ezra", "Ezra"), ("Neh", "Nehemiah"),
    ("Esth", "Esther"), ("Job", "Job"), ("Ps", "Psalms"), ("Prov", "Proverbs"),
    ("Eccl", "Ecclesiastes"), ("Song", "Song of Solomon"), ("Isa", "Isaiah"), ("Jer", "Jeremiah"),
    ("Lam", "Lamentations"), ("Ezek", "Ezekiel"), ("Dan", "Daniel"), ("Hos", "Hosea"),
    ("Joel", "Joel"), ("Amos", "Amos"), ("Obad", "Obadiah"), ("Jonah", "Jonah"),
    ("Mic", "Micah"), ("Nah", "Nahum"), ("Hab", "Habakkuk"), ("Zeph", "Zephaniah"),
    ("Hag", "Haggai"), ("Zech", "Zechariah"), ("Mal", "Malachi"),
    ("Matt", "Matthew"), ("Mark", "Mark"), ("Luke", "Luke"), ("John", "John"),
    ("Acts", "Acts"), ("Rom", "Romans"), ("1Cor", "1 Corinthians"), ("2Cor", "2 Corinthians"),
    ("Gal", "Galatians"), ("Eph", "Ephesians"), ("Phil", "Philippians"), ("Col", "Colossians"),
    ("1Thess", "1 Thessalonians"), ("2Thess", "2 Thessalonians"), ("1Tim", "1 Timothy"),
    ("2Tim", "2 Timothy"), ("Titus", "Titus"), ("Phlm", "Philemon"), ("Heb", "Hebrews"),
    ("Jas", "James"), ("1Pet", "1 Peter"), ("2Pet", "2 Peter"), ("1John", "1 John"),
    ("2John", "2 John"), ("3John", "3 John"), ("Jude", "Jude"), ("Rev", "Revelation"),
]
assert len(BOOKS) == 66

# --- cleaning -----------------------------------------------------------------

# The end of a book: anything after it in the last verse's entry (the WEB
# module appends its glossary there) is not verse text.
_BOOK_END = re.compile(r'<div\b[^>]*\beID="[^"]*"[^>]*\btype="book"[^>]*/>|'
                       r'<div\b[^>]*\btype="book"[^>]*\beID="[^"]*"[^>]*/>')
# Elements dropped together with their content. They do not nest.
_DROP_WITH_CONTENT = [
    re.compile(r"<note\b[^>]*>.*?</note>", re.S),        # footnotes, cross-references
    re.compile(r"<title\b[^>]*>.*?</title>", re.S),      # headings, superscriptions, subscriptions
    re.compile(r"<speaker\b[^>]*>.*?</speaker>", re.S),  # "Beloved", "Lover" (WEB Song of Solomon)
]
_SELF_CLOSING_DROP = re.compile(r"<(?:note|title|speaker)\b[^>]*/>")
# Block-level tags separate words; inline tags (w, transChange, divineName, q,
# seg, foreign, name, hi, ...) do not.
_BLOCK_TAG = re.compile(r"</?(?:l|lg|lb|p|div|chapter|list|item|milestone|verse|br)\b[^>]*>")
_ANY_TAG = re.compile(r"<[^>]*>")
# USFM leftovers in the KJV module, e.g. `\nd <w ...>LORD</w></divineName>`.
_USFM = re.compile(r"\\[a-z]+[0-9]*\*?\s?")
# Removed elements leave this marker: it becomes a space, or nothing where
# the element sat right before punctuation or right after an opening quote.
_GAP = "\x00"
_GAP_BEFORE_PUNCT = re.compile(r"\s*\x00[\s\x00]*(?=[,.;:!?’”)\]])")
_GAP_AFTER_OPEN = re.compile(r"(?<=[“‘(\[])[\s\x00]*\x00\s*")
_WS = re.compile(r"\s+")


def clean(raw: str) -> str:
    m = _BOOK_END.search(raw)
    if m:
        raw = raw[: m.start()]
    for rx in _DROP_WITH_CONTENT:
        # Not simply deleted: the WEB module puts footnotes between words with
        # no whitespace around them ("God<note>..</note>created").
        raw = rx.sub(_GAP, raw)
    raw = _SELF_CLOSING_DROP.sub(_GAP, raw)
    raw = _USFM.sub("", raw)
    raw = _BLOCK_TAG.sub(" ", raw)
    raw = _ANY_TAG.sub("", raw)
    text = html.unescape(raw).replace("¶", " ")
    text = _GAP_BEFORE_PUNCT.sub("", text)
    text = _GAP_AFTER_OPEN.sub("", text)
    text = text.replace(_GAP, " ")
    return _WS.sub(" ", text).strip()


# --- reading ------------------------------------------------------------------

def open_bibles(sword_path: str):
    from pysword.modules import SwordModules

    conf_dir = Path(sword_path) / "mods.d"
    if not conf_dir.is_dir():
        sys.exit(f"error: no SWORD modules at {sword_path} (install the Debian packages "
                 "sword-text-kjv and sword-text-web, or run scripts/make-sample.sh)")
    modules = SwordModules(sword_path)
    found = modules.parse_modules()
    for key, pkg in ((KJV_MODULE, "sword-text-kjv"), (WEB_MODULE, "sword-text-web")):
        if key not in found:
            sys.exit(f"error: SWORD module {key} not found under {sword_path} (Debian package {pkg})")
    return (cache_blocks(modules.get_bible_from_module(KJV_MODULE)), found[KJV_MODULE],
            cache_blocks(modules.get_bible_from_module(WEB_MODULE)), found[WEB_MODULE])


def cache_blocks(bible):
    """pysword decompresses a module's whole block (here: a book) for every
    verse read; keep the last few blocks. Only a speed-up: output is the same."""
    import functools

    if hasattr(bible, "_decompressed_text"):
        bible._decompressed_text = functools.lru_cache(maxsize=4)(bible._decompressed_text)
    return bible


def book_structures(bible):
    books = bible.get_structure().get_books()
    return {b.osis_name: b for t in ("ot", "nt") for b in books.get(t, [])}


def verse_raw(bible, book, chapter: int, verse: int) -> str:
    if chapter > book.num_chapters or verse > book.chapter_lengths[chapter - 1]:
        return ""
    return bible.get(books=[book.name], chapters=[chapter], verses=[verse], clean=False)


def collect(sword_path: str, audit: bool):
    kjv, kjv_conf, web, web_conf = open_bibles(sword_path)
    kjv_books, web_books = book_structures(kjv), book_structures(web)
    rows = []
    dropped = []  # (reference, which side was empty)
    for label, (osis, name) in enumerate(BOOKS):
        kb, wb = kjv_books[osis], web_books[osis]
        for chapter in range(1, max(kb.num_chapters, wb.num_chapters) + 1):
            n_k = kb.chapter_lengths[chapter - 1] if chapter <= kb.num_chapters else 0
            n_w = wb.chapter_lengths[chapter - 1] if chapter <= wb.num_chapters else 0
            for verse in range(1, max(n_k, n_w) + 1):
                ref = f"{name} {chapter}:{verse}"
                k_text = clean(verse_raw(kjv, kb, chapter, verse))
                w_text = clean(verse_raw(web, wb, chapter, verse))
                if not k_text or not w_text:
                    if k_text or w_text:
                        dropped.append((ref, "WEB empty" if k_text else "KJV empty"))
                    continue
                rows.append((label, name, ref, w_text, k_text))
    if audit:
        run_audit(rows, dropped)
    return rows, dropped, kjv_conf, web_conf


def run_audit(rows, dropped):
    """Print anything that looks like left-over markup, for a human to check."""
    suspicious = re.compile(r"[<>\\&¶*+]|\s[,.;:!?]|\s{2}|strong:|[HG]\d{3,4}\b|lemma")
    print(f"audit: {len(rows)} rows, {len(dropped)} verses dropped (empty on one side):")
    for ref, why in dropped:
        print(f"  dropped {ref}: {why}")
    hits = 0
    for _, _, ref, w, k in rows:
        for side, t in (("WEB", w), ("KJV", k)):
            if suspicious.search(t):
                hits += 1
                if hits <= 40:
                    print(f"  check {side} {ref}: {t}")
    print(f"audit: {hits} texts matched the suspicious-character pattern")
    by_len = sorted(rows, key=lambda r: len(r[3]) + len(r[4]))
    for _, _, ref, w, k in by_len[:5] + by_len[-3:]:
        print(f"  length {len(w)}/{len(k)} {ref}\n    WEB: {w}\n    KJV: {k}")


# --- writing ------------------------------------------------------------------

def build_table(rows):
    import pyarrow as pa

    schema = pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("book", pa.string(), nullable=False),
        pa.field("reference", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("kjv", pa.string(), nullable=False),
    ])
    cols = list(zip(*rows)) if rows else [[]] * 5
    return pa.Table.from_arrays([
        pa.array(range(len(rows)), pa.int64()),
        pa.array(cols[0], pa.int32()),
        pa.array(cols[1], pa.string()),
        pa.array(cols[2], pa.string()),
        pa.array(cols[3], pa.string()),
        pa.array(cols[4], pa.string()),
    ], schema=schema)


def parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(
        table, buf,
        row_group_size=ROW_GROUP_SIZE,
        compression="zstd",
        compression_level=9,
        use_dictionary=["book"],
        write_statistics=True,
        data_page_version="1.0",
        version="2.6",
    )
    return buf.getvalue()


def write_if_changed(path: Path, data: bytes) -> str:
    if path.exists() and path.read_bytes() == data:
        return "unchanged"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return "written"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=str(REPO / "data" / "sample"))
    ap.add_argument("--sword-path", default=os.environ.get("SWORD_PATH", "/usr/share/sword"))
    ap.add_argument("--audit", action="store_true", help="print dropped verses and texts that need a look")
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq
    import pysword

    rows, dropped, kjv_conf, web_conf = collect(args.sword_path, args.audit)
    if not rows:
        sys.exit("error: no verses read")
    table = build_table(rows)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, t in (("verses.parquet", table), ("tiny.parquet", table.take(list(range(0, table.num_rows, TINY_STEP))))):
        data = parquet_bytes(t)
        status = write_if_changed(out / name, data)
        back = pq.read_table(out / name)
        assert back.schema.equals(t.schema) and back.num_rows == t.num_rows, name
        print(f"{out / name}: {t.num_rows} rows, {len(data)} bytes, "
              f"sha256 {hashlib.sha256(data).hexdigest()} ({status})")
    print(f"books: {len(set(r[0] for r in rows))}, verses dropped (empty on one side): {len(dropped)}"
          + (" - " + ", ".join(f"{r} ({w})" for r, w in dropped) if dropped else ""))
    print(f"sources: {KJV_MODULE} {kjv_conf.get('version', '?')}, {WEB_MODULE} {web_conf.get('version', '?')}; "
          f"pysword {getattr(pysword, '__version__', '?')}, pyarrow {pa.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
