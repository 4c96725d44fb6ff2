-- Orders get a status; the existing ones are paid. A constant default adds the column without
-- rewriting the table (PostgreSQL 11 and later), and the CHECK is added NOT VALID, then validated,
-- so the scan does not block writes while it runs.
ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'paid';
ALTER TABLE orders ADD CONSTRAINT orders_status_known
    CHECK (status IN ('pending', 'paid', 'refunded')) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_status_known;
