//! The process log on stderr: `text` for people, or `json`, one object per line with stable
//! field names for collectors: `ts` (RFC 3339, UTC, microseconds), `level` (`error` …
//! `trace`), `target` (the module), `msg`, then the event's own fields by their names
//! (`call`, `trunk`, `caller` (masked), `error`…). Spans are not logged.
//!
//! The level comes from `[log] level` unless `RUST_LOG` is set. A line that cannot be
//! written (a full disk) is lost silently: reporting it on stderr would panic the task that
//! logged.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the process's logger. `default_filter` applies unless `RUST_LOG` is set.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
    };
}

/// One JSON object per event.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writeln!(writer, "{}", json_line(event))
    }
}

/// The JSON object of one event.
pub fn json_line(event: &Event<'_>) -> Value {
    let meta = event.metadata();
    let mut map = Map::new();
    map.insert(
        "ts".into(),
        Value::String(
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
    );
    map.insert(
        "level".into(),
        Value::String(meta.level().as_str().to_ascii_lowercase()),
    );
    map.insert("target".into(), Value::String(meta.target().to_owned()));
    event.record(&mut Fields(&mut map));
    if !map.contains_key("msg") {
        map.insert("msg".into(), Value::String(String::new()));
    }
    Value::Object(map)
}

/// Collects an event's fields; `message` becomes `msg`, and a field named like one of the
/// fixed keys is kept under `field.<name>`.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let key = match field.name() {
            "message" => "msg".to_owned(),
            n @ ("ts" | "level" | "target" | "msg") => format!("field.{n}"),
            n => n.to_owned(),
        };
        self.0.insert(key, value);
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}
