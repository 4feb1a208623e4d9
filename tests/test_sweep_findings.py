"""What a sweep found, in numbers and words (seq2seq.sweep_findings), and the README's
sweep section (seq2seq.report): computed from the results file, on format 2 files (a
synthetic translation sweep with known numbers) and the format 1 reversal file shipped before the full sweep."""
import statistics

import pytest

from seq2seq import report
from seq2seq.sweep import load_results, write_results
from seq2seq.sweep_findings import (SPREAD_RULE, compare, findings, format_value, planned_runs, policy_summary,
                                    setting_info, sweep_files)

from apptest_util import TRANSLATE_SWEEP_BLEU, translate_sweep_results
from conftest import ROOT

# the reduced reversal sweep shipped before the full one: the format 1 file the readers still accept
FORMAT_1 = ROOT / "tests" / "data" / "sweeps-format1" / "reverse.json"


def by_policy(results, arch=None):
    return {r["strategy"]: r for r in policy_summary(results) if arch is None or r["arch"] == arch}


def test_summary_is_mean_min_max_and_sample_std_over_seeds():
    res = translate_sweep_results()
    rows = by_policy(res)
    assert list(rows) == ["constant 0", "constant 0.5", "constant 0.75", "constant 1", "linear decay",
                          "inverse-sigmoid decay", "tutorials' rule 0.5"]          # the settings' order
    base = rows["constant 1"]
    assert (base["seeds"], base["seed_list"], base["mean"]) == (3, [1, 2, 3], 29.0)
    assert (base["min"], base["max"]) == (28.0, 30.0)
    assert base["std"] == pytest.approx(1.0) and base["range"] == 2.0               # sample std of 28, 29, 30
    one = rows["constant 0.5"]
    assert (one["seeds"], one["mean"], one["std"], one["range"]) == (1, 30.0, None, 0.0)
    assert rows["tutorials' rule 0.5"]["tutorials_rule"] and rows["tutorials' rule 0.5"]["coin"] == "step"
    assert [k for k, r in rows.items() if r["coin"] == "step"] == ["tutorials' rule 0.5"]
    assert not rows["constant 1"]["scheduled"] and rows["linear decay"]["scheduled"]


def test_failed_runs_are_left_out_and_counted():
    res = translate_sweep_results()
    res["runs"].append({"name": "bahdanau-tf1-s4", "arch": "bahdanau", "setting": "constant 1", "seed": 4,
                        "error": "RuntimeError: out of memory"})
    base = by_policy(res)["constant 1"]
    assert (base["seeds"], base["failed"], base["mean"]) == (3, 1, 29.0)


def test_compare_uses_the_wider_min_max_range_and_knows_when_it_cannot():
    rows = by_policy(translate_sweep_results())
    c = compare(rows["inverse-sigmoid decay"], rows["constant 1"])
    assert (c["gap"], c["spread"], c["beyond"]) == (4.0, 2.0, True)
    c = compare(rows["tutorials' rule 0.5"], rows["constant 0.5"])
    assert (c["gap"], c["spread"], c["beyond"]) == (-3.0, None, None)     # one seed each: unknown


def test_findings_say_who_won_by_how_much_and_against_what_spread():
    lines = findings(translate_sweep_results())
    assert lines[0] == "Best policy by mean free-running test BLEU: inverse-sigmoid decay (33.00 over 3 seeds)."
    assert lines[1] == ("inverse-sigmoid decay beats constant 1 (29.00 over 3 seeds) by 4.00: larger than the seed "
                        "spread (the wider min–max range of the two is 2.00).")
    assert lines[2] == ("The tutorials' rule (ratio 0.5, one coin per step for the whole batch) scored 27.00 over "
                        "1 seed against 30.00 over 1 seed for constant 0.5 (one coin per token): lower by 3.00; with "
                        "one seed for tutorials' rule 0.5 and constant 0.5 the seed spread is unknown, so whether "
                        "the coin granularity matters cannot be told.")
    assert lines[-1] == SPREAD_RULE and "wider of their two min–max ranges" in SPREAD_RULE
    assert len(lines) == 4


def test_findings_within_the_spread_and_when_teacher_forcing_wins():
    bleu = dict(TRANSLATE_SWEEP_BLEU)
    bleu.update({("inverse-sigmoid decay", 1): 30.0, ("inverse-sigmoid decay", 2): 26.0,
                 ("inverse-sigmoid decay", 3): 31.0,                          # mean 29, range 5
                 ("tutorials' rule 0.5", 2): 29.0, ("constant 0.5", 2): 29.5})  # now two seeds each
    bleu = {k: v for k, v in bleu.items() if k[0] not in ("constant 0.75", "linear decay")}
    bleu[("constant 1", 1)] = 33.0                                              # constant 1: 33, 30, 28 -> 30.33
    lines = findings(translate_sweep_results(bleu=bleu))
    mean1 = statistics.fmean([33.0, 30.0, 28.0])
    assert lines[0] == f"Best policy by mean free-running test BLEU: constant 1 ({mean1:.2f} over 3 seeds)."
    gap = mean1 - 29.75                                                         # the runner-up: constant 0.5
    assert lines[1] == (f"constant 1 (teacher forcing throughout) is the best policy; the runner-up, constant 0.5 "
                        f"(29.75 over 2 seeds), is {gap:.2f} behind: not larger than the seed spread (the wider "
                        f"min–max range of the two is 5.00), so it may be seed noise.")
    # tutorials' rule 27, 29 (mean 28, range 2) against constant 0.5 30, 29.5 (mean 29.75, range 0.5)
    assert lines[2].endswith("scored 28.00 over 2 seeds against 29.75 over 2 seeds for constant 0.5 (one coin per "
                             "token): lower by 1.75, within the seed spread (the wider min–max range of the two is "
                             "2.00): no difference from the coin granularity that the seeds can show.")
    bleu[("tutorials' rule 0.5", 2)] = 26.0                     # 27, 26: mean 26.5, range 1; the gap 3.25 > 1
    assert findings(translate_sweep_results(bleu=bleu))[2].endswith(
        "lower by 3.25, beyond the seed spread (the wider min–max range of the two is 1.00): the coin granularity "
        "made a difference.")
    bleu[("tutorials' rule 0.5", 1)] = bleu[("tutorials' rule 0.5", 2)] = 29.751    # 0.001 above: prints as 0.00
    assert findings(translate_sweep_results(bleu=bleu))[2].endswith(
        "(one coin per token): the same to the digits shown, within the seed spread (the wider min–max range of "
        "the two is 0.50): no difference from the coin granularity that the seeds can show.")


def test_findings_with_several_archs_and_a_format_1_file():
    res = load_results(FORMAT_1)
    assert res["format_version"] == 1
    lines = findings(res)
    for arch in ("gru", "bahdanau"):
        rows = by_policy(res, arch)
        best = max(rows.values(), key=lambda r: r["mean"])
        assert f"{arch}: Best policy by mean free-running test exact match: {best['strategy']} " \
               f"({best['mean']:.4f} over 3 seeds)." in lines
    assert any("no tutorials' rule runs (its format predates them)" in line for line in lines)
    assert lines[-1] == SPREAD_RULE
    # format 1 settings have no coin fields: per token, as the engine did then
    assert {m["coin"] for m in setting_info(res).values()} == {"token"}
    # the summary is the plain statistics of the file's runs
    for (arch, label), row in {(r["arch"], r["strategy"]): r for r in policy_summary(res)}.items():
        vals = [r["final"]["exact_match"] for r in res["runs"] if (r["arch"], r["setting"]) == (arch, label)]
        assert row["mean"] == pytest.approx(statistics.fmean(vals))
        assert row["std"] == pytest.approx(statistics.stdev(vals))
        assert (row["min"], row["max"], row["seeds"]) == (min(vals), max(vals), len(vals))


def test_findings_on_no_finished_runs_and_formats():
    res = translate_sweep_results()
    for r in res["runs"]:
        r["error"] = "stopped"
    assert findings(res) == ["No run of this sweep has finished yet, so there is nothing to compare."]
    assert format_value({"metric": "bleu"}, 3.14159) == "3.14"
    assert format_value({"metric": "exact_match"}, 0.5, signed=True) == "+0.5000"
    assert format_value({"metric": "exact_match"}, None) == "n/a"


def test_sweep_files_reversal_first_and_hidden_files_skipped(tmp_path):
    for name in ("translate.json", "reverse.json", "other.json", ".reverse.json.tmp1.json"):
        (tmp_path / name).write_text("{}")
    assert list(sweep_files(tmp_path)) == ["reverse", "translate", "other"]
    assert sweep_files(tmp_path / "missing") == {}


def test_report_prints_each_sweep_file_with_its_table_and_findings(tmp_path):
    folder = tmp_path / "sweeps"
    tr = translate_sweep_results(scale="reduced")
    write_results(folder / "translate.json", tr)
    (folder / "reverse.json").write_text(FORMAT_1.read_text())
    text = report.sweep_section(folder)
    assert text.index("Teacher forcing sweep, reversal") < text.index("Teacher forcing sweep, translation")
    assert "a reduced sweep made by the tests" in text and "`translate.json`, 11 runs" in text
    assert "| bahdanau | constant 1 | one per token | 3 | 29.00 | 28.00–30.00 | 1.00 |" in text
    assert "| bahdanau | **tutorials' rule 0.5** | one per step for the batch | 1 | 27.00 | 27.00–27.00 | - |" in text
    for line in findings(tr) + findings(load_results(FORMAT_1)):
        assert f"- {line}" in text
    # build() puts the section into the README's results, from CHECKPOINTS/sweeps by default
    (tmp_path / "ckpts").mkdir()
    built = report.build(tmp_path / "ckpts", folder)
    assert text in built and "from the checkpoint cards and the sweep files" in built
    assert "sweep" not in report.build(tmp_path / "ckpts")                       # no sweep folder: no section
    # an unreadable file is named, the others still printed
    (folder / "translate.json").write_text("{oops")
    text = report.sweep_section(folder)
    assert "`translate.json`: not readable" in text and "Teacher forcing sweep, reversal" in text


def test_report_main_prints_without_writing(tmp_path, capsys):
    folder = tmp_path / "sweeps"
    write_results(folder / "translate.json", translate_sweep_results())
    readme = tmp_path / "README.md"
    readme.write_text("x")
    assert report.main(["--checkpoints", str(tmp_path), "--sweeps", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "Teacher forcing sweep, translation (Multi30k, test 2016) (`translate.json`, 11 runs; the full sweep)" in out
    assert readme.read_text() == "x"



def test_planned_runs_count_every_setting_arch_and_seed_and_the_second_pass():
    res = translate_sweep_results()
    assert planned_runs(res) == 7 + 2 * 2                     # 7 settings x 1 seed, then 2 settings x 2 seeds
    first_pass = dict(res, extra_seeds=None, options={"extra_seeds": 2})
    assert planned_runs(first_pass) == 11                     # the second pass counted before it is chosen
    assert planned_runs(dict(res, extra_seeds=None, options={})) == 7
    shipped = load_results(ROOT / "checkpoints" / "sweeps" / "reverse.json")
    assert planned_runs(shipped) == 9 * 2 * 3                 # 9 policies, gru and bahdanau, 3 seeds
    assert planned_runs({"runs": []}) is None


def test_reversal_note_is_read_from_the_cards():
    from seq2seq.checkpoint import read_card

    shipped = [read_card(ROOT / "checkpoints" / n) for n in ("reverse-bahdanau", "reverse-gru", "reverse-lstm")]
    ranges = {(c.train_config["reverse_min_len"], c.train_config["reverse_max_len"]) for c in shipped}
    counts = {c.metrics["reversal"]["n_per_length"] for c in shipped}
    assert len(ranges) == len(counts) == 1
    (lo, hi), n = ranges.pop(), counts.pop()
    assert report.reversal_note(shipped) == (f"Exact match on {n} fresh sequences per length; the models were "
                                             f"trained on lengths {lo}–{hi}.")
    assert report.reversal_note(shipped[:1]).endswith(f"the model was trained on lengths {lo}–{hi}.")
    assert report.reversal_note([]) == ""
    assert f"Reversal. Exact match on {n} fresh sequences per length" in report.build(ROOT / "checkpoints")
