"""A corpus as documents of sentences, for sentence-pair pretraining (BERT's NSP) and the labelled
tasks derived from Tiny Shakespeare.

Tiny Shakespeare is one text of speeches: a line `NAME:` then the speech's lines, speeches
separated by blank lines; it marks no plays, acts or scenes. It is cut deterministically:

- a speech's text is its lines joined by spaces (the speaker's name is kept apart);
- a document is a run of `SPEECHES_PER_DOCUMENT` consecutive speeches (20: about 60 sentences),
  a stand-in for a scene: speeches of one document follow each other, speeches of different
  documents are far apart in the plays;
- sentences end after ".", "!" or "?" followed by a space (the punctuation stays with the
  sentence); a speech's last sentence ends with the speech.

Any other corpus: each document is split into sentences the same way, its lines joined by spaces
(a directory of .txt files: one document per file; a single text: blocks between blank lines).
Documents keep their corpus order, so the last `val_fraction` of them validate (nanoGPT's
first-90% split, by documents).
"""

import dataclasses
import re

from jaxformer.data.corpus import Corpus

SPEECHES_PER_DOCUMENT = 20
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SPEAKER = re.compile(r"^[A-Za-z][A-Za-z ',.&-]*:$")  # "Senators, &C:" too


@dataclasses.dataclass(frozen=True)
class Speech:
    speaker: str  # as written, without the colon ("First Citizen")
    text: str  # the speech's lines joined by single spaces
    index: int  # its place in the corpus, from 0


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` (whitespace runs collapsed): cut after . ! ? followed by whitespace."""
    return [s for s in (part.strip() for part in _SENTENCE_END.split(" ".join(text.split()))) if s]


def speeches(text: str) -> list[Speech]:
    """The speeches of a play script laid out as Tiny Shakespeare is (see the module docstring).
    Blocks whose first line is not `NAME:` are skipped."""
    found = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.strip().split("\n") if line.strip()]
        if len(lines) < 2 or not _SPEAKER.match(lines[0]):
            continue
        found.append(Speech(lines[0][:-1], " ".join(lines[1:]), len(found)))
    return found


def is_script(text: str) -> bool:
    """Whether a text reads as speeches (most blocks start with `NAME:`)."""
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    return bool(blocks) and len(speeches(text)) >= 0.9 * len(blocks)


def document_sentences(corpus: Corpus) -> list[list[str]]:
    """The corpus as documents, each a list of sentences (see the module docstring)."""
    if corpus.is_single_text and is_script(corpus.text):
        found = speeches(corpus.text)
        groups = [found[i:i + SPEECHES_PER_DOCUMENT]
                  for i in range(0, len(found), SPEECHES_PER_DOCUMENT)]
        documents = [[s for speech in group for s in split_sentences(speech.text)]
                     for group in groups]
    elif corpus.is_single_text:
        documents = [split_sentences(block) for block in re.split(r"\n\s*\n", corpus.text)]
    else:
        documents = [split_sentences(doc) for doc in corpus.documents]
    return [doc for doc in documents if doc]
