"""Market data in a worker: one cache of latest prices (:mod:`oms.market.cache`), fed by one
consumer of the tick stream (:mod:`oms.market.feed`)."""
