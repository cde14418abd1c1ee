//! The enrollment token a hub prints for a device: `<hub node>.<user id>.<device>.<secret>`.
//!
//! The secret is what the hub's store verifies (it keeps only its hash); the other parts tell
//! the device, at `init`, which hub node to expect, which user it acts for and which device id
//! to take. None of them is trusted by the hub: it checks the secret and compares the device
//! and user the secret was issued for. Node ids never contain a dot, nor does the hex secret.

use sellsync_model::{DeviceId, UserId};

/// A parsed enrollment token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// The hub's node id.
    pub hub: DeviceId,
    /// The user the device acts for.
    pub user: UserId,
    /// The device id the token was issued to.
    pub device: DeviceId,
    /// The whole token, as presented to the hub.
    pub token: String,
}

/// A token that does not have the enrollment shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed token: {0}")]
pub struct BadToken(pub String);

/// Joins the parts of an enrollment token.
pub fn format(hub: &DeviceId, user: UserId, device: &DeviceId, secret: &str) -> String {
    format!("{hub}.{}.{device}.{secret}", user.0)
}

/// Parses an enrollment token.
pub fn parse(token: &str) -> Result<Enrollment, BadToken> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [hub, user, device, secret] = parts.as_slice() else {
        return Err(BadToken("expected <hub>.<user>.<device>.<secret>".into()));
    };
    if secret.is_empty() {
        return Err(BadToken("empty secret".into()));
    }
    Ok(Enrollment {
        hub: hub.parse().map_err(|e| BadToken(format!("hub: {e}")))?,
        user: UserId(
            user.parse()
                .map_err(|_| BadToken("user is not a number".into()))?,
        ),
        device: device
            .parse()
            .map_err(|e| BadToken(format!("device: {e}")))?,
        token: token.trim().to_owned(),
    })
}

/// The secret part of a token (the whole string if it has no dot).
pub fn secret_of(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let t = format(
            &"hub".parse().unwrap(),
            UserId(7),
            &"rita-phone".parse().unwrap(),
            "ab12",
        );
        let e = parse(&t).unwrap();
        assert_eq!(e.user, UserId(7));
        assert_eq!(e.device.as_str(), "rita-phone");
        assert_eq!(secret_of(&t), "ab12");
        assert!(parse("hub.x.dev.ab").is_err());
        assert!(parse("hub.1.dev.").is_err());
        assert!(parse("garbage").is_err());
    }
}
