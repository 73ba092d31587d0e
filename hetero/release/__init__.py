"""Release: retrieval metrics and their intervals, the report, the fixture, gallery indexes, signatures and the gate."""
