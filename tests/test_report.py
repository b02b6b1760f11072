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
