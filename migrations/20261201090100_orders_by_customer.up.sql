-- lifeboat:no-transaction
-- Built without blocking writes. CREATE INDEX CONCURRENTLY cannot run inside a transaction, so this
-- file runs statement by statement; IF NOT EXISTS makes it safe to run again after a failure.
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_by_customer ON orders (customer);
