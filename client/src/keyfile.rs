//! Key files: `NAME.key` (private, mode 0600: the two P-256 scalars) and `NAME.pub` (the public key bundle,
//! which the room owner needs to grant access).

use crate::ClientError;
use base64::Engine as _;
use pod_protocol::keys::{UserKeyBundle, UserSecrets};
use std::io::Write as _;
use std::path::Path;
use zeroize::Zeroizing;

const KEY_FORMAT: &str = "secure-pod-key/v1";
const PUB_PREFIX: &str = "secure-pod-user/v1 ";

/// Writes a new key pair as `<out>.key` and `<out>.pub`; refuses to overwrite.
pub fn generate(out: &Path) -> Result<UserSecrets, ClientError> {
    let key_path = out.with_extension("key");
    let pub_path = out.with_extension("pub");
    if key_path.exists() || pub_path.exists() {
        return Err(ClientError::Local(format!(
            "{} or {} exists; refusing to overwrite a key",
            key_path.display(),
            pub_path.display()
        )));
    }
    let (secrets, s, d) =
        UserSecrets::generate_exportable().map_err(|e| ClientError::Local(e.to_string()))?;
    let text = Zeroizing::new(
        serde_json::json!({
            "format": KEY_FORMAT,
            "signing_scalar": hex::encode(&*s),
            "decryption_scalar": hex::encode(&*d),
            "user_id": hex::encode(secrets.bundle.id()),
        })
        .to_string(),
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let local = |e: std::io::Error| ClientError::Local(format!("{}: {e}", key_path.display()));
    options
        .open(&key_path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(local)?;
    std::fs::write(&pub_path, public_text(&secrets.bundle))
        .map_err(|e| ClientError::Local(format!("{}: {e}", pub_path.display())))?;
    Ok(secrets)
}

/// The `.pub` text of a bundle.
pub fn public_text(bundle: &UserKeyBundle) -> String {
    format!(
        "{PUB_PREFIX}{}\n# user id {}\n",
        base64::engine::general_purpose::STANDARD.encode(bundle.as_bytes()),
        hex::encode(bundle.id())
    )
}

/// Reads a `.key` file.
pub fn read_key(path: &Path) -> Result<UserSecrets, ClientError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| ClientError::Local(format!("{}: {e}", path.display())))?,
    );
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| ClientError::Local(format!("{} is not a key file", path.display())))?;
    if v.get("format").and_then(|f| f.as_str()) != Some(KEY_FORMAT) {
        return Err(ClientError::Local(format!(
            "{} is not a {KEY_FORMAT} key file",
            path.display()
        )));
    }
    let scalar = |name: &str| -> Result<Zeroizing<Vec<u8>>, ClientError> {
        v.get(name)
            .and_then(|s| s.as_str())
            .and_then(|s| hex::decode(s).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| ClientError::Local(format!("{}: `{name}` is missing", path.display())))
    };
    UserSecrets::from_scalars(&scalar("signing_scalar")?, &scalar("decryption_scalar")?)
        .map_err(|e| ClientError::Local(format!("{}: {e}", path.display())))
}

/// Parses `.pub` text.
pub fn parse_public(text: &str) -> Result<UserKeyBundle, ClientError> {
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(PUB_PREFIX))
        .ok_or_else(|| ClientError::Local("not a Secure Pod public key (.pub) file".into()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .map_err(|_| ClientError::Local("the public key is not base64".into()))?;
    UserKeyBundle::parse(&bytes)
        .map_err(|e| ClientError::Local(format!("invalid public key bundle: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("alice");
        let made = generate(&base).unwrap();
        let read = read_key(&base.with_extension("key")).unwrap();
        assert_eq!(read.bundle, made.bundle);
        let public =
            parse_public(&std::fs::read_to_string(base.with_extension("pub")).unwrap()).unwrap();
        assert_eq!(public, made.bundle);
        assert!(generate(&base).is_err(), "never overwrites");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(base.with_extension("key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0);
        }
    }
}
