//! Stop strings in streamed text: a stop string split across pieces is caught, streamed text never
//! shows any part of it, multi-byte characters are never cut, and the result does not depend on
//! how the text was split into pieces.

use edgellm::sampling::{Rng, StopMatcher, StopOutcome};

fn matcher(stops: &[&str]) -> StopMatcher {
    StopMatcher::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

/// Feeds `pieces`, returning what was emitted per piece and the stop index (if any).
fn stream(stops: &[&str], pieces: &[&str]) -> (Vec<String>, Option<usize>) {
    let mut m = matcher(stops);
    let mut out = Vec::new();
    for p in pieces {
        let StopOutcome { emit, stop } = m.push(p);
        out.push(emit);
        if stop.is_some() {
            return (out, stop);
        }
    }
    out.push(m.finish());
    (out, None)
}

#[test]
fn stop_split_across_pieces() {
    let (out, stop) = stream(&["</s>"], &["Hello <", "/", "s> never shown"]);
    assert_eq!(out, vec!["Hello ", "", ""]);
    assert_eq!(stop, Some(0));
}

#[test]
fn false_alarm_is_released() {
    let (out, stop) = stream(&["</s>"], &["a <", "/b", "> c"]);
    assert_eq!(out, vec!["a ", "</b", "> c", ""]);
    assert_eq!(stop, None);
}

#[test]
fn held_text_is_flushed_at_the_end() {
    let mut m = matcher(&["STOP"]);
    assert_eq!(m.push("the end ST").emit, "the end ");
    assert_eq!(m.held(), "ST");
    assert_eq!(m.finish(), "ST");
    assert_eq!(m.held(), "");
}

#[test]
fn stop_inside_one_piece_cuts_the_rest() {
    let (out, stop) = stream(&["\n\n", "User:"], &["answer.\n\nUser: more"]);
    assert_eq!(out, vec!["answer."]);
    assert_eq!(stop, Some(0));
}

#[test]
fn multibyte_stop_strings_and_text() {
    // "終わり" spans three 3-byte characters; it arrives split mid-string.
    let (out, stop) = stream(&["終わり"], &["これで終", "わ", "り！"]);
    assert_eq!(out, vec!["これで", "", ""]);
    assert_eq!(stop, Some(0));
    // A stop starting with a multi-byte character; the held tail is a whole character.
    let mut m = matcher(&["é!"]);
    assert_eq!(m.push("café").emit, "caf");
    assert_eq!(m.held(), "é");
    assert_eq!(m.push("?").emit, "é?");
    // Stops sharing a lead byte with the text must not match mid-character: "é" is C3 A9 and
    // "ê" is C3 AA; "ê" must not be mistaken for a prefix of "é!".
    let mut m = matcher(&["é!"]);
    assert_eq!(m.push("tê").emit, "tê");
    // Emoji (4 bytes) around the stop.
    let (out, stop) = stream(&["🛑"], &["go 🚀", " 🛑 done"]);
    assert_eq!(out.concat(), "go 🚀 ");
    assert_eq!(stop, Some(0));
}

#[test]
fn earliest_completed_stop_wins() {
    // "bc" completes before "abcd" could, so a streaming reader must stop at it.
    let (out, stop) = stream(&["abcd", "bc"], &["xabcd"]);
    assert_eq!(out.concat(), "xa");
    assert_eq!(stop, Some(1));
    let (out, stop) = stream(&["abcd", "bc"], &["x", "a", "b", "c", "d"]);
    assert_eq!(out.concat(), "xa");
    assert_eq!(stop, Some(1));
    // Same end: the one starting first removes more.
    let (out, stop) = stream(&["c", "abc"], &["zabc"]);
    assert_eq!(out.concat(), "z");
    assert_eq!(stop, Some(1));
}

#[test]
fn pieces_after_a_stop_are_swallowed() {
    let mut m = matcher(&["x"]);
    assert_eq!(m.push("ax").stop, Some(0));
    assert_eq!(
        m.push("more"),
        StopOutcome {
            emit: String::new(),
            stop: Some(0)
        }
    );
    assert_eq!(m.stopped(), Some(0));
}

/// Whole-text reference: the prefix before the stop that ends first (ties: starts first).
fn reference(stops: &[&str], text: &str) -> (String, Option<usize>) {
    let mut best: Option<(usize, usize, usize)> = None;
    for (i, s) in stops.iter().enumerate() {
        if s.is_empty() {
            continue;
        }
        // Every occurrence, not just the first, to be independent of the implementation.
        for (start, _) in text.match_indices(s) {
            let c = (start + s.len(), start, i);
            if best.is_none_or(|b| (c.0, c.1) < (b.0, b.1)) {
                best = Some(c);
            }
        }
    }
    match best {
        Some((_, start, i)) => (text[..start].to_string(), Some(i)),
        None => (text.to_string(), None),
    }
}

#[test]
fn any_split_gives_the_whole_text_result_and_never_shows_a_partial_stop() {
    let alphabet = ["a", "b", "<", "/", ">", "é", "終", "🙂", " "];
    let stop_pool = ["</s>", "ab", "é終", "🙂🙂", "b<", "aaa", "/>", "終"];
    let mut rng = Rng::new(2024);
    let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
    for _ in 0..3000 {
        let len = pick(24);
        let text: String = (0..len).map(|_| alphabet[pick(alphabet.len())]).collect();
        let n_stops = 1 + pick(3);
        let stops: Vec<&str> = (0..n_stops)
            .map(|_| stop_pool[pick(stop_pool.len())])
            .collect();
        // Random split at character boundaries.
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let mut pieces = Vec::new();
        let mut last = 0;
        for &b in &bounds[1..] {
            if pick(3) == 0 || b == text.len() {
                pieces.push(&text[last..b]);
                last = b;
            }
        }
        let (want, want_stop) = reference(&stops, &text);
        let mut m = matcher(&stops);
        let mut shown = String::new();
        let mut stop = None;
        for p in &pieces {
            let o = m.push(p);
            shown.push_str(&o.emit);
            // Streamed text is always a prefix of the final answer: nothing shown is taken back.
            assert!(
                want.starts_with(&shown),
                "text {text:?} stops {stops:?}: showed {shown:?}, answer {want:?}"
            );
            if o.stop.is_some() {
                stop = o.stop;
                break;
            }
        }
        if stop.is_none() {
            shown.push_str(&m.finish());
        }
        assert_eq!(
            (shown.as_str(), stop.map(|i| stops[i])),
            (want.as_str(), want_stop.map(|i| stops[i])),
            "text {text:?} stops {stops:?} pieces {pieces:?}"
        );
    }
}
