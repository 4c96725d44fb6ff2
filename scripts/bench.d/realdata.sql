-- A deterministic data set that compresses like real data (zstd -3 about 2.7x, where pgbench's
-- tables compress about 14x), for scripts/bench.d/realdata.sh. Run by psql with -v rows=N in one
-- session (1,200,000 rows made a 1.33 GB data directory that `tar | zstd -3` shrinks 2.69x):
-- setseed() makes random() repeatable, so every run builds the same bytes (parallel workers are
-- off for the same reason).
--
-- What it holds, per row of `documents` (about 1.1 kB on disk with its share of the indexes):
-- a title and a body of words drawn from a 13824-word vocabulary with a skewed (Zipf-like)
-- frequency, as prose has; a jsonb document (nested keys, tags, numbers, a status); numerics and
-- timestamps; 48 bytes that do not compress (three MD5 digests, as hash or token columns would
-- hold); and a customer row table with e-mail-like text. Indexes: primary keys, a timestamp, a
-- text column and a GIN index on the jsonb, like an application's.
\set ON_ERROR_STOP on
SET max_parallel_workers_per_gather = 0;
SET synchronous_commit = off;
SELECT setseed(0.16);

DROP TABLE IF EXISTS documents, customers;

-- words(n): n words of a vocabulary of pseudo-words. Word k (0 <= k < 13824) is spelt by the
-- base-24 digits of k as syllables, so short words have small numbers; k = floor(13824 *
-- random()^4) makes a few words frequent and most rare, as in prose. Built from a 24-element
-- array, not looked up in a table: picking words costs a few microseconds each.
CREATE FUNCTION pg_temp.words(count int) RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT string_agg(s[1 + k % 24] || CASE WHEN k >= 24 THEN s[1 + k / 24 % 24] ELSE '' END
                          || CASE WHEN k >= 576 THEN s[1 + k / 576 % 24] ELSE '' END, ' ')
      FROM (SELECT floor(13824 * random() ^ 4)::int AS k FROM generate_series(1, count)) AS picked,
           (SELECT ARRAY['ka','lo','mi','ren','to','sa','vel','dor','an','ei','qu','bri','str','on',
                         'ta','pe','lu','gor','fin','ma','ne','so','ci','ul'] AS s) AS syllables
$$;

CREATE TABLE customers (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    country char(2) NOT NULL,
    balance numeric(14, 2) NOT NULL,
    created timestamptz NOT NULL
);
INSERT INTO customers
SELECT g,
       initcap(pg_temp.words(2)),
       replace(pg_temp.words(1), ' ', '') || '.' || g || '@' || (ARRAY['example.com','mail.test','corp.invalid'])[1 + g % 3],
       (ARRAY['DE','FR','US','GB','JP','BR','IN','NL','SE','ES'])[1 + floor(random() * 10)::int],
       round((random() * 20000 - 5000)::numeric, 2),
       timestamptz '2020-01-01 00:00:00+00' + random() * interval '1800 days'
  FROM generate_series(1, greatest(:rows / 20, 1)) AS g;

CREATE TABLE documents (
    id bigint NOT NULL,
    customer_id bigint NOT NULL,
    created timestamptz NOT NULL,
    amount numeric(12, 2) NOT NULL,
    quantity integer NOT NULL,
    ratio double precision NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    attributes jsonb NOT NULL,
    digest bytea NOT NULL
);
INSERT INTO documents
SELECT g,
       1 + floor(random() * greatest(:rows / 20, 1))::bigint,
       timestamptz '2021-01-01 00:00:00+00' + g * interval '17 seconds' + random() * interval '10 seconds',
       round((random() * 5000)::numeric, 2),
       floor(random() * 100)::int,
       random(),
       pg_temp.words(4 + floor(random() * 6)::int),
       pg_temp.words(40 + floor(random() * 60)::int),
       jsonb_build_object(
           'status', (ARRAY['new','open','paid','shipped','closed','void'])[1 + floor(random() * 6)::int],
           'priority', floor(random() * 5)::int,
           'score', round((random() * 100)::numeric, 3),
           'tags', jsonb_build_array(pg_temp.words(1), pg_temp.words(1), pg_temp.words(1)),
           'address', jsonb_build_object('city', initcap(pg_temp.words(1)), 'zip', lpad(floor(random() * 100000)::int::text, 5, '0'),
                                         'street', initcap(pg_temp.words(2)) || ' ' || floor(random() * 300)::int),
           'version', 1 + floor(random() * 3)::int),
       decode(md5(g::text || random()::text) || md5(random()::text) || md5(random()::text), 'hex')
  FROM generate_series(1, :rows) AS g;

ALTER TABLE documents ADD PRIMARY KEY (id);
CREATE INDEX ON documents (created);
CREATE INDEX ON documents (customer_id);
CREATE INDEX ON documents (lower(title));
CREATE INDEX ON documents USING gin (attributes jsonb_path_ops);
VACUUM ANALYZE;
