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
