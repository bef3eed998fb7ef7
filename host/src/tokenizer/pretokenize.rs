//! GPT-2's pre-tokenization without a regex engine. The pattern it follows is
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! ```
//!
//! tried left to right at each position: an English contraction; a run of letters, of
//! numbers or of other symbols, each with at most one leading space (U+0020); a run of
//! whitespace that leaves its last character to the word after it; any whitespace.
//!
//! Character classes: `\s` is `char::is_whitespace` (Unicode White_Space, as the regex);
//! `\p{N}` is `char::is_numeric` (Nd, Nl, No, as the regex); `\p{L}` is
//! `char::is_alphabetic` minus the numerics. That Alphabetic property also holds the
//! combining vowel signs of some scripts (Other_Alphabetic, e.g. Devanagari), which the
//! regex counts as symbols: such words may split differently from the reference.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Space,
    Letter,
    Number,
    Other,
}

fn class(c: char) -> Class {
    if c.is_whitespace() {
        Class::Space
    } else if c.is_numeric() {
        Class::Number
    } else if c.is_alphabetic() {
        Class::Letter
    } else {
        Class::Other
    }
}

const CONTRACTIONS: [&str; 7] = ["s", "t", "re", "ve", "m", "ll", "d"];

/// `text` cut into the pieces the pattern matches, in order; they concatenate to `text`.
pub(crate) fn split(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut pieces = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        // Every branch matches at least one character.
        let n = match_len(&chars, i).max(1);
        let start = chars[i].0;
        let end = chars.get(i + n).map_or(text.len(), |&(at, _)| at);
        pieces.push(&text[start..end]);
        i += n;
    }
    pieces
}

/// The number of characters the pattern matches at `chars[i]`.
fn match_len(chars: &[(usize, char)], i: usize) -> usize {
    let at = |k: usize| chars.get(k).map(|&(_, c)| c);
    let run = |from: usize, cls: Class| chars[from..].iter().take_while(|&&(_, c)| class(c) == cls).count();

    if at(i) == Some('\'') {
        for suffix in CONTRACTIONS {
            if suffix.chars().enumerate().all(|(k, s)| at(i + 1 + k) == Some(s)) {
                return 1 + suffix.len();
            }
        }
    }
    // ` ?X+` for letters, numbers, other symbols: one optional leading space.
    let (start, lead) = match (at(i), at(i + 1)) {
        (Some(' '), Some(next)) if class(next) != Class::Space => (i + 1, 1),
        _ => (i, 0),
    };
    if let Some(c) = at(start) {
        let cls = class(c);
        if cls != Class::Space {
            return lead + run(start, cls);
        }
    }
    // `\s+(?!\S)` then `\s+`: a whitespace run followed by a word gives up its last
    // character (which then leads the word), unless that would leave it empty.
    let spaces = run(i, Class::Space);
    if i + spaces < chars.len() && spaces > 1 { spaces - 1 } else { spaces }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn follows_the_gpt2_pattern() {
        assert_eq!(split("Hello world"), ["Hello", " world"]);
        assert_eq!(split("I'm don't they'll"), ["I", "'m", " don", "'t", " they", "'ll"]);
        assert_eq!(split("a  b"), ["a", " ", " b"]);
        assert_eq!(split("a   \n\nb  "), ["a", "   \n", "\n", "b", "  "]);
        assert_eq!(split("x 123abc!? ''s"), ["x", " 123", "abc", "!?", " ''", "s"]);
        assert_eq!(split("'S"), ["'", "S"]);
        assert_eq!(split(" \tx"), [" ", "\t", "x"]);
        assert_eq!(split("héllo wörld Ⅻ"), ["héllo", " wörld", " Ⅻ"]);
        assert_eq!(split(""), Vec::<&str>::new());
    }
}
