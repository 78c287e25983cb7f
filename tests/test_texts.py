"""``texts``: unlabeled text from Reuters-21578 SGML, plain text, JSON Lines, .spacy corpora
and folders of them; the rules that drop documents, and their counts."""

import json

import pytest
from typer.testing import CliRunner

from spacy_hybridner.cli import app
from spacy_hybridner.tools.corpora import CorpusFormatError, write_texts

from conftest import TRAIN_DATA, write_corpus

# Hand-written in the layout of Reuters-21578 (not its text): a normal article (wrapped
# lines, paragraphs, references, signature), one without a BODY, a table, an all-capitals
# bulletin, and the first article again, wrapped otherwise, under another NEWID.
SGML = """<!DOCTYPE lewis SYSTEM "lewis.dtd">
<REUTERS TOPICS="YES" LEWISSPLIT="TRAIN" CGISPLIT="TRAINING-SET" OLDID="901" NEWID="11">
<DATE> 3-MAR-1987 10:00:00.00</DATE>
<TOPICS><D>acq</D></TOPICS>
<UNKNOWN>&#5;&#5;&#5;F
&#22;&#22;&#1;f0001&#31;reute</UNKNOWN>
<TEXT>&#2;
<TITLE>ACME &amp; SONS TO BUY &lt;WIDGET CO></TITLE>
<DATELINE>    SPRINGFIELD, March 3 - </DATELINE><BODY>Acme and Sons Inc said it agreed to buy
&lt;Widget Co> for 12 mln dlrs in cash, its first
purchase this year.
    The company said Widget's sales of B&amp;W
products&#127; rose 5 pct last year.
 Reuter
&#3;</BODY></TEXT>
</REUTERS>
<REUTERS TOPICS="NO" LEWISSPLIT="TRAIN" CGISPLIT="TRAINING-SET" OLDID="902" NEWID="12">
<DATE> 3-MAR-1987 10:01:00.00</DATE>
<TEXT TYPE="BRIEF">&#2;
******<TITLE>ACME SEES HIGHER PROFIT IN 1987
</TITLE>
&#3;

</TEXT>
</REUTERS>
<REUTERS TOPICS="YES" LEWISSPLIT="TEST" CGISPLIT="TRAINING-SET" OLDID="903" NEWID="13">
<TEXT>&#2;
<TITLE>WIDGET CO &lt;WDG> 4TH QTR NET</TITLE>
<DATELINE>    SPRINGFIELD, March 3 - </DATELINE><BODY>Shr 23 cts vs 32 cts
    Net 1,234,000 vs 1,567,000
    Revs 12.3 mln vs 11.2 mln
    NOTE: Widget Co is a unit of Acme and Sons Inc. REUTER
&#3;</BODY></TEXT>
</REUTERS>
<REUTERS TOPICS="NO" LEWISSPLIT="TEST" CGISPLIT="TRAINING-SET" OLDID="904" NEWID="14">
<TEXT>&#2;
<TITLE>SPRINGFIELD PORT SHIPMENTS</TITLE>
<DATELINE>    SPRINGFIELD, March 3 - </DATELINE><BODY>THE FOLLOWING SHIPMENTS WERE REGISTERED AT THE PORT OF
SPRINGFIELD DURING THE WEEK, THE HARBOUR OFFICE SAID.
    NO DELAYS WERE REPORTED AT ANY OF THE BERTHS THIS WEEK.
 REUTER
&#3;</BODY></TEXT>
</REUTERS>
<REUTERS TOPICS="YES" LEWISSPLIT="TRAIN" CGISPLIT="TRAINING-SET" OLDID="905" NEWID="15">
<TEXT>&#2;
<TITLE>ACME &amp; SONS TO BUY &lt;WIDGET CO></TITLE>
<DATELINE>    SPRINGFIELD, March 3 - </DATELINE><BODY>Acme and Sons Inc said it agreed
to buy &lt;Widget Co> for 12 mln dlrs in cash,
its first purchase this year.
    The company said Widget's sales of B&amp;W products
rose 5 pct last year.
 REUTER
&#3;</BODY></TEXT>
</REUTERS>
"""
ARTICLE_11 = (
    "ACME & SONS TO BUY <WIDGET CO>\n"
    "Acme and Sons Inc said it agreed to buy <Widget Co> for 12 mln dlrs in cash, its first purchase this year.\n"
    "The company said Widget's sales of B&W products rose 5 pct last year."
)
REUTERS_DROPPED = {"no_body": 1, "empty": 0, "table": 1, "capitals": 1, "duplicate": 1}


def write_reuters(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reut2-000.sgm").write_bytes(SGML.encode("latin-1"))
    return folder


def read_records(path):
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()]


def test_reuters_articles_become_title_and_paragraphs_and_the_rules_drop_the_rest(tmp_path):
    out = tmp_path / "text.jsonl"
    counts = write_texts([write_reuters(tmp_path / "reuters")], out)
    assert read_records(out) == [{"id": "reuters:11", "text": ARTICLE_11}]
    words = len(ARTICLE_11.split())
    source = {"docs": 1, "words": words, "dropped": REUTERS_DROPPED}
    assert counts == {"docs": 1, "words": words, "sources": {str(tmp_path / "reuters"): source}}


def test_plain_text_is_a_document_per_line_and_jsonl_its_text_field_duplicates_across_files(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    lines = ["\ufeffAngela Merkel visited Paris .", "", "   ", "Apple hired Tim Cook .", "apple  hired tim cook ."]
    (folder / "notes.txt").write_text("\n".join(lines) + "\r\n", encoding="utf8")
    jsonl = [
        {"id": 7, "text": "Siemens opened a plant in Munich .", "lang": "en"},
        {"text": "  "},
        {"text": "Angela Merkel visited\nParis ."},
        {"text": "IBM bought Red Hat ."},
    ]
    (folder / "more.jsonl").write_text(
        "\n".join(map(json.dumps, jsonl[:2])) + "\n\n" + "\n".join(map(json.dumps, jsonl[2:]))
    )
    out = tmp_path / "text.jsonl"
    counts = write_texts([folder / "notes.txt", folder / "more.jsonl"], out)
    assert read_records(out) == [
        {"id": "mine/notes.txt:1", "text": "Angela Merkel visited Paris ."},
        {"id": "mine/notes.txt:4", "text": "Apple hired Tim Cook ."},
        {"id": "mine/more.jsonl:1", "text": "Siemens opened a plant in Munich ."},
        {"id": "mine/more.jsonl:5", "text": "IBM bought Red Hat ."},
    ]
    assert counts["sources"][str(folder / "notes.txt")] == {
        "docs": 2,
        "words": 10,
        "dropped": {"empty": 0, "duplicate": 1},
    }
    assert counts["sources"][str(folder / "more.jsonl")] == {
        "docs": 2,
        "words": 12,
        "dropped": {"empty": 1, "duplicate": 1},
    }
    assert (counts["docs"], counts["words"]) == (4, 22)


def test_spacy_corpora_are_written_whole_and_make_later_copies_duplicates(tmp_path):
    train = write_corpus(tmp_path / "train.spacy", TRAIN_DATA + TRAIN_DATA[:1])
    copy = tmp_path / "copy.txt"
    copy.write_text(TRAIN_DATA[0][0].upper() + "\nA new text .\n", encoding="utf8")
    out = tmp_path / "text.jsonl"
    counts = write_texts([train, copy], out)
    ids = [r["id"] for r in read_records(out)]
    assert ids == [*[f"{tmp_path.name}/train:{i}" for i in range(len(TRAIN_DATA) + 1)], f"{tmp_path.name}/copy.txt:2"]
    assert counts["sources"][str(train)]["dropped"] == {"empty": 0}
    assert counts["sources"][str(copy)]["dropped"] == {"empty": 0, "duplicate": 1}


def test_a_folder_gives_its_files_sorted_by_name(tmp_path):
    folder = tmp_path / "mixed"
    write_reuters(folder)
    write_corpus(folder / "train.spacy")
    (folder / "a.txt").write_text("Sundar Pichai visited Tokyo .\n", encoding="utf8")
    (folder / "b.jsonl").write_text(json.dumps({"text": "Amazon opened an office in Madrid ."}) + "\n")
    (folder / "README.md").write_text("not a source\n")
    out = tmp_path / "text.jsonl"
    counts = write_texts([folder], out)
    ids = [r["id"] for r in read_records(out)]
    assert ids == [
        "mixed/a.txt:1",
        "mixed/b.jsonl:1",
        "reuters:11",
        *[f"mixed/train:{i}" for i in range(len(TRAIN_DATA))],
    ]
    assert counts["sources"][str(folder)]["dropped"] == REUTERS_DROPPED
    assert counts["docs"] == 3 + len(TRAIN_DATA)


def test_cli_prints_a_counts_line_per_source(tmp_path):
    reuters = write_reuters(tmp_path / "reuters")
    notes = tmp_path / "notes.txt"
    notes.write_text("Apple hired Tim Cook .\nApple hired Tim Cook .\n", encoding="utf8")
    out = tmp_path / "text.jsonl"
    result = CliRunner().invoke(app, ["texts", str(reuters), str(notes), "-o", str(out)])
    assert result.exit_code == 0, result.output
    words = len(ARTICLE_11.split())
    assert result.output.splitlines() == [
        f"{reuters}: 1 documents kept, {words} words; dropped: 1 without a body, 0 empty, 1 tables, "
        "1 all-capitals, 1 duplicates",
        f"{notes}: 1 documents kept, 5 words; dropped: 0 empty, 1 duplicates",
        f"2 documents, {words + 5} words -> {out}",
    ]


def test_held_out_splits_are_refused_in_a_folder_too(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_corpus(folder / "train.spacy")
    write_corpus(folder / "dev.spacy")
    out = tmp_path / "text.jsonl"
    refused = CliRunner().invoke(app, ["texts", str(folder), "-o", str(out)])
    assert refused.exit_code == 2 and "dev or test split" in refused.output
    assert not out.exists()
    allowed = CliRunner().invoke(app, ["texts", str(folder), "-o", str(out), "--allow-held-out"])
    assert allowed.exit_code == 0, allowed.output
    # a .spacy corpus is written whole: dev.spacy repeats train.spacy's texts here
    assert f"{2 * len(TRAIN_DATA)} documents kept" in allowed.output
    assert len(read_records(out)) == 2 * len(TRAIN_DATA)


def test_bad_sources_are_refused_and_nothing_is_written(tmp_path):
    out = tmp_path / "text.jsonl"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine ."}\n{"text": 3}\n')
    with pytest.raises(CorpusFormatError, match="bad.jsonl, line 2"):
        write_texts([bad], out)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    (tmp_path / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(CorpusFormatError, match="line 1: bytes that are not valid UTF-8"):
        write_texts([tmp_path / "latin.txt"], out)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="not a file that texts reads"):
        write_texts([tmp_path / "data.csv"], out)
    sgm = tmp_path / "reut2-000.sgm"
    sgm.write_text("<REUTERS><TEXT></TEXT></REUTERS>\n")
    with pytest.raises(CorpusFormatError, match="without NEWID"):
        write_texts([sgm], out)
    with pytest.raises(ValueError, match="the same document ids"):
        write_texts([tmp_path, tmp_path / "latin.txt"], out)
    result = CliRunner().invoke(app, ["texts", str(tmp_path / "missing.txt"), "-o", str(out)])
    assert result.exit_code == 2 and "not found" in result.output
    assert not out.exists()
