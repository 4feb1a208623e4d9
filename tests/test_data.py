import gzip

import pytest
import torch

from seq2seq.data import bucketed_batches, collate, generate_reversal, read_multi30k, tokenized_multi30k
from seq2seq.errors import DataError
from seq2seq.text import REVERSE_ALPHABET
from seq2seq.vocab import EOS_ID, PAD_ID, SOS_ID

from conftest import MULTI30K_DIR


@pytest.mark.skipif(not MULTI30K_DIR.is_dir(), reason=f"Multi30k not found at {MULTI30K_DIR}")
def test_multi30k_line_counts():
    for split, n in (("train", 29000), ("val", 1014), ("test2016", 1000)):
        de, en = read_multi30k(MULTI30K_DIR, split)
        assert len(de) == len(en) == n
    de, en = read_multi30k(MULTI30K_DIR, "train")
    assert de[0].startswith("Zwei junge weiße Männer") and en[0].startswith("Two young")


def test_missing_files_error_names_files_and_release(tmp_path):
    with pytest.raises(DataError) as e:
        read_multi30k(tmp_path, "val")
    msg = str(e.value)
    assert "val.de.gz" in msg and "val.en.gz" in msg and "github.com/multi30k/dataset" in msg


def test_reads_plain_and_gzip_and_checks_alignment(tmp_path):
    (tmp_path / "val.de").write_text("Ein Hund.\nZwei Katzen.\n", encoding="utf-8")
    with gzip.open(tmp_path / "val.en.gz", "wt", encoding="utf-8") as f:
        f.write("A dog.\nTwo cats.\n")
    assert read_multi30k(tmp_path, "val") == (["Ein Hund.", "Zwei Katzen."], ["A dog.", "Two cats."])
    cache = tmp_path / "tok.json.gz"
    toks = tokenized_multi30k(tmp_path, cache, splits=("val",))
    assert toks["val"]["de"] == [["ein", "hund", "."], ["zwei", "katzen", "."]]
    assert cache.is_file()
    # the cache is read without the data directory
    assert tokenized_multi30k(None, cache, splits=("val",)) == toks
    (tmp_path / "val.de").write_text("Ein Hund.\n", encoding="utf-8")
    with pytest.raises(DataError, match="not aligned"):
        read_multi30k(tmp_path, "val")


def test_reversal_generator_is_seeded_and_well_formed():
    a = generate_reversal(500, 1, 20, 7, REVERSE_ALPHABET)
    assert a == generate_reversal(500, 1, 20, 7, REVERSE_ALPHABET)
    assert a != generate_reversal(500, 1, 20, 8, REVERSE_ALPHABET)
    assert {len(s) for s in a} == set(range(1, 21))
    for s in a:
        text = "".join(s)
        assert text == text.strip() and "  " not in text
        assert set(s) <= set(REVERSE_ALPHABET)


def test_bucketed_batches_cover_every_example_once_and_group_lengths():
    lengths = [(i * 7919) % 40 + 1 for i in range(1000)]
    batches = bucketed_batches(lengths, 32, shuffle=True, seed=3)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert batches == bucketed_batches(lengths, 32, shuffle=True, seed=3)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 5  # sorted inside pools: little padding


def test_collate_pads_and_frames_targets():
    b = collate([[5, 6, 7], [8]], [[9], [10, 11]], [0, 1])
    assert b.src.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]]
    assert b.src_lens.tolist() == [3, 1]
    assert b.tgt.tolist() == [[SOS_ID, 9, EOS_ID, PAD_ID], [SOS_ID, 10, 11, EOS_ID]]
    assert b.n_target_tokens == 5
    assert b.src.dtype == torch.long


def _fake_release(folder, n=3):
    """A tiny Multi30k-shaped release: train, val and test_2016_flickr in German and English."""
    folder.mkdir()
    for stem in ("train", "val", "test_2016_flickr"):
        (folder / f"{stem}.de").write_text("".join(f"Ein Hund {stem} {i}.\n" for i in range(n)), encoding="utf-8")
        (folder / f"{stem}.en").write_text("".join(f"A dog {stem} {i}.\n" for i in range(n)), encoding="utf-8")
    return folder


def test_a_token_cache_gains_the_splits_it_lacks(tmp_path):
    # a one-split command (the corpus statistics) wrote the cache first; training needs all splits
    release, cache = _fake_release(tmp_path / "release"), tmp_path / "tokens.json.gz"
    test_only = tokenized_multi30k(release, cache, splits=("test2016",))
    everything = tokenized_multi30k(release, cache)
    assert set(everything) == {"train", "val", "test2016"}
    assert everything["test2016"] == test_only["test2016"]
    assert everything["train"]["en"][1] == ["a", "dog", "train", "1", "."]
    # read back from the cache alone, without the release files
    assert tokenized_multi30k(None, cache) == everything
    # without the release files, a cache that lacks a split says which and what to pass
    partial = tmp_path / "partial.json.gz"
    tokenized_multi30k(release, partial, splits=("val",))
    with pytest.raises(DataError, match=r"lacks splits \['train', 'test2016'\].*--data-dir"):
        tokenized_multi30k(None, partial)
