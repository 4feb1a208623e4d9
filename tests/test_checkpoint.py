import json
import os
import shutil

import pytest
import torch

from seq2seq.checkpoint import CARD, VOCAB, WEIGHTS, load_checkpoint
from seq2seq.errors import CheckpointError

from conftest import _vocabs, padded_batch, save_tiny


@pytest.mark.parametrize("half", [False, True])
def test_round_trip_gives_the_same_logits(tmp_path, arch, half):
    model = save_tiny(tmp_path / "ck", arch, half=half, tie_embeddings=(arch == "luong"))
    loaded = load_checkpoint(tmp_path / "ck")
    src, lens = padded_batch([5, 3])
    tgt = torch.randint(4, 19, (2, 6))
    if half:  # what was saved is the float16 rounding of the weights
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
    assert torch.allclose(model(src, lens, tgt), loaded.model(src, lens, tgt), atol=1e-6)
    assert loaded.card["arch"] == arch and not loaded.model.training
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert loaded.src_vocab == _vocabs(model)[0]
    card = json.loads((tmp_path / "ck" / CARD).read_text())
    assert card["weights_dtype"] == ("float16" if half else "float32")


def test_atomic_save_leaves_no_temporary_files(tmp_path):
    save_tiny(tmp_path / "ck")
    save_tiny(tmp_path / "ck", seed=1)  # overwrite in place
    assert sorted(os.listdir(tmp_path / "ck")) == sorted([CARD, VOCAB, WEIGHTS])
    load_checkpoint(tmp_path / "ck")


def _expect_error(path, *fragments):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    for f in fragments:
        assert f in msg, msg
    return msg


def test_flipped_byte_is_refused(tmp_path):
    save_tiny(tmp_path / "ck")
    w = tmp_path / "ck" / WEIGHTS
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    _expect_error(tmp_path / "ck", str(w), "sha256")


def test_truncated_weights_are_refused(tmp_path):
    save_tiny(tmp_path / "ck")
    w = tmp_path / "ck" / WEIGHTS
    w.write_bytes(w.read_bytes()[:100])
    _expect_error(tmp_path / "ck", str(w), "truncated")


def test_weights_of_another_model_are_refused(tmp_path):
    save_tiny(tmp_path / "a", seed=0)
    save_tiny(tmp_path / "b", seed=1)
    shutil.copy(tmp_path / "b" / WEIGHTS, tmp_path / "a" / WEIGHTS)
    _expect_error(tmp_path / "a", str(tmp_path / "a" / WEIGHTS), "sha256")


def test_card_edited_to_match_foreign_weights_is_still_refused(tmp_path):
    """Someone swaps in an lstm's weights and fixes the hashes: shapes give it away."""
    save_tiny(tmp_path / "a", "bahdanau")
    save_tiny(tmp_path / "b", "lstm")
    shutil.copy(tmp_path / "b" / WEIGHTS, tmp_path / "a" / WEIGHTS)
    card = json.loads((tmp_path / "a" / CARD).read_text())
    card["files"][WEIGHTS] = json.loads((tmp_path / "b" / CARD).read_text())["files"][WEIGHTS]
    (tmp_path / "a" / CARD).write_text(json.dumps(card))
    _expect_error(tmp_path / "a", "do not match a bahdanau model")


def test_newer_format_version_is_refused(tmp_path):
    save_tiny(tmp_path / "ck")
    card_path = tmp_path / "ck" / CARD
    card = json.loads(card_path.read_text())
    card["format_version"] = 99
    card_path.write_text(json.dumps(card))
    _expect_error(tmp_path / "ck", str(card_path), "newer")


def test_missing_vocabulary_and_corrupt_card(tmp_path):
    save_tiny(tmp_path / "ck")
    (tmp_path / "ck" / VOCAB).unlink()
    _expect_error(tmp_path / "ck", str(tmp_path / "ck" / VOCAB), "missing")
    save_tiny(tmp_path / "ck2")
    card_path = tmp_path / "ck2" / CARD
    card_path.write_text(card_path.read_text()[:50])
    _expect_error(tmp_path / "ck2", str(card_path), "not valid JSON")
    _expect_error(tmp_path / "nowhere", "not found")


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_never_runs(tmp_path):
    """A torch.save/pickle file dropped in as the weights: refused, and its code never runs."""
    save_tiny(tmp_path / "ck")
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    w = tmp_path / "ck" / WEIGHTS
    torch.save({"x": payload}, w)
    _expect_error(tmp_path / "ck", str(w))
    # even with the card's hash and size forged to match, the safetensors reader refuses it
    card_path = tmp_path / "ck" / CARD
    card = json.loads(card_path.read_text())
    from seq2seq.checkpoint import sha256_file
    card["files"][WEIGHTS] = {"sha256": sha256_file(w), "bytes": w.stat().st_size}
    card_path.write_text(json.dumps(card))
    _expect_error(tmp_path / "ck", str(w), "safetensors")
    assert not marker.exists()


@pytest.mark.parametrize("field,value", [("files", []), ("history", {}), ("params", "many"),
                                         ("tokenizers", {"src": "bpe", "tgt": "chars"}), ("task", "summarize")])
def test_card_fields_of_the_wrong_kind_are_refused(tmp_path, field, value):
    save_tiny(tmp_path / "ck")
    card_path = tmp_path / "ck" / CARD
    card = json.loads(card_path.read_text())
    card[field] = value
    card_path.write_text(json.dumps(card))
    _expect_error(tmp_path / "ck", str(card_path))
