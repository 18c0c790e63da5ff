-- Orders for paid enrollments. The price, the provider and the instructor's share are
-- fixed when the order is made. At most one open order per learner and course.
CREATE TABLE payment_orders (
    id TEXT PRIMARY KEY,
    learner_id TEXT NOT NULL,
    course_id TEXT NOT NULL,
    instructor_id TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    instructor_share_bps INTEGER NOT NULL,
    provider TEXT NOT NULL,
    provider_order_id TEXT,
    -- What a client needs besides the provider order id to pay (Stripe's client secret).
    client_secret TEXT,
    state TEXT NOT NULL,
    payment_id TEXT,
    captured_minor BIGINT NOT NULL DEFAULT 0,
    refunded_minor BIGINT NOT NULL DEFAULT 0,
    captured_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (provider, provider_order_id)
);

CREATE INDEX payment_orders_learner ON payment_orders (learner_id, id);
CREATE INDEX payment_orders_unsettled ON payment_orders (state, updated_at);

CREATE UNIQUE INDEX payment_orders_open ON payment_orders (learner_id, course_id)
    WHERE state IN ('created', 'failed', 'authorized');

-- Provider events already applied (webhooks are delivered at least once).
CREATE TABLE payment_provider_events (
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (provider, event_id)
);
