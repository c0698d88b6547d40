//! Commands to devices over real sockets (CONTRACT.md "Commands to devices"): the exact bytes
//! reach a connected device within 1 s of the POST, its answer moves the command to `answered`,
//! an offline device gets it within 1 s of its next login (also after a SIGKILL in between),
//! an unanswered command expires, and a type the protocol cannot carry is refused with 422.

use crate::common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const JT808: &str = "[ingest]\njt808_auth_key = \"lienwatch\"\n";

fn post(d: &Daemon, device: &str, body: &str) -> (u16, Value) {
    d.api(
        "POST",
        &format!("/v1/devices/{device}/commands"),
        Some(body),
    )
}

fn command(d: &Daemon, id: &str) -> Value {
    let (s, v) = d.api("GET", &format!("/v1/commands/{id}"), None);
    assert_eq!(s, 200, "{v}");
    v
}

/// Waits until the command is in `state`, and returns it.
fn wait_state(d: &Daemon, id: &str, state: &str) -> Value {
    wait_for(Duration::from_secs(10), &format!("{id} {state}"), || {
        let v = command(d, id);
        (v["state"] == state).then_some(v)
    })
}

fn number(v: &Value) -> u32 {
    v["id"]
        .as_str()
        .and_then(|s| s.strip_prefix("cmd_"))
        .and_then(|n| n.parse().ok())
        .expect("cmd_<n> id")
}

/// Reads `n` bytes and asserts they came within 1 s of `since`.
fn read_within_1s(dev: &mut Device, n: usize, since: Instant) -> Vec<u8> {
    let got = dev.read_exact(n);
    let took = since.elapsed();
    assert!(took < Duration::from_secs(1), "command took {took:?}");
    eprintln!("command bytes at the device {took:?} after the POST was sent");
    got
}

mod gt06 {
    use super::*;

    const IMEI: &str = "868120145233604";

    /// The 0x80 a device expects: command length, 4-byte server flag, ASCII (protocols.md A.3).
    fn command_frame(flag: u32, text: &str, serial: u16) -> Vec<u8> {
        let mut c = vec![(4 + text.len()) as u8];
        c.extend_from_slice(&flag.to_be_bytes());
        c.extend_from_slice(text.as_bytes());
        gt06_frame(0x80, &c, serial)
    }

    /// A 0x21 text answer in a `79 79` frame: server flag, encoding 1 (ASCII), text.
    fn long_answer(flag: u32, text: &str, serial: u16) -> Vec<u8> {
        const X25: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);
        let mut c = flag.to_be_bytes().to_vec();
        c.push(1);
        c.extend_from_slice(text.as_bytes());
        let len = (1 + c.len() + 4) as u16;
        let mut f = vec![0x79, 0x79];
        f.extend_from_slice(&len.to_be_bytes());
        f.push(0x21);
        f.extend_from_slice(&c);
        f.extend_from_slice(&serial.to_be_bytes());
        let crc = X25.checksum(&f[2..]);
        f.extend_from_slice(&crc.to_be_bytes());
        f.extend_from_slice(&[0x0D, 0x0A]);
        f
    }

    /// A 0x15 text answer in a short frame: command length, server flag, text, language.
    fn short_answer(flag: u32, text: &str, serial: u16) -> Vec<u8> {
        let mut c = vec![(4 + text.len()) as u8];
        c.extend_from_slice(&flag.to_be_bytes());
        c.extend_from_slice(text.as_bytes());
        c.extend_from_slice(&[0x00, 0x02]);
        gt06_frame(0x15, &c, serial)
    }

    #[test]
    fn locate_and_raw_reach_the_device_and_its_answers_close_them() {
        let d = Daemon::start(&["gt06"], "");
        let mut dev = d.connect("gt06");
        dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));

        let t = Instant::now();
        let (s, v) = post(&d, IMEI, r#"{"type": "locate"}"#);
        assert_eq!(s, 202, "{v}");
        assert_eq!(v["type"], "locate");
        let flag = number(&v);
        let want = command_frame(flag, "WHERE#", 1);
        let got = read_within_1s(&mut dev, want.len(), t);
        assert_eq!(
            lienwatch::protocol::to_hex(&got),
            lienwatch::protocol::to_hex(&want)
        );
        let id = v["id"].as_str().unwrap().to_string();
        wait_state(&d, &id, "sent");
        let text =
            "Lat:N22.543096,Lon:E114.057865,Course:90.00,Speed:0.0000,DateTime:2024-05-20 10:30:15";
        dev.send(&long_answer(flag, text, 2));
        let v = wait_state(&d, &id, "answered");
        assert_eq!(v["answer"], text);
        assert_eq!(v["position"]["lat"], 22.543096);
        assert!(
            v["sent_at"].is_string() && v["answered_at"].is_string(),
            "{v}"
        );
        let (_, dv) = d.api("GET", &format!("/v1/devices/{IMEI}"), None);
        assert_eq!(dv["position"]["time"], "2024-05-20T10:30:15Z");

        // A raw text, answered in a short 0x15 frame.
        let t = Instant::now();
        let (s, v) = post(&d, IMEI, r#"{"type": "raw", "text": "STATUS#"}"#);
        assert_eq!(s, 202, "{v}");
        let flag = number(&v);
        let want = command_frame(flag, "STATUS#", 2);
        let got = read_within_1s(&mut dev, want.len(), t);
        assert_eq!(got, want);
        let id = v["id"].as_str().unwrap().to_string();
        wait_state(&d, &id, "sent");
        dev.send(&short_answer(flag, "Battery:5,GPS:OK", 3));
        let v = wait_state(&d, &id, "answered");
        assert_eq!(v["answer"], "Battery:5,GPS:OK");

        // Newest first.
        let (s, list) = d.api("GET", &format!("/v1/devices/{IMEI}/commands"), None);
        assert_eq!(s, 200);
        let ids: Vec<&str> = list["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![id.as_str(), &format!("cmd_{}", flag - 1)]);
        assert_eq!(
            d.metric(
                "lienwatch_commands_total",
                &[("protocol", "gt06"), ("outcome", "answered")]
            ),
            2.0
        );
    }

    #[test]
    fn the_locate_text_is_the_listeners_and_refusals_are_422_400_404() {
        let mut d = Daemon::configure(&["gt06"], "");
        let cfg = std::fs::read_to_string(&d.config).unwrap();
        std::fs::write(
            &d.config,
            cfg.replace(
                "transport = \"tcp\"\n",
                "transport = \"tcp\"\ngt06_locate = \"DWXX#\"\n",
            ),
        )
        .unwrap();
        d.spawn();
        let mut dev = d.connect("gt06");
        dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
        let (s, v) = post(&d, IMEI, r#"{"type": "locate"}"#);
        assert_eq!(s, 202, "{v}");
        let want = command_frame(number(&v), "DWXX#", 1);
        assert_eq!(dev.read_exact(want.len()), want);

        let (s, v) = post(
            &d,
            IMEI,
            r#"{"type": "track", "interval": "10s", "duration": "30m"}"#,
        );
        assert_eq!(s, 422, "{v}");
        let (s, _) = post(&d, IMEI, r#"{"type": "cut_fuel"}"#);
        assert_eq!(s, 400);
        let (s, _) = post(&d, IMEI, r#"{"type": "raw", "text": "bad\u0001text"}"#);
        assert_eq!(s, 400);
        let long = "A".repeat(300);
        let (s, _) = post(&d, IMEI, &format!(r#"{{"type": "raw", "text": "{long}"}}"#));
        assert_eq!(s, 400);
        // Within the API's 256 bytes but past what a GT06 0x80 frame holds (245): refused now,
        // not accepted and failed later.
        let long = "A".repeat(250);
        let (s, v) = post(&d, IMEI, &format!(r#"{{"type": "raw", "text": "{long}"}}"#));
        assert_eq!(s, 422, "{v}");
        assert!(v["error"].as_str().unwrap_or("").contains("245"), "{v}");
        let (s, _) = post(&d, IMEI, r#"{"type": "locate", "expires": "soon"}"#);
        assert_eq!(s, 400);
        let (s, _) = post(&d, "4242", r#"{"type": "locate"}"#);
        assert_eq!(s, 404);
        let (s, _) = d.api("GET", "/v1/commands/cmd_999", None);
        assert_eq!(s, 404);
    }

    /// An operator withdraws a command queued for a device that is off (a relay command for a
    /// car whose loan was cured): it is `failed` ("cancelled"), and the device's next login
    /// brings the command queued after it, not the cancelled one. A command already final, or
    /// unknown, is refused and nothing changes.
    #[test]
    fn a_cancelled_command_never_reaches_the_device() {
        let d = Daemon::start(&["gt06"], "");
        let mut dev = d.connect("gt06");
        dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
        drop(dev);
        d.wait_metric("lienwatch_connections", &[("protocol", "gt06")], |v| {
            v == 0.0
        });
        let (s, relay) = post(&d, IMEI, r#"{"type": "raw", "text": "RELAY,1#"}"#);
        assert_eq!(s, 202, "{relay}");
        let (_, locate) = post(&d, IMEI, r#"{"type": "locate"}"#);
        let relay_id = relay["id"].as_str().unwrap();
        let (s, v) = d.api("DELETE", &format!("/v1/commands/{relay_id}"), None);
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["state"], "failed");
        assert_eq!(v["error"], "cancelled by the operator");
        assert_eq!(command(&d, relay_id)["state"], "failed");
        let (s, v) = d.api("DELETE", &format!("/v1/commands/{relay_id}"), None);
        assert_eq!(s, 409, "{v}");
        let (s, _) = d.api("DELETE", "/v1/commands/cmd_999", None);
        assert_eq!(s, 404);
        let (s, _) = d.api("DELETE", "/v1/commands/nonsense", None);
        assert_eq!(s, 404);

        // Back online: the login's reply, then the locate, the command after the relay.
        let mut dev = d.connect("gt06");
        let t = Instant::now();
        dev.exchange_bytes(&gt06_login(IMEI, 2), &gt06_ack(0x01, 2));
        let want = command_frame(number(&locate), "WHERE#", 1);
        assert_eq!(read_within_1s(&mut dev, want.len(), t), want);
        assert_eq!(command(&d, relay_id)["state"], "failed");
        assert_eq!(
            d.metric(
                "lienwatch_commands_total",
                &[("protocol", "gt06"), ("outcome", "failed")]
            ),
            1.0
        );
    }

    /// GT06 answers name their command (the server flag): a command the device leaves
    /// unanswered holds back no other, which goes out within 1 s as for an idle device.
    #[test]
    fn an_unanswered_command_holds_back_no_other() {
        let d = Daemon::start(&["gt06"], "");
        let mut dev = d.connect("gt06");
        dev.exchange_bytes(&gt06_login(IMEI, 1), &gt06_ack(0x01, 1));
        let (_, first) = post(&d, IMEI, r#"{"type": "locate", "expires": "2s"}"#);
        let want = command_frame(number(&first), "WHERE#", 1);
        assert_eq!(dev.read_exact(want.len()), want);
        let t = Instant::now();
        let (_, second) = post(&d, IMEI, r#"{"type": "raw", "text": "STATUS#"}"#);
        let want = command_frame(number(&second), "STATUS#", 2);
        assert_eq!(read_within_1s(&mut dev, want.len(), t), want);
        assert_eq!(command(&d, first["id"].as_str().unwrap())["state"], "sent");
        wait_state(&d, first["id"].as_str().unwrap(), "expired");
        assert_eq!(command(&d, second["id"].as_str().unwrap())["state"], "sent");
    }
}

mod jt808 {
    use super::*;
    use lienwatch::protocol::jt808::{
        auth_code, checksum, escape_into, parse_frame, unescape_into,
    };

    /// A terminal of either header version, with its number as BCD.
    struct Terminal {
        dev: Device,
        number: String,
        v2019: bool,
        serial: u16,
    }

    fn bcd(number: &str, len: usize) -> Vec<u8> {
        let digits = format!("{number:0>w$}", w = len * 2);
        let b = digits.as_bytes();
        (0..len)
            .map(|k| ((b[2 * k] - b'0') << 4) | (b[2 * k + 1] - b'0'))
            .collect()
    }

    /// The exact frame lienwatch owes: built here from the header layout of protocols.md B.2.
    fn frame(msg_id: u16, v2019: bool, number: &str, serial: u16, body: &[u8]) -> Vec<u8> {
        let mut raw = msg_id.to_be_bytes().to_vec();
        let attrs = body.len() as u16 | if v2019 { 0x4000 } else { 0 };
        raw.extend_from_slice(&attrs.to_be_bytes());
        if v2019 {
            raw.push(1);
            raw.extend_from_slice(&bcd(number, 10));
        } else {
            raw.extend_from_slice(&bcd(number, 6));
        }
        raw.extend_from_slice(&serial.to_be_bytes());
        raw.extend_from_slice(body);
        raw.push(checksum(&raw));
        let mut out = vec![0x7E];
        escape_into(&raw, &mut out);
        out.push(0x7E);
        out
    }

    /// A 0x0200 body at Shenzhen, 2024-05-20 18:30:15 GMT+8 (10:30:15 UTC).
    fn location_body() -> Vec<u8> {
        let mut b = vec![0, 0, 0, 0, 0, 0x0C, 0x00, 0x02];
        b.extend_from_slice(&22_543_096u32.to_be_bytes());
        b.extend_from_slice(&114_057_865u32.to_be_bytes());
        b.extend_from_slice(&[0x00, 0x23, 0x02, 0x6F, 0x00, 0x5A]);
        b.extend_from_slice(&[0x24, 0x05, 0x20, 0x18, 0x30, 0x15]);
        b
    }

    impl Terminal {
        fn connect(d: &Daemon, number: &str, v2019: bool) -> Terminal {
            Terminal {
                dev: d.connect("jt808"),
                number: number.to_string(),
                v2019,
                serial: 0,
            }
        }

        fn send(&mut self, msg_id: u16, body: &[u8]) {
            self.serial += 1;
            let f = frame(msg_id, self.v2019, &self.number, self.serial, body);
            self.dev.send(&f);
        }

        /// One whole frame from lienwatch, as sent (escaped, with flags).
        fn read_frame(&mut self) -> Vec<u8> {
            let mut raw = self.dev.read_exact(1);
            assert_eq!(raw, [0x7E]);
            loop {
                let b = self.dev.read_exact(1);
                raw.extend_from_slice(&b);
                if b == [0x7E] && raw.len() > 2 {
                    return raw;
                }
            }
        }

        /// The message id, serial and body of a frame.
        fn parse(raw: &[u8]) -> (u16, u16, Vec<u8>) {
            let mut data = Vec::new();
            unescape_into(&raw[1..raw.len() - 1], &mut data).expect("escaping");
            let f = parse_frame(&data).expect("a frame");
            (f.header.msg_id, f.header.serial, f.body.to_vec())
        }

        fn reply(&mut self) -> (u16, u16, Vec<u8>) {
            let raw = self.read_frame();
            Self::parse(&raw)
        }

        /// Registration (2013 or 2019 body) and authentication with the code from the reply.
        fn log_in(&mut self) {
            let mut b = vec![0x00, 0x2C, 0x01, 0x2C];
            let (maker, model, id) = if self.v2019 { (11, 30, 30) } else { (5, 20, 7) };
            let mut put = |s: &[u8], n: usize| {
                let mut f = s.to_vec();
                f.resize(n, 0);
                b.extend_from_slice(&f);
            };
            put(b"GPS01", maker);
            put(b"CL-WIRELESS", model);
            put(b"A123456", id);
            b.push(1);
            b.extend_from_slice(b"B12345");
            self.send(0x0100, &b);
            let (id, _, reply) = self.reply();
            assert_eq!((id, reply[2]), (0x8100, 0), "registered");
            let code = auth_code(b"lienwatch", &lienwatch::event::DeviceId::new(&self.number));
            assert_eq!(code.as_bytes(), &reply[3..]);
            self.authenticate();
        }

        fn authenticate(&mut self) {
            let code = auth_code(b"lienwatch", &lienwatch::event::DeviceId::new(&self.number));
            let body = if self.v2019 {
                let mut b = vec![code.len() as u8];
                b.extend_from_slice(code.as_bytes());
                b.extend_from_slice(b"868120145233604");
                let mut v = b"V1.0.0".to_vec();
                v.resize(20, 0);
                b.extend_from_slice(&v);
                b
            } else {
                code.into_bytes()
            };
            self.send(0x0102, &body);
            let (id, _, reply) = self.reply();
            assert_eq!((id, reply[4]), (0x8001, 0), "authenticated");
        }
    }

    fn locate_and_track(v2019: bool, number: &str) {
        let d = Daemon::start(&["jt808"], JT808);
        let mut t = Terminal::connect(&d, number, v2019);
        t.log_in();

        // locate: 0x8201 with an empty body, the platform's next serial (3 after 0x8100, 0x8001).
        let at = Instant::now();
        let (s, v) = post(&d, number, r#"{"type": "locate"}"#);
        assert_eq!(s, 202, "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        let got = t.read_frame();
        assert!(at.elapsed() < Duration::from_secs(1), "{:?}", at.elapsed());
        assert_eq!(got, frame(0x8201, v2019, number, 3, &[]));
        wait_state(&d, &id, "sent");
        // 0x0201: the query's serial, then a location body; acknowledged like a location.
        let mut body = 3u16.to_be_bytes().to_vec();
        body.extend_from_slice(&location_body());
        t.send(0x0201, &body);
        let (rid, _, ack) = t.reply();
        assert_eq!((rid, &ack[2..]), (0x8001, &[0x02, 0x01, 0][..]));
        let v = wait_state(&d, &id, "answered");
        assert_eq!(v["position"]["lat"], 22.543096, "{v}");
        assert_eq!(v["position"]["time"], "2024-05-20T10:30:15Z");
        let (_, dv) = d.api("GET", &format!("/v1/devices/{number}"), None);
        assert_eq!(dv["position"]["time"], "2024-05-20T10:30:15Z", "{dv}");
        assert_eq!(dv["position"]["lon"], 114.057865);

        // track: 0x8202, interval WORD and duration DWORD; answered by 0x0001 naming it.
        let at = Instant::now();
        let (s, v) = post(
            &d,
            number,
            r#"{"type": "track", "interval": "10s", "duration": "30m"}"#,
        );
        assert_eq!(s, 202, "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        let got = t.read_frame();
        assert!(at.elapsed() < Duration::from_secs(1));
        let mut want_body = 10u16.to_be_bytes().to_vec();
        want_body.extend_from_slice(&1800u32.to_be_bytes());
        assert_eq!(got, frame(0x8202, v2019, number, 5, &want_body));
        // Answered at once, as a terminal does: the command was still sent before its answer.
        t.send(0x0001, &[0x00, 0x05, 0x82, 0x02, 0x00]);
        let v = wait_state(&d, &id, "answered");
        assert_eq!(v["answer"], "success");
        let stamp = |k: &str| {
            lienwatch::time::Timestamp::parse_rfc3339(v[k].as_str().unwrap_or_default())
                .unwrap_or_else(|| panic!("{k}: {v}"))
        };
        assert!(stamp("sent_at") <= stamp("answered_at"), "{v}");
        assert_eq!(
            (v["interval_s"].as_u64(), v["duration_s"].as_u64()),
            (Some(10), Some(1800))
        );

        // JT/T 808 has no text command.
        let (s, _) = post(&d, number, r#"{"type": "raw", "text": "hello"}"#);
        assert_eq!(s, 422);
    }

    #[test]
    fn jt808_2013_locate_and_track() {
        locate_and_track(false, "13912345678");
    }

    #[test]
    fn jt808_2019_locate_and_track() {
        locate_and_track(true, "13912340019");
    }

    #[test]
    fn a_command_for_an_offline_terminal_goes_out_at_its_next_authentication_even_after_sigkill() {
        const NUMBER: &str = "13912345670";
        let mut d = Daemon::start(&["jt808"], JT808);
        {
            let mut t = Terminal::connect(&d, NUMBER, false);
            t.log_in();
        }
        // Offline now (its connection is gone): the command waits.
        let (s, v) = post(&d, NUMBER, r#"{"type": "locate"}"#);
        assert_eq!(s, 202, "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        let state = command(&d, &id)["state"].clone();
        assert!(state == "queued" || state == "sent", "{state}");
        d.kill9();
        d.spawn();
        assert_eq!(command(&d, &id)["id"], id.as_str(), "kept across the kill");

        let mut t = Terminal::connect(&d, NUMBER, false);
        // A heartbeat before authentication draws no command.
        t.send(0x0002, &[]);
        let (rid, _, _) = t.reply();
        assert_eq!(rid, 0x8001);
        let at = Instant::now();
        t.authenticate();
        let (mid, serial, body) = t.reply();
        assert!(at.elapsed() < Duration::from_secs(1), "{:?}", at.elapsed());
        assert_eq!((mid, body.len()), (0x8201, 0));
        wait_state(&d, &id, "sent");
        let mut answer = serial.to_be_bytes().to_vec();
        answer.extend_from_slice(&location_body());
        t.send(0x0201, &answer);
        t.reply();
        wait_state(&d, &id, "answered");
    }

    #[test]
    fn an_unanswered_command_expires_on_time() {
        const NUMBER: &str = "13912345671";
        let d = Daemon::start(&["jt808"], JT808);
        {
            let mut t = Terminal::connect(&d, NUMBER, false);
            t.log_in();
        }
        // Offline: the daemon has seen the connection close.
        d.wait_metric("lienwatch_connections", &[("protocol", "jt808")], |v| {
            v == 0.0
        });
        let (s, v) = post(&d, NUMBER, r#"{"type": "locate", "expires": "2s"}"#);
        assert_eq!(s, 202, "{v}");
        let v = wait_state(&d, v["id"].as_str().unwrap(), "expired");
        assert!(v["answered_at"].is_null());
        assert_eq!(
            d.metric(
                "lienwatch_commands_total",
                &[("protocol", "jt808"), ("outcome", "expired")]
            ),
            1.0
        );
    }
}

mod teltonika {
    use super::*;

    const IMEI: &str = "356307042441013";

    /// A Codec 12 frame of `kind` (5 command, 6 response), CRC-16/ARC (protocols.md C.2).
    fn codec12(kind: u8, text: &str) -> Vec<u8> {
        const ARC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_ARC);
        let mut data = vec![0x0C, 1, kind];
        data.extend_from_slice(&(text.len() as u32).to_be_bytes());
        data.extend_from_slice(text.as_bytes());
        data.push(1);
        let mut f = vec![0, 0, 0, 0];
        f.extend_from_slice(&(data.len() as u32).to_be_bytes());
        f.extend_from_slice(&data);
        f.extend_from_slice(&u32::from(ARC.checksum(&data)).to_be_bytes());
        f
    }

    #[test]
    fn getgps_over_codec_12_and_its_response() {
        let d = Daemon::start(&["teltonika"], "");
        let mut dev = d.connect("teltonika");
        let mut hs = vec![0x00, 0x0F];
        hs.extend_from_slice(IMEI.as_bytes());
        dev.exchange_bytes(&hs, &[0x01]);
        let at = Instant::now();
        let (s, v) = post(&d, IMEI, r#"{"type": "locate"}"#);
        assert_eq!(s, 202, "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        let want = codec12(5, "getgps");
        assert_eq!(read_within_1s(&mut dev, want.len(), at), want);
        wait_state(&d, &id, "sent");
        let text = "GPS:1 Sat:9 Lat:22.543096 Long:114.057865 Alt:35 Speed:0 Dir:90";
        dev.send(&codec12(6, text));
        let v = wait_state(&d, &id, "answered");
        assert_eq!(v["answer"], text);
        let (s, _) = post(
            &d,
            IMEI,
            r#"{"type": "track", "interval": "10s", "duration": "1h"}"#,
        );
        assert_eq!(s, 422);
    }
}
