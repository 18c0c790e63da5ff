//! Sends what `mail_outbox` holds, through lettre: `.eml` files under the data directory
//! in embedded mode, or an SMTP relay (`smtp://host:port`). A failed send is retried with
//! backoff; after ten attempts the message stays unsent and is counted in
//! `mail_failed_total`. Replicas on one database share the table: a mailer claims a batch
//! (`claimed_until`, one minute) before sending it, so each message goes out once, and a
//! claim left by a mailer that died mid-send expires and the message is sent by another.

use std::time::Duration;

use duovarsity_common::backoff::Backoff;
use duovarsity_common::db::Database;
use duovarsity_common::time::now_millis;
use duovarsity_config::Config;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

/// How often an idle mailer looks for new mail.
const IDLE_POLL: Duration = Duration::from_millis(200);

const MAX_ATTEMPTS: i64 = 10;
/// How long a mailer holds the rows it claimed before another may send them.
const CLAIM: Duration = Duration::from_secs(60);

#[derive(Clone)]
enum Transport {
    Files(AsyncFileTransport<Tokio1Executor>),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

#[derive(Clone)]
pub struct Mailer {
    db: Database,
    transport: Transport,
    from: String,
}

impl Mailer {
    /// `mail_url` unset: files in `<data_dir>/mail`; `smtp://host:port`: a plain SMTP relay.
    pub fn from_config(config: &Config, db: Database) -> Result<Self, String> {
        let transport = match config.mail_url.as_deref() {
            None => {
                let dir = config.data_dir.join("mail");
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                Transport::Files(AsyncFileTransport::<Tokio1Executor>::new(dir))
            }
            Some(url) => {
                let rest = url.strip_prefix("smtp://").ok_or_else(|| {
                    "only smtp://host:port is supported in this build".to_string()
                })?;
                let (host, port) = rest.split_once(':').unwrap_or((rest, "25"));
                let port: u16 = port
                    .trim_end_matches('/')
                    .parse()
                    .map_err(|_| format!("bad port in {url}"))?;
                Transport::Smtp(
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                        .port(port)
                        .build(),
                )
            }
        };
        Ok(Self {
            db,
            transport,
            from: config.mail_from.clone(),
        })
    }

    /// Sends pending mail until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let pause = match self.send_pending().await {
                Ok(0) => {
                    backoff.reset();
                    IDLE_POLL
                }
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, "sending mail failed; retrying");
                    backoff.next_pause()
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Sends up to a batch of pending messages; returns how many went out.
    pub async fn send_pending(&self) -> Result<usize, String> {
        // Claim a batch first: one atomic UPDATE, whose conditions PostgreSQL re-checks on
        // rows another replica claimed meanwhile, so each row goes to one mailer.
        let now = now_millis();
        let rows = sqlx::query(
            "UPDATE mail_outbox SET claimed_until = $1 \
             WHERE id IN (SELECT id FROM mail_outbox WHERE sent_at IS NULL AND attempts < $2 \
                          AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY id LIMIT 20) \
               AND sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < $3) \
             RETURNING id, recipient, recipient_name, subject, body, attempts",
        )
        .bind(now + CLAIM.as_millis() as i64)
        .bind(MAX_ATTEMPTS)
        .bind(now)
        .fetch_all(self.db.writer())
        .await
        .map_err(|e| e.to_string())?;
        // In queue order (RETURNING keeps none).
        let mut rows = rows
            .into_iter()
            .map(|row| Ok((row.try_get::<String, _>("id")?, row)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| e.to_string())?;
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut sent = 0;
        for (id, row) in rows {
            let message = Message::builder()
                .from(self.from.parse().map_err(|e| format!("mail_from: {e}"))?)
                .to(Mailbox::new(
                    Some(
                        row.try_get::<String, _>("recipient_name")
                            .map_err(|e| e.to_string())?,
                    ),
                    row.try_get::<String, _>("recipient")
                        .map_err(|e| e.to_string())?
                        .parse()
                        .map_err(|e| format!("recipient: {e}"))?,
                ))
                .subject(
                    row.try_get::<String, _>("subject")
                        .map_err(|e| e.to_string())?,
                )
                .header(ContentType::TEXT_PLAIN)
                .body(
                    row.try_get::<String, _>("body")
                        .map_err(|e| e.to_string())?,
                )
                .map_err(|e| e.to_string())?;
            let result = match &self.transport {
                Transport::Files(files) => files
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Transport::Smtp(smtp) => smtp
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            match result {
                Ok(()) => {
                    sqlx::query("UPDATE mail_outbox SET sent_at = $1 WHERE id = $2")
                        .bind(now_millis())
                        .bind(&id)
                        .execute(self.db.writer())
                        .await
                        .map_err(|e| e.to_string())?;
                    metrics::counter!("mail_sent_total").increment(1);
                    sent += 1;
                }
                Err(error) => {
                    sqlx::query(
                        "UPDATE mail_outbox SET attempts = attempts + 1, claimed_until = NULL WHERE id = $1",
                    )
                        .bind(&id)
                        .execute(self.db.writer())
                        .await
                        .map_err(|e| e.to_string())?;
                    metrics::counter!("mail_failed_total").increment(1);
                    return Err(error);
                }
            }
        }
        Ok(sent)
    }
}
