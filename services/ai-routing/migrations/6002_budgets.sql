-- Spend (and reservations held) per scope (a user id, or "platform") and UTC day.
CREATE TABLE ai_budget_spend (
    scope TEXT NOT NULL,
    day BIGINT NOT NULL,
    spent_nano BIGINT NOT NULL,
    PRIMARY KEY (scope, day)
);
