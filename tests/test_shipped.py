"""Every shipped checkpoint: loads, its card validates, it is small, and its recorded
sample reproduces."""
import pytest

from seq2seq.checkpoint import load_checkpoint
from seq2seq.translate import Translator

from conftest import ROOT

CK = ROOT / "checkpoints"
SHIPPED = sorted(p.parent for p in CK.rglob("card.json") if not any(part.startswith(".") for part in p.parts))
MIB = 2 ** 20


def test_the_app_has_models_for_both_tasks():
    names = {p.name for p in SHIPPED}
    assert "reverse-bahdanau" in names
    assert {f"translate-{a}" for a in ("lstm", "gru", "bahdanau", "luong")} <= names
    assert {f"reverse-{a}" for a in ("lstm", "gru")} <= names


def test_total_size_within_150_mib():
    total = sum(f.stat().st_size for f in CK.rglob("*") if f.is_file())
    assert total <= 150 * MIB, f"{total / MIB:.1f} MiB"


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(CK)) for p in SHIPPED])
def test_shipped_checkpoint_loads_and_reproduces_its_sample(path):
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    assert size <= 15 * MIB, f"{path.name}: {size / MIB:.1f} MiB"
    ck = load_checkpoint(path)               # verifies card fields, hashes, shapes
    prov = ck.card["provenance"]
    assert prov["device"] in ("cpu", "cuda") and prov["device_name"] and prov["torch_version"]
    assert ck.card["params"] == sum(p.numel() for p in ck.model.parameters())
    sample = ck.card.get("sample")
    if sample:
        out = Translator(ck).translate(sample["input"], beam=sample.get("beam", 1))
        assert out.text == sample["output"]


SNAPSHOTTED = sorted({p.parents[2] for p in CK.glob("*/snapshots/*/card.json")})


@pytest.mark.parametrize("path", SNAPSHOTTED, ids=[p.name for p in SNAPSHOTTED])
def test_snapshot_series_are_small_ordered_and_described(path):
    from seq2seq.snapshots import list_snapshots

    snaps = list_snapshots(path)
    size = sum(f.stat().st_size for f in (path / "snapshots").rglob("*") if f.is_file())
    assert size <= 15 * MIB, f"{path.name}: {size / MIB:.1f} MiB of snapshots"
    assert len(snaps) >= 4 and [s["index"] for s in snaps] == list(range(len(snaps)))
    steps = [s["step"] for s in snaps]
    assert steps == sorted(steps) and snaps[-1]["label"].startswith("final")
    for s in snaps:
        assert {"step", "epoch", "metric", "value", "val_loss", "label"} <= set(s)


def test_shipped_sweep_files_follow_their_schema_and_their_weights_load():
    from seq2seq.checkpoint import load_checkpoint
    from seq2seq.sweep import check_schema, load_results

    files = sorted((ROOT / "checkpoints" / "sweeps").glob("*.json"))
    assert files, "no sweep results shipped"
    for path in files:
        res = load_results(path)
        assert check_schema(res) == [], path
        for run in res["runs"]:
            if run.get("checkpoint"):
                ck = load_checkpoint(path.parent / run["checkpoint"])
                assert ck.card["name"] == run["name"]


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(CK)) for p in SHIPPED])
def test_a_shipped_soup_or_continuation_accounts_for_every_run(path):
    """A soup names ingredients that share a start, and its training time counts each run once."""
    from seq2seq.checkpoint import read_card
    from seq2seq.report import training_runs
    from seq2seq.soup import ancestry

    card = read_card(path)
    soup, prov = card.extra.get("soup"), card.provenance
    if not soup and "init_from" not in prov:
        assert "wall_seconds_total" not in prov
        return
    assert prov["wall_seconds_total"] > prov["wall_seconds"]
    if soup:
        runs = training_runs(card)                    # the runs the README and the Home page count
        assert len(soup["ingredients"]) >= 2 and len(runs) >= len(soup["ingredients"])
        assert len({r["weights_sha256"] for r in runs}) == len(runs)
        # every continuation among them started from a run that is counted too
        assert all(r["init_from"] in {q["name"] for q in runs} for r in runs if isinstance(r.get("init_from"), str))
        assert prov["wall_seconds_total"] == pytest.approx(sum(r["wall_seconds"] for r in runs), abs=0.1 * len(runs))
    else:
        assert prov["init_from"]["weights_sha256"] in ancestry(card)
