//! Log lines journald files at their level. Under systemd, stderr goes to the journal, which
//! stores every line at the unit's default priority (info) unless the line starts with a
//! `<N>` syslog prefix (systemd.exec(5) `SyslogLevelPrefix=`, on by default). Without it,
//! `journalctl -u lienwatch -p warning` would show none of lienwatch's warnings or errors.

use tracing::Level;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Wraps an event format, putting `<3>` (error), `<4>` (warn), `<6>` (info) or `<7>` (debug,
/// trace) before each line.
pub struct SyslogPriority<F>(pub F);

/// The syslog priority of a tracing level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl<S, N, F> FormatEvent<S, N> for SyslogPriority<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_line_starts_with_its_priority_in_text_and_json() {
        for json in [false, true] {
            let buf = Buffer::default();
            let out = buf.clone();
            let make = move || out.clone();
            let base = tracing_subscriber::fmt().with_writer(make).with_ansi(false);
            let dispatch: tracing::Dispatch = if json {
                base.json()
                    .event_format(SyslogPriority(tracing_subscriber::fmt::format().json()))
                    .into()
            } else {
                base.event_format(SyslogPriority(
                    tracing_subscriber::fmt::format()
                        .with_ansi(false)
                        .without_time(),
                ))
                .into()
            };
            tracing::dispatcher::with_default(&dispatch, || {
                tracing::error!("disk gone");
                tracing::warn!("slow");
                tracing::info!("fine");
            });
            let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            let starts: Vec<&str> = text.lines().map(|l| &l[..3]).collect();
            assert_eq!(starts, ["<3>", "<4>", "<6>"], "{text}");
            if json {
                let first = text.lines().next().unwrap_or_default();
                assert!(serde_json::from_str::<serde_json::Value>(&first[3..]).is_ok());
            }
        }
    }
}
