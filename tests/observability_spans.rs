//! `tracing` spans: one `dag` span per execution and one `attempt` span per attempt
//! (dag, function, attempt, node) under it, which the user's code runs inside. A test
//! binary of its own: it installs a global subscriber (functions run on other threads).

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use handoff::{Backoff, Dag, ExecuteOptions, Function, Registry, Resources};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use common::{guarded, start_local};

type Fields = BTreeMap<String, String>;

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    fields: Fields,
    parent: Option<String>,
}

#[derive(Default, Clone)]
struct Recorded {
    spans: Arc<Mutex<Vec<Seen>>>,
    /// Events named `inside` and the fields of the span they happened in.
    inside: Arc<Mutex<Vec<Option<Seen>>>>,
}

struct Fieldset(Fields);

impl Visit for Fieldset {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// The fields recorded at creation, kept in the span's extensions.
struct Kept(Seen);

impl<S> Layer<S> for Recorded
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fieldset(Fields::new());
        attrs.record(&mut fields);
        let span = ctx.span(id).expect("a new span is known");
        let seen = Seen {
            name: attrs.metadata().name().to_owned(),
            fields: fields.0,
            parent: span.parent().map(|p| p.name().to_owned()),
        };
        span.extensions_mut().insert(Kept(seen.clone()));
        self.spans.lock().expect("lock").push(seen);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fieldset(Fields::new());
        event.record(&mut fields);
        if fields.0.get("message").map(String::as_str) != Some("inside") {
            return;
        }
        let span = ctx
            .event_span(event)
            .and_then(|s| s.extensions().get::<Kept>().map(|k| k.0.clone()));
        self.inside.lock().expect("lock").push(span);
    }
}

#[actix::test]
async fn dag_and_attempt_spans_carry_their_ids_and_wrap_user_code() {
    let recorded = Recorded::default();
    let subscriber = tracing_subscriber::registry()
        .with(recorded.clone())
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let mut registry = Registry::new();
    registry
        .register("shout", |x: i64| {
            tracing::info!("inside");
            x
        })
        .expect("shout");
    let failures = Arc::new(Mutex::new(1_u32));
    registry
        .register_fallible("once_failing", move |x: i64| {
            let mut left = failures.lock().expect("lock");
            tracing::info!("inside");
            if *left > 0 {
                *left -= 1;
                Err("first attempt fails".to_owned())
            } else {
                Ok(x)
            }
        })
        .expect("once_failing");
    let node = start_local(registry, Resources::new().cpu(2)).await;
    let dag = Dag::with_id("spanned")
        .with(Function::new("a", "shout").extra_arg(1_i64))
        .with(Function::new("b", "once_failing").arg("a"))
        .validate()
        .expect("valid");
    let options = ExecuteOptions::default().backoff(Backoff::None);
    let done = guarded("execute", node.execute(dag, options))
        .await
        .expect("executes");
    assert_eq!(done.results.get::<i64>("b"), Ok(1));

    let spans = recorded.spans.lock().expect("lock").clone();
    let dags: Vec<&Seen> = spans
        .iter()
        .filter(|s| s.name == "dag" && s.fields.get("dag").map(String::as_str) == Some("spanned"))
        .collect();
    assert_eq!(dags.len(), 1, "{spans:?}");
    assert_eq!(dags[0].fields["node"], "local");
    let attempts: Vec<(String, String)> = spans
        .iter()
        .filter(|s| s.name == "attempt")
        .map(|s| {
            assert_eq!(s.parent.as_deref(), Some("dag"), "{s:?}");
            assert_eq!(s.fields["dag"], "spanned");
            assert_eq!(s.fields["node"], "local");
            (s.fields["function"].clone(), s.fields["attempt"].clone())
        })
        .collect();
    let expected = [("a", "1"), ("b", "1"), ("b", "2")].map(|(f, a)| (f.to_owned(), a.to_owned()));
    assert_eq!(attempts, expected);

    // The user's own events happen inside their attempt's span.
    let inside = recorded.inside.lock().expect("lock").clone();
    assert_eq!(inside.len(), 3);
    for span in inside {
        let span = span.expect("inside a span");
        assert_eq!(span.name, "attempt");
    }
}
