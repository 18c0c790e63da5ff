-- The double-entry ledger. A transaction is recorded once per (kind, reference): a
-- capture per order, a refund per provider refund, so a duplicate webhook cannot post
-- twice. Its postings sum to zero (checked before they are written).
CREATE TABLE payment_ledger_transactions (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    reference TEXT NOT NULL,
    -- The order the money moved for, and the gross amount (what the learner paid or got
    -- back): the learner's receipts are read from here.
    order_id TEXT NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (kind, reference)
);

CREATE TABLE payment_ledger_postings (
    transaction_id TEXT NOT NULL REFERENCES payment_ledger_transactions (id),
    account TEXT NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL
);

CREATE INDEX payment_ledger_transactions_order ON payment_ledger_transactions (order_id);

CREATE INDEX payment_ledger_postings_account ON payment_ledger_postings (account);
