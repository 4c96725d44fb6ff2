-- Dropping the column drops its CHECK constraint with it.
ALTER TABLE orders DROP COLUMN status;
