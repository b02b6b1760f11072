"""The paper-layout results table and the MT2KD-vs-baselines comparison, on hand-made results."""

import json

from mt2kd_lib.report.tables import comparison, comparison_table, load_results, results_table


def _write(tmp_path, rows):
    paths = []
    for r in rows:
        p = tmp_path / f"{r['system']}.json"
        p.write_text(json.dumps(r))
        paths.append(p)
    return load_results(paths)


ROWS = [
    {"system": "mt2kd", "group": "mt2kd", "params": 2_000_000, "asr": {"wer": {"test": 10.4}}, "at": {"mAP": 0.40},
     "sv": {"eer": {"O": 3.0}, "min_dcf": {"O": 0.3}}},
    {"system": "single_asr", "group": "single-task", "params": 1_000_000, "asr": {"wer": {"test": 10.0}}},
    {"system": "single_at", "group": "single-task", "params": 1_000_000, "at": {"mAP": 0.42}},
    {"system": "single_sv", "group": "single-task", "params": 1_000_000, "sv": {"eer": {"O": 2.5}, "min_dcf": {"O": 0.2}}},
    {"system": "multitask_scratch", "group": "multi-task", "params": 2_000_000, "asr": {"wer": {"test": 13.0}},
     "at": {"mAP": 0.30}, "sv": {"eer": {"O": 5.0}, "min_dcf": {"O": 0.5}}},
    {"system": "teacher_asr", "group": "teacher", "params": 3_000_000, "asr": {"wer": {"test": 5.0}}},
]


def test_rows_are_ordered_by_group(tmp_path):
    rows = _write(tmp_path, ROWS)
    assert [r["system"] for r in rows] == ["teacher_asr", "single_asr", "single_at", "single_sv",
                                           "multitask_scratch", "mt2kd"]
    table = results_table(rows).splitlines()
    assert table[0].startswith("| system | group | params (M) | WER test (%) | mAP | EER O (%) | minDCF O |")
    assert "| mt2kd | mt2kd | 2.00 | 10.40 | 0.400 | 3.00 | 0.300 |" in table
    assert "| single_at | single-task | 1.00 | - | 0.420 | - | - |" in table


def test_dev_columns_after_the_test_ones_and_not_compared(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[0] = {**rows[0], "asr": {"wer": {"test": 10.4}, "wer_dev": {"dev": 9.1}},
               "sv": {"eer": {"O": 3.0}, "min_dcf": {"O": 0.3}, "eer_dev": {"dev": 4.25}, "min_dcf_dev": {"dev": 0.5}}}
    rows = _write(tmp_path, rows)
    table = results_table(rows).splitlines()
    assert table[0].endswith("| minDCF O | dev: WER dev (%) | dev: EER dev (%) |")
    assert "| mt2kd | mt2kd | 2.00 | 10.40 | 0.400 | 3.00 | 0.300 | 9.10 | 4.25 |" in table
    assert "| single_at | single-task | 1.00 | - | 0.420 | - | - | - | - |" in table
    assert set(comparison(rows)) == {"WER test", "mAP", "EER O"}


def test_weights_column_says_mean_or_last_and_whether_chosen_on_dev(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[0] = {**rows[0], "use_averaged_model": True, "weights": {"chosen": "mean"}}
    rows[1] = {**rows[1], "use_averaged_model": False, "weights": {"chosen": "last"}}
    rows[5] = {**rows[5], "use_averaged_model": True}  # a teacher: its dumped weights, not chosen on dev
    table = results_table(_write(tmp_path, rows)).splitlines()
    assert table[0].endswith("| minDCF O | weights |")
    assert "| mt2kd | mt2kd | 2.00 | 10.40 | 0.400 | 3.00 | 0.300 | mean (on dev) |" in table
    assert "| single_asr | single-task | 1.00 | 10.00 | - | - | - | last (on dev) |" in table
    assert "| teacher_asr | teacher | 3.00 | 5.00 | - | - | - | mean |" in table
    assert "| single_at | single-task | 1.00 | - | 0.420 | - | - | - |" in table


def test_comparison_numbers(tmp_path):
    comp = comparison(_write(tmp_path, ROWS))
    wer = comp["WER test"]
    assert abs(wer["single-task"]["diff"] - 4.0) < 1e-9 and wer["single-task"]["kind"] == "rel"  # +4% relative
    assert not wer["single-task"]["better"] and wer["multi-task"]["better"]
    assert abs(comp["mAP"]["single-task"]["diff"] - (-0.02)) < 1e-9  # 0.40 vs 0.42, absolute
    assert abs(comp["EER O"]["multi-task"]["diff"] - (-2.0)) < 1e-9 and comp["EER O"]["multi-task"]["better"]
    text = comparison_table(comp)
    assert "+4.00% rel" in text and "-2.00 abs" in text


def test_stage_times_table_overlapping_stages(tmp_path):
    from mt2kd_lib.report.stage_times import stage_times_table

    data, exp = tmp_path / "data/.done", tmp_path / "exp/.done"
    data.mkdir(parents=True)
    exp.mkdir(parents=True)
    (data / "stage-1-prepare").write_text("finished 2026-11-24 10:01:00 in 60 s\n")
    (exp / "stage-6-kd").write_text("finished 2026-11-24 10:05:00 in 200 s\n")
    (exp / "stage-8-baselines").write_text("finished 2026-11-24 10:06:00 in 250 s\n")  # beside stage 6
    (exp / "stage-10-report").write_text("done by hand\n")
    table = stage_times_table([data, exp])
    lines = table.splitlines()
    assert lines[2] == "| 1 prepare | 10:00:00 | 10:01:00 | 60 |"
    assert lines[3] == "| 6 kd | 10:01:40 | 10:05:00 | 200 |"
    assert lines[4] == "| 8 baselines | 10:01:50 | 10:06:00 | 250 |"
    assert lines[5] == "| 10 report | | done by hand | |"
    # 60 s + 10:01:40 -> 10:06:00 (260 s): not the 510 s sum of the stages, nor the 20 s gap between them
    assert lines[6] == "| **all** (overlaps once) | 10:00:00 | 10:06:00 | **320** (5 min 20 s) |"


def test_decoding_table_best_baseline_per_method_and_skipped_methods(tmp_path):
    from mt2kd_lib.report.decoding import decoding_table, parity_table

    def asr(greedy, hlg, rtf):
        hlg_entry = {"wer": {"test": hlg}, "rtf": rtf} if hlg is not None else {"skipped": "needs k2"}
        return {"wer": {"test": greedy}, "methods": {"greedy_search": {"wer": {"test": greedy}, "rtf": rtf / 2},
                                                     "ctc_hlg_1best": hlg_entry}}

    rows = _write(tmp_path, [
        {"system": "mt2kd", "group": "mt2kd", "asr": asr(50.0, 40.0, 0.2)},
        {"system": "single_asr", "group": "single-task", "asr": asr(20.0, 30.0, 0.4)},
        {"system": "multitask_scratch", "group": "multi-task", "asr": asr(80.0, 25.0, 0.6)},
        {"system": "teacher_asr", "group": "teacher", "asr": asr(5.0, 4.0, 1.0)},  # never the baseline
        {"system": "single_at", "group": "single-task", "at": {"mAP": 0.5}},
    ])
    lines = decoding_table(rows).splitlines()
    assert lines[0] == ("| method | mt2kd WER test (%) | mt2kd RTF | best baseline | baseline WER test (%) | "
                        "baseline RTF |")
    # The best baseline is chosen per method: single_asr for greedy search, multitask_scratch for HLG.
    assert lines[2] == "| greedy_search | 50.00 | 0.100 | single_asr | 20.00 | 0.200 |"
    assert lines[3] == "| ctc_hlg_1best | 40.00 | 0.200 | multitask_scratch | 25.00 | 0.600 |"
    # A method that could not run is shown with its reason, not dropped.
    mt2kd = next(r for r in rows if r["system"] == "mt2kd")
    mt2kd["asr"] = asr(50.0, None, 0.2)
    assert "| ctc_hlg_1best | not run: needs k2 |  | multitask_scratch | 25.00 | 0.600 |" in decoding_table(rows)
    assert decoding_table([r for r in rows if r["system"] == "single_at"]) == ""
    res = {"num_utts": 300, "num_identical": 297, "agreement": 0.99, "wer": {"k2_hlg_1best": 40.0,
           "sherpa_onnx_hlg": 40.1}, "rtf": {"k2_hlg_1best": 0.05, "sherpa_onnx_hlg": 0.03}}
    assert parity_table(res).splitlines()[3] == "| sherpa-onnx CTC + HLG.fst | 40.10 | 0.030 | 297/300 (99.0%) |"
