#![no_main]
//! Commands to devices: the answer decoders on arbitrary bytes (no panic, only well-formed answers
//! out), and round trips of the encoders with text taken from the input (a GT06 0x80 is a frame
//! whose content is the flag and the text; a Teltonika Codec 12 response decodes to its text; an
//! H02 V4 is an answer). Then every session, fed the input, encodes commands without panicking.
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use lienwatch::protocol::downlink::Downlink;
use lienwatch::protocol::{
    gt06, gt06_command, h02_command, jt808, jt808_command, teltonika_command, SessionConfig,
    WireProtocol,
};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    for (extended, proto) in [(false, 0x15), (true, 0x21)] {
        let p = gt06::Packet {
            extended,
            proto,
            content: rest,
            serial: 0,
        };
        if let Some(a) = gt06_command::answer(&p) {
            let at = usize::from(!extended);
            assert_eq!(&a.flag.to_be_bytes()[..], &rest[at..at + 4]);
            let _ = gt06_command::answer_fix(&a.text);
        }
    }
    if let Some(r) = jt808_command::general_response(rest) {
        assert_eq!(r.result, rest[4]);
    }
    if let Some((_, body)) = jt808_command::location_answer(rest) {
        let _ = jt808::parse_location(body, 8 * 3600);
    }
    let _ = teltonika_command::response_text(rest);
    let _ = h02_command::answer(rest);

    let text: String = rest
        .iter()
        .take(gt06_command::MAX_COMMAND_TEXT)
        .map(|&b| char::from(0x20 + b % 0x5F))
        .collect();
    if !text.is_empty() {
        let flag = u32::from(sel) * 0x0101_0101;
        let f = gt06_command::encode(flag, text.as_bytes(), u16::from(sel)).expect("fits");
        let (p, n) = gt06::parse_frame(&f, 4096).expect("a frame").expect("complete");
        assert_eq!((p.proto, n), (gt06_command::PROTO_COMMAND, f.len()));
        assert_eq!(&p.content[1..5], &flag.to_be_bytes());
        assert_eq!(&p.content[5..], text.as_bytes());
        let r = teltonika_command::encode(teltonika_command::TYPE_RESPONSE, text.as_bytes());
        assert_eq!(
            teltonika_command::response_text(&r[8..r.len() - 4]).as_deref(),
            Some(text.as_str())
        );
        let v4 = format!("*HQ,4106012345,V4,{text}#");
        assert!(h02_command::answer(v4.as_bytes()).is_some() || text.contains('#'));
    }

    let cmds = [
        Downlink::Locate,
        Downlink::Track {
            interval_s: u16::from(sel),
            duration_s: 60,
        },
        Downlink::Raw(if text.is_empty() { "x".into() } else { text }),
    ];
    for wire in [
        WireProtocol::Gt06,
        WireProtocol::Jt808,
        WireProtocol::Teltonika,
        WireProtocol::H02,
    ] {
        let mut s = wire.session(SessionConfig {
            require_auth: sel & 1 == 1,
            ..SessionConfig::default()
        });
        let mut buf = BytesMut::from(rest);
        let mut out = Vec::new();
        let _ = s.feed(&mut buf, &mut out);
        for (i, c) in cmds.iter().enumerate() {
            let _ = s.encode_command(i as u64, c);
        }
    }
});
