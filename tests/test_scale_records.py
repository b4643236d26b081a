"""Rows for the CSV files read straight from the records equal the asdict-based rows."""

from __future__ import annotations

from dataclasses import asdict, fields

from nmoe_sim.record import ComputeRecord, HopRecord, QueryRecord, RoundRecord, TransferRecord, record_row


def asdict_row(rec: object) -> dict[str, object]:  # what record_row returned before
    row = asdict(rec)
    for f in fields(rec):
        if isinstance(row[f.name], tuple):
            row[f.name] = " ".join(str(x) for x in row[f.name])
    return row


def test_record_rows_equal_asdict_rows_for_every_record_type() -> None:
    recs = [
        TransferRecord("nmoe", "s", "t", "0", "bs", 10, 0.0, 1.5, 2, True, 2, 0.3, 1.0, 0.6, 0.4, 20,
                       route=("0", "1", "bs"), snr_db=float("nan")),
        HopRecord("nmoe", "s", "t", "0", "1", "d2d", 10, 0.0, 1.0, 1, False, 0.2, 0.1, 0.05, 12.5),
        ComputeRecord("nmoe", "s", "t", "3", 1e6, 0.0, 0.1, 0.02),
        RoundRecord("nmoe", "s", 0, 2, 0.0, 1.0, 5, 1, 100, 90, 1.0, 2.0),
        QueryRecord("nmoe", 3, 7, 0.5, 0.9, (3, 8), True),
    ]
    for rec in recs:
        got, want = record_row(rec), asdict_row(rec)
        assert list(got) == list(want)
        assert repr(got) == repr(want)  # repr: NaN-safe
