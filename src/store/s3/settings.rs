//! Where a bucket is and how to reach it: `SNAPKEEP_STORAGE=s3://BUCKET[/PREFIX]`, plus the
//! usual `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, ...), handed to `object_store`'s S3 client as they
//! are. Checked once at start by building the client (which reaches nothing), so that a bad value
//! stops the start rather than the first request.

use std::fmt;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{BackoffConfig, ClientConfigKey, ClientOptions, RetryConfig};

/// A bucket, a prefix in it, and the client's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub bucket: String,
    /// Without a leading or trailing `/`; empty for the bucket's top.
    pub prefix: String,
    /// The `AWS_*` variables that name a setting of the S3 client.
    aws: Vec<(AmazonS3ConfigKey, String)>,
    /// How long one request to the bucket may take, retries included.
    pub timeout: Duration,
}

impl Settings {
    /// Reads `url` (`s3://BUCKET[/PREFIX]`) and the `AWS_*` variables in `vars` (others are
    /// ignored), and proves a client can be built from them. The error is a sentence about
    /// what is wrong, without any secret in it.
    pub fn new(
        url: &str,
        vars: impl IntoIterator<Item = (String, String)>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or("an s3://BUCKET[/PREFIX] URL or a directory")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(
                "an s3://BUCKET[/PREFIX] URL whose bucket is 3 to 63 lowercase letters, digits, \
                 '-' and '.'"
                    .into(),
            );
        }
        let prefix = prefix.trim_matches('/');
        let prefix_ok = prefix.split('/').all(|part| {
            prefix.is_empty()
                || (!part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        });
        if !prefix_ok {
            return Err(
                "an s3://BUCKET[/PREFIX] URL whose prefix is made of A-Z a-z 0-9 '-' '_' '.' \
                 between slashes"
                    .into(),
            );
        }
        let aws: Vec<(AmazonS3ConfigKey, String)> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with("AWS_"))
            .filter_map(|(name, value)| {
                let key = name.to_ascii_lowercase().parse().ok()?;
                Some((key, value))
            })
            .collect();
        let value = |wanted: AmazonS3ConfigKey| {
            aws.iter()
                .find(|(key, _)| *key == wanted)
                .map(|(_, value)| value.as_str())
        };
        let plain_http =
            value(AmazonS3ConfigKey::Endpoint).is_some_and(|e| e.starts_with("http://"));
        let allow_http = AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp);
        if plain_http && !value(allow_http).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err(
                "a bucket reached over https (to reach the plain http:// AWS_ENDPOINT_URL, set \
                 AWS_ALLOW_HTTP=true)"
                    .into(),
            );
        }
        let settings = Self {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            aws,
            timeout,
        };
        settings.client().map_err(|err| {
            format!("a bucket the AWS_* variables describe (the S3 client says: {err})")
        })?;
        Ok(settings)
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        match self.prefix.is_empty() {
            true => format!("s3://{}", self.bucket),
            false => format!("s3://{}/{}", self.bucket, self.prefix),
        }
    }

    /// The S3 client. Every request gives up after the timeout, a failed one is retried twice
    /// within it, and nothing waits minutes for a store that is down.
    pub(super) fn client(&self) -> object_store::Result<AmazonS3> {
        let options = ClientOptions::new()
            .with_timeout(self.timeout)
            .with_connect_timeout(self.timeout.min(Duration::from_secs(2)));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: self.timeout,
        };
        // Client options first: the AWS_* variables may set some of them (AWS_ALLOW_HTTP).
        let mut builder = AmazonS3Builder::new()
            .with_client_options(options)
            .with_retry(retry);
        for (key, value) in &self.aws {
            builder = builder.with_config(*key, value);
        }
        builder.with_bucket_name(&self.bucket).build()
    }
}

/// Names the variables, never their values (a secret key is one of them).
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .aws
            .iter()
            .map(|(key, _)| key.as_ref().to_uppercase())
            .collect();
        f.debug_struct("Settings")
            .field("url", &self.url())
            .field("aws", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, vars: &[(&str, &str)]) -> Result<Settings, String> {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::new(url, vars, Duration::from_secs(5))
    }

    #[test]
    fn a_bucket_and_a_prefix_are_read() {
        let s = settings("s3://my-bucket/backups/app/", &[]).unwrap();
        assert_eq!(
            (s.bucket.as_str(), s.prefix.as_str()),
            ("my-bucket", "backups/app")
        );
        assert_eq!(s.url(), "s3://my-bucket/backups/app");
        assert_eq!(settings("s3://my-bucket", &[]).unwrap().prefix, "");
    }

    #[test]
    fn bad_urls_say_what_is_expected() {
        for url in [
            "my-bucket",
            "s3://",
            "s3://UPPER",
            "s3://b",
            "s3://ok-bucket/a/../b",
        ] {
            let err = settings(url, &[]).unwrap_err();
            assert!(err.contains("s3://BUCKET"), "{url}: {err}");
        }
    }

    #[test]
    fn a_plain_http_endpoint_needs_allow_http_and_secrets_never_show() {
        let endpoint = [("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")];
        let secret = ("AWS_SECRET_ACCESS_KEY", "very-secret-value");
        let id = ("AWS_ACCESS_KEY_ID", "key-id");
        let allowed = [endpoint[0], ("AWS_ALLOW_HTTP", "true"), id, secret];
        let ok = settings("s3://my-bucket", &allowed).unwrap();
        let shown = format!("{ok:?}");
        assert!(shown.contains("AWS_SECRET_ACCESS_KEY") && !shown.contains("very-secret"));
        let err = settings("s3://my-bucket", &endpoint).unwrap_err();
        assert!(err.contains("AWS_ALLOW_HTTP=true"), "{err}");
        // A secret without its key id is what the S3 client itself refuses.
        let err = settings("s3://my-bucket", &[secret]).unwrap_err();
        assert!(
            err.contains("AccessKeyId") && !err.contains("very-secret"),
            "{err}"
        );
    }
}
