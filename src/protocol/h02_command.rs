//! H02 server commands (protocols.md §D.4): `*HQ,<id>,<command>,<fields>#` down, answered by the
//! device's `*HQ,<id>,V4,<command>,...#`. The command words are per model (`S20`, `D1`, `S71`,
//! ...), so lienwatch sends them as `raw` text and has no `locate` or `track` of its own. H02
//! carries no serial: an answer is to the command in flight. Pure functions.

/// `*HQ,<id>,<text>#`.
pub fn encode(device_id: &str, text: &str) -> Vec<u8> {
    format!("*HQ,{device_id},{text}#").into_bytes()
}

/// The answer text of a well-formed `V4` message (everything between `*` and `#`), if `line` is
/// one: the device's acknowledgement of a server command.
pub fn answer(line: &[u8]) -> Option<String> {
    let inner = line.strip_prefix(b"*")?.strip_suffix(b"#")?;
    let text = std::str::from_utf8(inner).ok()?;
    let mut fields = text.split(',');
    let (_maker, _id, command) = (fields.next()?, fields.next()?, fields.next()?);
    (command == "V4" && text.bytes().all(|b| (0x20..0x7F).contains(&b))).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_their_v4_answers() {
        assert_eq!(
            encode("4106012345", "S71,130305,22,10"),
            b"*HQ,4106012345,S71,130305,22,10#".to_vec()
        );
        assert_eq!(
            answer(b"*HQ,4106012345,V4,S71,22,10,130305,130307#").as_deref(),
            Some("HQ,4106012345,V4,S71,22,10,130305,130307")
        );
        assert_eq!(answer(b"*HQ,4106012345,V1,103015#"), None);
        assert_eq!(answer(b"*HQ,4106012345#"), None);
    }
}
