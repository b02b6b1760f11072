"""Wall time per run.sh stage, read from its stage markers ("finished <date> <time> in <N> s")."""

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import List, Optional, Tuple

MARKER = re.compile(r"finished (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) in (\d+) s")


def read_markers(dirs: List[Path]) -> List[Tuple[int, str, Optional[datetime], Optional[int], str]]:
    """(stage number, stage name, finish time, seconds, raw text) of every marker, by stage number."""
    rows = []
    for d in dirs:
        for m in d.glob("stage-*"):
            _, num, name = m.name.split("-", 2)
            text = m.read_text().strip()
            hit = MARKER.fullmatch(text)
            end = datetime.strptime(hit.group(1), "%Y-%m-%d %H:%M:%S") if hit else None
            rows.append((int(num), name, end, int(hit.group(2)) if hit else None, text))
    return sorted(rows, key=lambda r: r[0])


def busy_seconds(spans: List[Tuple[datetime, datetime]]) -> int:
    """Length of the union of the spans: stages that ran side by side count once, gaps between runs not at all."""
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted(spans):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += (cur_end - cur_start).total_seconds()
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += (cur_end - cur_start).total_seconds()
    return int(total)


def stage_times_table(dirs: List[Path]) -> str:
    """Markdown table of start / end / seconds per stage, and the pipeline's wall time: the union of the stages'
    spans (stages that ran side by side, e.g. 6-7 beside 8, count once; so it is less than the sum)."""
    rows = read_markers(dirs)
    if not rows:
        return "(no stage markers found)"
    lines = ["| stage | started | finished | seconds |", "|---|---|---|---|"]
    spans = []
    for num, name, end, secs, text in rows:
        if end is None:
            lines.append(f"| {num} {name} | | {text} | |")
            continue
        start = end - timedelta(seconds=secs)
        spans.append((start, end))
        lines.append(f"| {num} {name} | {start:%H:%M:%S} | {end:%H:%M:%S} | {secs} |")
    if spans:
        total = busy_seconds(spans)
        lines.append(f"| **all** (overlaps once) | {min(s for s, _ in spans):%H:%M:%S} | "
                     f"{max(e for _, e in spans):%H:%M:%S} | **{total}** ({total // 60} min {total % 60} s) |")
    return "\n".join(lines)
