-- Every AI request of a learner, answered from a provider or the cache: what it cost and
-- how long it took. Costs are billionths of a US dollar.
CREATE TABLE ai_usage (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    task TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_nano BIGINT NOT NULL,
    cached BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX ai_usage_user ON ai_usage (user_id, created_at);
