use super::*;

fn ring(dir: &Path) -> Arc<KeyRing> {
    Arc::new(KeyRing::load(dir, true).unwrap())
}

fn verifier(ring: Arc<KeyRing>) -> TokenVerifier {
    TokenVerifier::new(ring, Duration::ZERO)
}

fn claims(exp_offset: i64) -> Claims {
    let now = unix_now() as i64;
    Claims {
        sub: "u1".into(),
        role: "learner".into(),
        tier: "free".into(),
        iss: ISSUER.into(),
        iat: (now - 10) as u64,
        exp: (now + exp_offset) as u64,
        jti: "j".into(),
    }
}

fn reason(error: Error) -> &'static str {
    match error {
        Error::Unauthenticated { reason, .. } => reason,
        other => panic!("expected unauthenticated, got {other:?}"),
    }
}

#[tokio::test]
async fn a_fresh_token_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring(dir.path());
    let issuer = TokenIssuer::new(ring.clone(), Duration::from_secs(900));
    let token = issuer.issue("u1", "admin", "premium").unwrap();
    let claims = verifier(ring).verify(&token).await.unwrap();
    assert_eq!(claims.sub, "u1");
    assert_eq!(claims.role, "admin");
    assert_eq!(claims.exp - claims.iat, 900);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring(dir.path());
    let token = TokenIssuer::new(ring.clone(), Duration::from_secs(900))
        .sign(&claims(-60))
        .unwrap();
    assert_eq!(
        reason(verifier(ring).verify(&token).await.unwrap_err()),
        "TOKEN_EXPIRED"
    );
}

#[tokio::test]
async fn a_wrong_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring(dir.path());
    let token = TokenIssuer::new(ring.clone(), Duration::from_secs(900))
        .issue("u1", "learner", "free")
        .unwrap();
    // Swap the signature for another valid-looking one.
    let (head, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]));
    assert_eq!(
        reason(verifier(ring.clone()).verify(&forged).await.unwrap_err()),
        "TOKEN_SIGNATURE"
    );
    // A payload changed after signing fails too.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    payload["role"] = "admin".into();
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
    assert_eq!(
        reason(verifier(ring).verify(&parts.join(".")).await.unwrap_err()),
        "TOKEN_SIGNATURE"
    );
}

#[tokio::test]
async fn a_token_from_another_ring_has_an_unknown_kid() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let token = TokenIssuer::new(ring(theirs.path()), Duration::from_secs(900))
        .issue("u1", "admin", "free")
        .unwrap();
    assert_eq!(
        reason(
            verifier(ring(ours.path()))
                .verify(&token)
                .await
                .unwrap_err()
        ),
        "TOKEN_UNKNOWN_KEY"
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring(dir.path());
    let kid = ring.signing_key().kid().to_string();
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#));
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(600)).unwrap());
    let token = format!("{header}.{payload}.");
    let error = verifier(ring).verify(&token).await.unwrap_err();
    assert!(matches!(
        reason(error),
        "TOKEN_MALFORMED" | "TOKEN_ALGORITHM"
    ));
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring(dir.path());
    let jwk = ring.signing_key().jwk();
    let public = URL_SAFE_NO_PAD.decode(&jwk.x).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(jwk.kid.clone());
    let token =
        jsonwebtoken::encode(&header, &claims(600), &EncodingKey::from_secret(&public)).unwrap();
    assert_eq!(
        reason(verifier(ring).verify(&token).await.unwrap_err()),
        "TOKEN_ALGORITHM"
    );
}

#[tokio::test]
async fn after_rotation_the_new_key_signs_and_the_old_one_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let old_ring = ring(dir.path());
    let old_token = TokenIssuer::new(old_ring.clone(), Duration::from_secs(900))
        .issue("u1", "learner", "free")
        .unwrap();
    let new_kid = KeyRing::rotate(dir.path()).unwrap();
    let new_ring = ring(dir.path());
    assert_eq!(new_ring.signing_key().kid(), new_kid);
    assert_eq!(new_ring.jwks().len(), 2);
    let verifier = verifier(new_ring.clone());
    verifier.verify(&old_token).await.unwrap();
    let new_token = TokenIssuer::new(new_ring, Duration::from_secs(900))
        .issue("u1", "learner", "free")
        .unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&new_token)
            .unwrap()
            .kid
            .unwrap(),
        new_kid
    );
    verifier.verify(&new_token).await.unwrap();
    // A third key retires the first.
    KeyRing::rotate(dir.path()).unwrap();
    assert_eq!(ring(dir.path()).jwks().len(), 2);
}

#[test]
fn missing_keys_without_generation_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        KeyRing::load(dir.path(), false),
        Err(KeyError::Missing(_))
    ));
}

#[test]
fn bearer_header_parsing() {
    let value = http::HeaderValue::from_static("Bearer abc.def.ghi");
    assert_eq!(bearer_token(Some(&value)), Some("abc.def.ghi"));
    let value = http::HeaderValue::from_static("Basic dXNlcg==");
    assert_eq!(bearer_token(Some(&value)), None);
    assert_eq!(bearer_token(None), None);
}

#[test]
fn policy_reads_the_access_option() {
    let policy = AccessPolicy::from_pool(duovarsity_proto::descriptor_pool());
    let login = policy
        .lookup("/duovarsity.user.v1.UserService/Login")
        .unwrap();
    assert!(login.public);
    let list = policy
        .lookup("/duovarsity.user.v1.UserService/ListUsers")
        .unwrap();
    assert!(!list.public);
    assert_eq!(list.roles, vec!["admin".to_string()]);
    let me = policy
        .lookup("/duovarsity.user.v1.UserService/GetMe")
        .unwrap();
    assert!(!me.public && me.roles.is_empty());
    assert!(policy.lookup("/grpc.health.v1.Health/Check").is_none());
}
