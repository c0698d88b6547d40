//! H02 server commands (protocols.md §D.4): `*HQ,<id>,<command>,<fields>#` down, answered by the
//! device's `*HQ,<id>,V4,<command>,...#`. The command words are per model (`S20`, `D1`, `S71`,
//! ...), so lienwatch sends them as `raw` text and has no `locate` or `track` of its own. H02
//! carries no serial, but the `V4` echoes the command word: an answer is to the command in
//! flight that has its word, so that a late `V4` to an expired `S20` cannot close a `D1` sent
//! after it. Pure functions.

use crate::event::AnswerKey;

/// `*HQ,<id>,<text>#`.
pub fn encode(device_id: &str, text: &str) -> Vec<u8> {
    format!("*HQ,{device_id},{text}#").into_bytes()
}

/// What ties a `V4` to the command it answers: the word a command's text starts with.
pub fn key(text: &str) -> AnswerKey {
    AnswerKey::word(text.split(',').next().unwrap_or_default().trim())
}

/// The answer text of a well-formed `V4` message (everything between `*` and `#`) and the key of
/// the command word it echoes, if `line` is one: the device's acknowledgement of a server command.
pub fn answer(line: &[u8]) -> Option<(String, AnswerKey)> {
    let inner = line.strip_prefix(b"*")?.strip_suffix(b"#")?;
    let text = std::str::from_utf8(inner).ok()?;
    let mut fields = text.split(',');
    let (_maker, _id, command) = (fields.next()?, fields.next()?, fields.next()?);
    if command != "V4" || !text.bytes().all(|b| (0x20..0x7F).contains(&b)) {
        return None;
    }
    let word = fields.next().unwrap_or_default();
    Some((text.to_string(), key(word)))
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
            answer(b"*HQ,4106012345,V4,S71,22,10,130305,130307#"),
            Some((
                "HQ,4106012345,V4,S71,22,10,130305,130307".to_string(),
                key("S71,130305,22,10")
            ))
        );
        assert_eq!(answer(b"*HQ,4106012345,V1,103015#"), None);
        assert_eq!(answer(b"*HQ,4106012345#"), None);
    }

    #[test]
    fn a_v4_answers_only_the_command_whose_word_it_echoes() {
        let (_, s20) = answer(b"*HQ,4106012345,V4,S20,DONE,130305#").unwrap();
        assert_eq!(s20, key("S20,1,1"));
        assert_eq!(s20, key("s20"), "the word is compared without case");
        assert_ne!(s20, key("D1,30,10"));
        assert_ne!(key("S2"), key("S20"));
        // A word too long to pack, or none at all, falls back to the command in flight.
        assert_eq!(key("VERYLONGWORD,1"), AnswerKey::InOrder);
        assert_eq!(
            answer(b"*HQ,4106012345,V4#").map(|a| a.1),
            Some(AnswerKey::InOrder)
        );
    }
}
