"""``oms chaos run``: the chaos suite. Each scenario runs a mixed order flow through
a full stack while one fault is injected, then one audit (:mod:`oms_dev.chaos.verdict`) decides
PASS or FAIL: every order ends in exactly one correct terminal state, nothing is lost, no label
exists twice at the exchange, positions agree with the exchange, notifications are neither
lost nor doubled."""
