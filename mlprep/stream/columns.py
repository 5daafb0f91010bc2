"""Names of the columns the stream's modules hand each other (events, state, emitted rows)."""

T, SEQ, POS = "_t", "_seq", "_pos"  # event time (ms), arrival index, source position
START, END = "window_start", "window_end"
