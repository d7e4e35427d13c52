//! W3C trace context (https://www.w3.org/TR/trace-context/). Dapr records a span for each
//! API call and links them into one trace only if the app passes the `traceparent` and
//! `tracestate` of its incoming request on to its calls; this service does so unchanged.

/// The incoming request's trace context, passed on to every Dapr call it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    traceparent: String,
    tracestate: Option<String>,
}

impl TraceContext {
    /// Reads the two headers through `header`. A malformed `traceparent` is ignored, and
    /// `tracestate` with it, as the specification says.
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<TraceContext> {
        let traceparent = header("traceparent")?.trim();
        trace_id(traceparent)?;
        let tracestate = header("tracestate")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        Some(TraceContext {
            traceparent: traceparent.to_string(),
            tracestate,
        })
    }

    /// The headers to send on.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once(("traceparent", self.traceparent.as_str()))
            .chain(self.tracestate.as_deref().map(|s| ("tracestate", s)))
    }
}

/// The trace id of a well-formed `traceparent` (`version-traceid-parentid-flags`, lowercase
/// hex, ids not all zeros), else `None`. Versions after 00 may append fields.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let fields: Vec<&str> = traceparent.split('-').collect();
    let is_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let [version, trace_id, parent_id, flags, rest @ ..] = fields.as_slice() else {
        return None;
    };
    let well_formed = is_hex(version, 2)
        && *version != "ff"
        && (rest.is_empty() || *version != "00")
        && is_hex(trace_id, 32)
        && is_hex(parent_id, 16)
        && is_hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0')
        && parent_id.bytes().any(|b| b != b'0');
    well_formed.then_some(*trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn context(traceparent: Option<&'static str>, tracestate: Option<&'static str>) -> Option<TraceContext> {
        TraceContext::from_headers(move |name| match name {
            "traceparent" => traceparent,
            "tracestate" => tracestate,
            _ => None,
        })
    }

    #[test]
    fn both_headers_are_passed_on_unchanged() {
        let context = context(Some(PARENT), Some("congo=t61rcWkgMzE")).unwrap();
        let headers: Vec<_> = context.headers().collect();
        assert_eq!(
            headers,
            [("traceparent", PARENT), ("tracestate", "congo=t61rcWkgMzE")]
        );
    }

    #[test]
    fn tracestate_alone_or_empty_is_not_sent() {
        assert_eq!(context(None, Some("congo=t61rcWkgMzE")), None);
        assert_eq!(context(Some(PARENT), Some("")).unwrap().headers().count(), 1);
    }

    #[test]
    fn the_trace_id_of_a_well_formed_traceparent() {
        assert_eq!(trace_id(PARENT), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(
            trace_id("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn malformed_traceparents_are_ignored_with_their_tracestate() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id(bad), None, "{bad}");
            assert_eq!(context(Some(bad), Some("congo=t61rcWkgMzE")), None, "{bad}");
        }
    }
}
