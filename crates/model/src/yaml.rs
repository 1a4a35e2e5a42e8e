//! Bounds on YAML (and JSON, which is read as YAML) before it is parsed.
//!
//! libyaml's scanner does work proportional to the flow nesting (`[`, `{`) for every
//! token, so a document of 100,000 `[` kept a CPU busy for seconds, and the parser's
//! own recursion limit only applies once the whole document has been scanned. The
//! same scanner is run here first and stopped as soon as the nesting passes the bound,
//! so the work is at most the document's tokens times [`MAX_FLOW_DEPTH`].

use std::mem::MaybeUninit;

use unsafe_libyaml as unsafe_sys;

use crate::FieldError;

/// Deepest nesting of flow collections (`[…]`, `{…}`) accepted; manifests use a few.
pub const MAX_FLOW_DEPTH: usize = 64;

/// Largest manifest file or body accepted (Kubernetes keeps objects under 1.5 MiB).
pub const MAX_MANIFEST_BYTES: usize = 2 << 20;

/// Refuses a document whose flow collections nest deeper than [`MAX_FLOW_DEPTH`],
/// naming the line where the bound is passed. Anything else, syntax errors included,
/// is left for the parser to report.
pub fn check_nesting(field: &str, text: &str) -> Result<(), FieldError> {
    match flow_depth_exceeded(text.as_bytes(), MAX_FLOW_DEPTH) {
        None => Ok(()),
        Some(line) => Err(FieldError::new(
            field,
            format!(
                "nests '[' and '{{' deeper than {MAX_FLOW_DEPTH} levels at line {line}; manifests are not that deep"
            ),
        )),
    }
}

/// The line (1-based) where flow nesting first exceeds `max`, if it does.
fn flow_depth_exceeded(input: &[u8], max: usize) -> Option<usize> {
    let mut scanner = Scanner::new(input);
    let mut depth = 0usize;
    loop {
        let (kind, line) = scanner.next()?;
        match kind {
            unsafe_sys::YAML_FLOW_SEQUENCE_START_TOKEN | unsafe_sys::YAML_FLOW_MAPPING_START_TOKEN => {
                depth += 1;
                if depth > max {
                    return Some(line + 1);
                }
            }
            unsafe_sys::YAML_FLOW_SEQUENCE_END_TOKEN | unsafe_sys::YAML_FLOW_MAPPING_END_TOKEN => {
                depth = depth.saturating_sub(1)
            }
            unsafe_sys::YAML_STREAM_END_TOKEN => return None,
            _ => {}
        }
    }
}

/// libyaml's scanner over a borrowed input, yielding token kinds and their lines.
struct Scanner<'a> {
    parser: Box<MaybeUninit<unsafe_sys::yaml_parser_t>>,
    _input: &'a [u8],
}

impl<'a> Scanner<'a> {
    fn new(input: &'a [u8]) -> Self {
        let mut parser = Box::new(MaybeUninit::<unsafe_sys::yaml_parser_t>::uninit());
        // SAFETY: the parser lives on the heap and is not moved while libyaml holds
        // pointers into it; the input outlives it (the lifetime), and a failed
        // initialisation (allocation) aborts rather than leaving it half-made.
        unsafe {
            let p = parser.as_mut_ptr();
            assert!(
                !unsafe_sys::yaml_parser_initialize(p).fail,
                "libyaml could not allocate its scanner"
            );
            unsafe_sys::yaml_parser_set_encoding(p, unsafe_sys::YAML_UTF8_ENCODING);
            unsafe_sys::yaml_parser_set_input_string(p, input.as_ptr(), input.len() as u64);
        }
        Scanner { parser, _input: input }
    }

    /// The next token's kind and line (0-based), or `None` after a scanning error.
    fn next(&mut self) -> Option<(unsafe_sys::yaml_token_type_t, usize)> {
        let mut token = MaybeUninit::<unsafe_sys::yaml_token_t>::uninit();
        // SAFETY: the parser was initialised in `new`; the token is written by the
        // scan (zeroed first, even on failure) and deleted before it is dropped.
        unsafe {
            let token = token.as_mut_ptr();
            let failed = unsafe_sys::yaml_parser_scan(self.parser.as_mut_ptr(), token).fail;
            let kind = (*token).type_;
            let line = (*token).start_mark.line as usize;
            unsafe_sys::yaml_token_delete(token);
            (!failed).then_some((kind, line))
        }
    }
}

impl Drop for Scanner<'_> {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, deleted once.
        unsafe { unsafe_sys::yaml_parser_delete(self.parser.as_mut_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_nesting_past_the_bound_is_refused_with_its_line() {
        let deep = format!("a: 1\nb: {}\n", "[".repeat(MAX_FLOW_DEPTH + 1));
        let e = check_nesting("body", &deep).unwrap_err();
        assert_eq!(e.field, "body");
        assert!(e.message.contains("deeper than 64 levels at line 2"), "{e}");
        let json = format!("{}1{}", r#"{"a":["#.repeat(40), "]}".repeat(40));
        assert!(check_nesting("body", &json).is_err(), "80 levels of JSON");
    }

    #[test]
    fn brackets_that_are_not_collections_do_not_count() {
        let brackets = "[".repeat(200);
        let text = format!(
            "plain: a{brackets}\nquoted: \"{brackets}\"\nsingle: '{brackets}'\n# {brackets}\nscript: |\n  {brackets}\nflow: [\"{brackets}\", '{brackets}', [1, {{a: [2]}}]]\n"
        );
        check_nesting("body", &text).unwrap();
        check_nesting("body", &format!("{}{}", "[".repeat(64), "]".repeat(64))).unwrap();
    }

    #[test]
    fn syntax_errors_are_left_to_the_parser() {
        check_nesting("body", "a: [b\nc: 'unterminated").unwrap();
        check_nesting("body", "]]]] }}}").unwrap();
        check_nesting("body", "").unwrap();
    }

    #[test]
    fn a_hundred_thousand_levels_are_refused_at_the_bound() {
        assert!(check_nesting("body", &"{a: ".repeat(100_000)).is_err());
        assert!(check_nesting("body", &"[".repeat(100_000)).is_err());
    }
}
