-- A mailer claims rows for a while before sending them, so that two notification
-- replicas on one database never send the same message; a claim that outlives its
-- mailer (a crash mid-send) expires and the row is sent by another.
ALTER TABLE mail_outbox ADD COLUMN claimed_until BIGINT;
