//! The line an agent's egress relay sends first when it carries a sandbox's proxy
//! connection to the server over TCP (the Kubernetes backend): the server's listener is
//! shared by every sandbox, so each connection says whose it is and proves it with the
//! sandbox's agent secret before any of its bytes reach that sandbox's egress handler.
//!
//! `KILN-EGRESS/1 <sandbox id> <secret>\n`; ids are `[A-Za-z0-9_-]`, secrets printable
//! ASCII without spaces, so the line splits on spaces unambiguously.

/// What the line starts with.
pub const EGRESS_PREAMBLE_TAG: &str = "KILN-EGRESS/1";
/// The longest line accepted, newline included; a longer one is refused unread.
pub const MAX_EGRESS_PREAMBLE: usize = 512;

/// The line for sandbox `id` with `secret`, newline included.
pub fn egress_preamble(id: &str, secret: &str) -> String {
    format!("{EGRESS_PREAMBLE_TAG} {id} {secret}\n")
}

/// The sandbox id and secret of a line (without its newline); `None` if it is not one.
pub fn parse_egress_preamble(line: &[u8]) -> Option<(&str, &str)> {
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    let (tag, id, secret) = (words.next()?, words.next()?, words.next()?);
    let id_ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let secret_ok = !secret.is_empty() && secret.bytes().all(|b| b.is_ascii_graphic());
    (tag == EGRESS_PREAMBLE_TAG && words.next().is_none() && id_ok && secret_ok)
        .then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preamble_round_trips_and_anything_else_is_refused() {
        let line = egress_preamble("Life_1-a", "s3cretS3cretS3cret");
        assert!(line.ends_with('\n'));
        assert_eq!(
            parse_egress_preamble(line.trim_end().as_bytes()),
            Some(("Life_1-a", "s3cretS3cretS3cret"))
        );
        for bad in [
            "",
            "KILN-EGRESS/1",
            "KILN-EGRESS/1 id",
            "KILN-EGRESS/1 id ",
            "KILN-EGRESS/2 id secret",
            "CONNECT example.com:443 HTTP/1.1",
            "KILN-EGRESS/1 id secret extra",
            "KILN-EGRESS/1 i.d secret",
            "KILN-EGRESS/1  secret",
            "KILN-EGRESS/1 id sec\tret",
        ] {
            assert_eq!(parse_egress_preamble(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_egress_preamble(b"KILN-EGRESS/1 id \xff"), None);
    }
}
