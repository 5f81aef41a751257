//! Generated input (#28): property tests for what reads bytes a user or a producer controls — the
//! record and correction decoders, the ack tracker's commit positions, text composition, the
//! taxonomy and path parsers, and the label store's write-ahead log after a torn or corrupted
//! write. Each property runs `PROPTEST_CASES` cases (256 by default); a failure prints the
//! smallest input found.

use std::collections::BTreeSet;

use proptest::prelude::*;

use prodcat::common::taxonomy::{TaxonomyFile, path_parts};
use prodcat::common::{RejectReason, TextSpec};
use prodcat::learn::{LabelSource, LabelStore, StoreLimits};
use prodcat::pipeline::kafka::acks::AckTracker;
use prodcat::pipeline::kafka::decode::{KnownTexts, RecordRules, decode};

fn spec() -> TextSpec {
    TextSpec {
        fields: vec!["title".into(), "brand".into()],
        separator: " | ".into(),
        max_chars: [("brand".to_string(), 12)].into(),
        max_bytes: 400,
    }
}

/// A JSON value of any shape, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A record-shaped payload: an object whose id, title, brand and schema version take any value.
fn record_payload() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::option::of(json_value()),
        prop::option::of(prop_oneof![".{0,60}".prop_map(serde_json::Value::from), json_value()]),
        prop::option::of(json_value()),
        prop::option::of(prop_oneof![Just(serde_json::json!(1)), json_value()]),
    )
        .prop_map(|(id, title, brand, version)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [("id", id), ("title", title), ("brand", brand), ("schema_version", version)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            serde_json::Value::Object(m).to_string().into_bytes()
        })
}

fn check_decoded(payload: Option<&[u8]>, rules: &RecordRules<'_>) -> Result<(), TestCaseError> {
    match decode(payload, rules) {
        Ok(record) => {
            prop_assert!(!record.id.is_empty(), "a record has an id");
            prop_assert!(!record.text.trim().is_empty(), "a record has a text");
            prop_assert!(record.text.len() <= rules.text.max_bytes);
            prop_assert!(payload.is_some_and(|p| p.len() <= rules.max_message_bytes));
        }
        Err(rejection) => {
            prop_assert!(!rejection.detail.is_empty(), "{:?} without a detail", rejection.reason);
        }
    }
    Ok(())
}

proptest! {
    /// Any bytes: a record, or a rejection with its reason and a detail — never a panic.
    #[test]
    fn any_bytes_decode_to_a_record_or_a_reason(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let spec = spec();
        let rules = RecordRules { text: &spec, id_field: "id", max_message_bytes: 500, trusted_label_field: Some("brand") };
        check_decoded(Some(&bytes), &rules)?;
    }

    /// Record-shaped objects with fields of every type: the same, and a record's text is the
    /// composition of its title and brand.
    #[test]
    fn record_shaped_objects_decode_to_a_record_or_a_reason(payload in record_payload()) {
        let spec = spec();
        let rules = RecordRules { text: &spec, id_field: "id", max_message_bytes: 2_000, trusted_label_field: None };
        check_decoded(Some(&payload), &rules)?;
        if let Ok(record) = decode(Some(&payload), &rules) {
            let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            let title = value["title"].as_str().unwrap_or_default().trim().to_string();
            prop_assert!(record.text.starts_with(&title), "`{}` does not start with the title `{title}`", record.text);
        }
    }

    /// Any correction payload: a correction with an id, a label and a text, or a rejection with a
    /// detail.
    #[test]
    fn any_correction_resolves_or_is_rejected(payload in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (prop::option::of(json_value()), prop::option::of(json_value()), prop::option::of(json_value()))
            .prop_map(|(id, label, title)| {
                let mut m = serde_json::Map::new();
                for (k, v) in [("id", id), ("label", label), ("title", title)] {
                    if let Some(v) = v { m.insert(k.into(), v); }
                }
                serde_json::Value::Object(m).to_string().into_bytes()
            }),
    ]) {
        let dir = tempfile::tempdir().unwrap();
        let store = LabelStore::open(dir.path(), StoreLimits::default()).unwrap();
        let mut known = KnownTexts::new(store, "id", 16);
        known.seen("7", "dual sim phone");
        match known.resolve(Some(&payload)) {
            Ok(c) => prop_assert!(!c.id.is_empty() && !c.label.trim().is_empty() && !c.text.trim().is_empty(), "{c:?}"),
            Err(r) => prop_assert!(!r.detail.is_empty()),
        }
    }

    /// Offsets read in order (with gaps, as transactions leave) and completed in any order: after
    /// every completion the committed position never passes an unfinished offset, never moves
    /// back, and ends one past the last offset once all are done.
    #[test]
    fn only_contiguous_finished_offsets_are_committed(
        gaps in prop::collection::vec(1i64..4, 1..60),
        seed in any::<u64>(),
    ) {
        let tp = ("in".to_string(), 0);
        let offsets: Vec<i64> = gaps.iter().scan(0i64, |at, g| { *at += g; Some(*at) }).collect();
        let tracker = AckTracker::new();
        offsets.iter().for_each(|&o| tracker.register(&tp, o));
        // A seeded permutation of the completions.
        let mut completion: Vec<i64> = offsets.clone();
        let mut state = seed | 1;
        for i in (1..completion.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            completion.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut done = BTreeSet::new();
        let mut last = None;
        for o in completion {
            tracker.complete(&tp, o);
            done.insert(o);
            for (at, position) in tracker.take_commits() {
                prop_assert_eq!(&at, &tp);
                prop_assert!(last.is_none_or(|l| position > l), "the position moved back: {last:?} → {position}");
                prop_assert!(offsets.iter().filter(|&&x| x < position).all(|x| done.contains(x)),
                    "committed {position} past an unfinished offset");
                let next = offsets.iter().find(|&&x| x >= position);
                prop_assert!(next.is_none_or(|n| !done.contains(n)), "stopped short of a finished offset");
                last = Some(position);
            }
        }
        prop_assert_eq!(last, Some(offsets[offsets.len() - 1] + 1));
        prop_assert!(tracker.in_flight().is_empty());
    }

    /// Text composition from any field values: a text within the limits, or the reason.
    #[test]
    fn any_fields_compose_to_a_text_or_a_reason(
        title in prop::option::of(".{0,300}"),
        brand in prop::option::of(".{0,40}"),
    ) {
        let spec = spec();
        let value = |f: &str| match f { "title" => title.as_deref(), "brand" => brand.as_deref(), _ => None };
        match spec.compose(value) {
            Ok(text) => {
                prop_assert!(text.len() <= spec.max_bytes && !text.trim().is_empty());
                let first = title.as_deref().unwrap_or_default().trim();
                prop_assert!(text.starts_with(first));
                prop_assert!(text.chars().count() <= first.chars().count() + 3 + 12);
            }
            Err(reason) => {
                let expected = match title.as_deref() {
                    None => RejectReason::MissingText,
                    Some(t) if t.trim().is_empty() => RejectReason::EmptyText,
                    Some(_) => RejectReason::Oversized,
                };
                prop_assert_eq!(reason, expected);
            }
        }
    }

    /// Any taxonomy file text: parsed (every path resolves to itself, no empty part) or refused
    /// with a message — never a panic.
    #[test]
    fn any_taxonomy_text_parses_or_is_refused(
        lines in prop::collection::vec(prop_oneof![
            "[0-9]{1,4} - [A-Za-z &]{0,12}( > [A-Za-z &]{0,12}){0,3}",
            "[A-Za-z &>#-]{0,30}",
            ".{0,30}",
        ], 0..20),
    ) {
        let text = lines.join("\n");
        match TaxonomyFile::parse(&text, ">") {
            Ok(file) => {
                for line in &lines {
                    let path = line.split_once(" - ").map_or(line.as_str(), |(_, p)| p).trim();
                    if path.is_empty() || path.starts_with('#') { continue; }
                    if let Ok(resolved) = file.resolve(path, ">") {
                        prop_assert!(path_parts(resolved, ">").iter().all(|p| !p.is_empty()));
                    }
                }
            }
            Err(message) => prop_assert!(!message.is_empty()),
        }
    }

    /// A path's parts joined and split again are the same parts.
    #[test]
    fn path_parts_round_trip(parts in prop::collection::vec("[A-Za-z0-9 &]{1,10}", 1..5)) {
        let trimmed: Vec<String> = parts.iter().map(|p| p.trim().to_string()).collect();
        prop_assume!(trimmed.iter().all(|p| !p.is_empty()));
        let joined = trimmed.join(" > ");
        prop_assert_eq!(path_parts(&joined, ">"), trimmed.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A write-ahead log cut anywhere (a torn write) gives back every label written completely
    /// before the cut; one flipped bit costs at most the two labels it can touch.
    #[test]
    fn the_label_store_recovers_every_complete_record(
        labels in prop::collection::vec(("[a-z ]{1,20}", "[A-Z][a-z]{1,8}"), 1..30),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreLimits { flush_records: 10_000, ..StoreLimits::default() };
        {
            let store = LabelStore::open(dir.path(), limits.clone()).unwrap();
            for (i, (text, label)) in labels.iter().enumerate() {
                store.append(&format!("p{i}"), text, label, LabelSource::Record).unwrap();
            }
            store.sync().unwrap();
        }
        let wal = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("wal-")))
            .expect("a write-ahead segment");
        let bytes = std::fs::read(&wal).unwrap();
        let line_ends: Vec<usize> = bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i).collect();
        prop_assert_eq!(line_ends.len(), labels.len());

        // Cut: every label whose line (less its newline) lies before the cut comes back.
        let at = cut.index(bytes.len() + 1);
        std::fs::write(&wal, &bytes[..at]).unwrap();
        let complete = line_ends.iter().filter(|&&end| end <= at).count();
        let store = LabelStore::open(dir.path(), limits.clone()).unwrap();
        let recovered = store.new_labels();
        prop_assert!(recovered == complete || recovered == complete + 1 && at == line_ends[complete],
            "{recovered} labels back from a log cut at {at} of {} bytes ({complete} complete lines)", bytes.len());
        drop(store);

        // One flipped bit.
        let mut flipped = bytes.clone();
        let i = flip.index(flipped.len());
        flipped[i] ^= 1 << bit;
        for f in std::fs::read_dir(dir.path()).unwrap() { let _ = std::fs::remove_file(f.unwrap().path()); }
        std::fs::write(&wal, &flipped).unwrap();
        let store = LabelStore::open(dir.path(), limits).unwrap();
        let recovered = store.new_labels();
        prop_assert!(recovered + 2 >= labels.len() && recovered <= labels.len() + 1,
            "{recovered} of {} labels back after flipping bit {bit} of byte {i}", labels.len());
    }
}
