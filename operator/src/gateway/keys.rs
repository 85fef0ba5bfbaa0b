//! The gateway's API keys: who may call it, for which models, how often.
//!
//! The keys live in a Secret (a chart value names it) under the data key
//! `keys.yaml`: a list of `{key, models, requestsPerMinute}`. `models`
//! lists names a client may send (a ModelWorker's `NAME`,
//! `NAMESPACE/NAME` or one of its `servedModelNames` grants that
//! ModelWorker by any of its names); `["*"]` grants every model.
//! `requestsPerMinute`, when set, is a token bucket of that size refilled
//! evenly, per gateway replica. Keys are compared by their SHA-256, in
//! constant time.

use super::catalog::Model;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;
use subtle::ConstantTimeEq;

/// The Secret's data key holding the list.
pub const KEYS_FILE: &str = "keys.yaml";

/// One entry of the list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyEntry {
    /// The key clients send as `Authorization: Bearer KEY`.
    pub key: String,
    /// Model names the key grants; `*` grants all.
    pub models: Vec<String>,
    /// Requests a minute, per gateway replica; unset: no limit.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
}

/// Why a key list cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Not a YAML list of entries.
    #[error("{KEYS_FILE} is not a list of {{key, models, requestsPerMinute}}: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A key shorter than 16 characters.
    #[error("entry {0} of {KEYS_FILE}: a key needs at least 16 characters")]
    ShortKey(usize),
    /// The same key twice.
    #[error("entry {0} of {KEYS_FILE} repeats an earlier key")]
    Duplicate(usize),
    /// A rate of zero (remove the key instead).
    #[error("entry {0} of {KEYS_FILE}: requestsPerMinute must be at least 1")]
    ZeroRate(usize),
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No key, or one the list does not hold.
    #[error("a valid API key is required: send Authorization: Bearer KEY")]
    Unauthorized,
    /// The key does not grant the model.
    #[error("this API key may not use model {0:?}")]
    Forbidden(String),
    /// The key's rate is spent.
    #[error("this API key's rate of {limit} requests a minute is spent; retry in {retry_after} s")]
    RateLimited {
        /// The rate.
        limit: u32,
        /// Seconds until a request is allowed again.
        retry_after: u64,
    },
}

#[derive(Debug)]
struct Granted {
    digest: [u8; 32],
    models: Vec<String>,
    bucket: Option<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    per_minute: u32,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes one request, or says how many seconds until one is allowed.
    fn take(&mut self, now: Instant) -> Result<(), u64> {
        let rate = f64::from(self.per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(self.per_minute));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// The parsed list.
#[derive(Debug, Default)]
pub struct Keys {
    granted: Vec<Granted>,
}

impl Keys {
    /// Parses the Secret's `keys.yaml`.
    pub fn parse(text: &str) -> Result<Keys, KeysError> {
        let entries: Vec<KeyEntry> = serde_yaml::from_str(text)?;
        let mut granted: Vec<Granted> = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            if e.key.chars().count() < 16 {
                return Err(KeysError::ShortKey(i));
            }
            let digest: [u8; 32] = Sha256::digest(e.key.as_bytes()).into();
            if granted.iter().any(|g| g.digest == digest) {
                return Err(KeysError::Duplicate(i));
            }
            if e.requests_per_minute == Some(0) {
                return Err(KeysError::ZeroRate(i));
            }
            granted.push(Granted {
                digest,
                models: e.models,
                bucket: e.requests_per_minute.map(|per_minute| {
                    Mutex::new(Bucket {
                        per_minute,
                        tokens: f64::from(per_minute),
                        at: Instant::now(),
                    })
                }),
            });
        }
        Ok(Keys { granted })
    }

    /// Carries the rate buckets of keys `old` also holds over to `self`,
    /// so a reload does not refill them.
    pub fn keep_buckets(&mut self, old: &Keys) {
        let by_digest: HashMap<[u8; 32], &Granted> =
            old.granted.iter().map(|g| (g.digest, g)).collect();
        for g in &mut self.granted {
            if let (Some(new), Some(Some(old))) = (
                g.bucket.as_mut(),
                by_digest.get(&g.digest).map(|o| o.bucket.as_ref()),
            ) {
                let old = old.lock().unwrap_or_else(PoisonError::into_inner);
                let new = new.get_mut().unwrap_or_else(PoisonError::into_inner);
                new.tokens = old.tokens.min(f64::from(new.per_minute));
                new.at = old.at;
            }
        }
    }

    /// Whether the `Authorization` header holds a key of the list.
    pub fn known(&self, authorization: Option<&str>) -> bool {
        self.entry(authorization).is_ok()
    }

    /// The entry of the `Authorization` header's key (scheme `Bearer`, in
    /// any case).
    fn entry(&self, authorization: Option<&str>) -> Result<&Granted, Denied> {
        let sent = authorization
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim())
            .ok_or(Denied::Unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(sent.as_bytes()).into();
        self.granted
            .iter()
            .find(|g| bool::from(g.digest.ct_eq(&digest)))
            .ok_or(Denied::Unauthorized)
    }

    /// Which of `models` the `Authorization` header's key grants (for
    /// `GET /v1/models`; no request is counted).
    pub fn visible<'m>(
        &self,
        authorization: Option<&str>,
        models: impl Iterator<Item = &'m Model>,
    ) -> Result<Vec<&'m Model>, Denied> {
        let granted = self.entry(authorization)?;
        Ok(models.filter(|m| granted.allows(m)).collect())
    }

    /// Checks the `Authorization` header's key for `model`, which the
    /// request named `requested`, and counts the request against its rate.
    pub fn admit(
        &self,
        authorization: Option<&str>,
        requested: &str,
        model: &Model,
        now: Instant,
    ) -> Result<(), Denied> {
        let granted = self.entry(authorization)?;
        if !granted.allows(model) {
            return Err(Denied::Forbidden(requested.to_owned()));
        }
        if let Some(bucket) = &granted.bucket {
            let mut b = bucket.lock().unwrap_or_else(PoisonError::into_inner);
            b.take(now).map_err(|retry_after| Denied::RateLimited {
                limit: b.per_minute,
                retry_after,
            })?;
        }
        Ok(())
    }
}

impl Granted {
    /// Whether the entry grants `model` by any of its names.
    fn allows(&self, model: &Model) -> bool {
        let id = model.id();
        self.models
            .iter()
            .any(|m| m == "*" || *m == id || *m == model.name || model.served_names.contains(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn model(ns: &str, name: &str, aliases: &[&str]) -> Model {
        Model {
            namespace: ns.into(),
            name: name.into(),
            served_names: aliases.iter().map(|s| (*s).to_owned()).collect(),
            phase: None,
            replicas: 1,
            wakes_from_zero: false,
            ready_replicas: 1,
            api_key: None,
            created: 0,
            endpoints: Vec::new(),
        }
    }

    const LIST: &str = r#"
- {key: "team-a-0123456789abcdef", models: ["gemma"]}
- {key: "team-b-0123456789abcdef", models: ["other/llama", "chat"], requestsPerMinute: 2}
- {key: "admin-0123456789abcdef", models: ["*"]}
"#;

    #[test]
    fn keys_grant_their_models_by_any_of_their_names() {
        let keys = Keys::parse(LIST).expect("parses");
        let now = Instant::now();
        let gemma = model("a", "gemma", &["google/gemma"]);
        let llama = model("other", "llama", &["chat"]);
        let bearer = |k: &str| format!("Bearer {k}");
        assert_eq!(
            keys.admit(
                Some(&bearer("team-a-0123456789abcdef")),
                "google/gemma",
                &gemma,
                now
            ),
            Ok(())
        );
        assert_eq!(
            keys.admit(
                Some(&bearer("team-a-0123456789abcdef")),
                "llama",
                &llama,
                now
            ),
            Err(Denied::Forbidden("llama".into()))
        );
        assert_eq!(
            keys.admit(
                Some(&bearer("admin-0123456789abcdef")),
                "llama",
                &llama,
                now
            ),
            Ok(())
        );
        let all = [gemma.clone(), llama.clone()];
        let seen = keys
            .visible(Some(&bearer("team-a-0123456789abcdef")), all.iter())
            .expect("a known key");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].name, "gemma");
        assert_eq!(
            keys.visible(None, all.iter()).err(),
            Some(Denied::Unauthorized)
        );
        assert_eq!(
            keys.admit(Some("bearer team-a-0123456789abcdef"), "gemma", &gemma, now),
            Ok(()),
            "the scheme in any case"
        );
        for wrong in [None, Some("Bearer nope"), Some("team-a-0123456789abcdef")] {
            assert_eq!(
                keys.admit(wrong, "gemma", &gemma, now),
                Err(Denied::Unauthorized)
            );
        }
    }

    #[test]
    fn a_rate_is_a_bucket_refilled_evenly() {
        let mut keys = Keys::parse(LIST).expect("parses");
        let llama = model("other", "llama", &["chat"]);
        let auth = Some("Bearer team-b-0123456789abcdef");
        let t0 = Instant::now();
        assert_eq!(keys.admit(auth, "chat", &llama, t0), Ok(()));
        assert_eq!(keys.admit(auth, "chat", &llama, t0), Ok(()));
        assert_eq!(
            keys.admit(auth, "chat", &llama, t0),
            Err(Denied::RateLimited {
                limit: 2,
                retry_after: 30
            })
        );
        // A reload keeps the spent bucket.
        let mut reloaded = Keys::parse(LIST).expect("parses");
        reloaded.keep_buckets(&keys);
        keys = reloaded;
        assert!(keys.admit(auth, "chat", &llama, t0).is_err());
        // Two requests a minute: one more after 30 s (and a margin).
        let later = t0 + Duration::from_millis(30_100);
        assert_eq!(keys.admit(auth, "chat", &llama, later), Ok(()));
        assert!(keys.admit(auth, "chat", &llama, later).is_err());
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(matches!(
            Keys::parse("- {key: short, models: ['*']}"),
            Err(KeysError::ShortKey(0))
        ));
        assert!(matches!(
            Keys::parse(
                "- {key: aaaaaaaaaaaaaaaaaaaa, models: ['*']}\n- {key: aaaaaaaaaaaaaaaaaaaa, models: []}"
            ),
            Err(KeysError::Duplicate(1))
        ));
        assert!(matches!(
            Keys::parse("- {key: aaaaaaaaaaaaaaaaaaaa, model: ['*']}"),
            Err(KeysError::Yaml(_))
        ));
        assert!(matches!(Keys::parse("{}"), Err(KeysError::Yaml(_))));
        assert!(matches!(
            Keys::parse("- {key: aaaaaaaaaaaaaaaaaaaa, models: ['*'], requestsPerMinute: 0}"),
            Err(KeysError::ZeroRate(0))
        ));
    }
}
