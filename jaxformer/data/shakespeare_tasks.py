"""Labelled tasks derived offline from Tiny Shakespeare's speeches (`sentences.speeches`), for
fine-tuning an encoder with nothing but the corpus. Each is deterministic.

- `speakers` (sequence classification): which of the `TOP_SPEAKERS` most frequent speakers says
  a speech. Input: the speech's text, no name. 8 classes; the most frequent, GLOUCESTER, says
  17% of them. (Some of the eight share a play, and GLOUCESTER becomes KING RICHARD III.)
- `sentence-starts` (token classification): runs of `WINDOW_WORDS` words with the sentence-ending
  punctuation (. ! ? and the ; : that often end a clause) removed; each word is tagged `B` if it
  begins a sentence, else `O`. Sentence boundaries must be found from the words alone.
- `who-said` (extractive QA): the context is `SPEECHES_PER_CONTEXT` consecutive speeches written
  "NAME: text"; the question is one sentence of one of them; the answer is the name written
  before that speech, as a span of the context.
"""

import collections
import re

from jaxformer.data.sentences import speeches, split_sentences

TOP_SPEAKERS = 8
WINDOW_WORDS = 48
SPEECHES_PER_CONTEXT = 4
_BOUNDARY_PUNCTUATION = re.compile(r"[.!?;:]+")


def speaker_examples(text: str) -> tuple[list[dict], list[str]]:
    """[{"text", "label"}] for the speeches of the most frequent speakers, and the label names
    (most frequent first)."""
    found = speeches(text)
    counts = collections.Counter(s.speaker for s in found)
    names = [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    top = names[:TOP_SPEAKERS]
    return [{"text": s.text, "label": s.speaker} for s in found if s.speaker in top], top


def sentence_start_examples(text: str) -> tuple[list[dict], list[str]]:
    """[{"words", "tags"}]: consecutive windows of words from the speeches, in corpus order."""
    words, tags = [], []
    for speech in speeches(text):
        for sentence in split_sentences(speech.text):
            for i, word in enumerate(_BOUNDARY_PUNCTUATION.sub(" ", sentence).split()):
                words.append(word)
                tags.append("B" if i == 0 else "O")
    examples = [{"words": words[i:i + WINDOW_WORDS], "tags": tags[i:i + WINDOW_WORDS]}
                for i in range(0, len(words) - WINDOW_WORDS + 1, WINDOW_WORDS)]
    return examples, ["O", "B"]


def who_said_examples(text: str) -> tuple[list[dict], list[str]]:
    """[{"question", "context", "answer", "answer_start"}]: for each group of consecutive
    speeches, one question per speech (its longest sentence of at least four words)."""
    found = speeches(text)
    examples = []
    for start in range(0, len(found) - SPEECHES_PER_CONTEXT + 1, SPEECHES_PER_CONTEXT):
        group = found[start:start + SPEECHES_PER_CONTEXT]
        context, name_starts = "", []
        for speech in group:
            name_starts.append(len(context))
            context += f"{speech.speaker}: {speech.text} "
        context = context.rstrip()
        for speech, name_start in zip(group, name_starts):
            sentences = [s for s in split_sentences(speech.text) if len(s.split()) >= 4]
            if sentences:
                examples.append({"question": max(sentences, key=len), "context": context,
                                 "answer": speech.speaker, "answer_start": name_start})
    return examples, []


DERIVED = {
    "tinyshakespeare-speakers": ("classification", speaker_examples),
    "tinyshakespeare-sentence-starts": ("token_classification", sentence_start_examples),
    "tinyshakespeare-who-said": ("span_qa", who_said_examples),
}
