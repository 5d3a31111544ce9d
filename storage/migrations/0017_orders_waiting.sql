-- Fission schema, version 17: no partial index of the orders waiting for their deal.
--
-- `orders_waiting` (campaign, instance) WHERE confirmed_at IS NULL served the statements
-- that confirm or refund a deal's orders by their lines. The planner, trusting its
-- estimate of a few waiting rows, read the whole index into a hash for each batch of
-- deals, not one line's entry: the cost grew with every order waiting in any group and
-- with every entry an order left behind when it was confirmed (dead until a vacuum):
-- 9,411 buffers for a batch of 18 lines after a deal storm, against 95 by the unique
-- key. Those statements look each line up in
-- the unique index `orders_source` (campaign, instance, line) instead, and an order's
-- insert and confirmation write one index fewer.

DROP INDEX IF EXISTS orders_waiting;
