//! The secret in the URL (`?token=...`), as Jupyter does: whoever can reach the
//! port but was not given the URL (another user of the machine, a web page in the
//! browser making requests to 127.0.0.1) gets 403 and learns nothing.

use std::fmt;

/// A random 128-bit secret, written as 32 hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A new token from the operating system's random source.
    pub fn random() -> Result<Token, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The token as it appears in URLs.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token, compared in constant time (the time taken
    /// says nothing about how much of a guess was right).
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never in logs.
        f.write_str("Token(..)")
    }
}

/// The value of `name` in a URL's query (`a=1&token=abc`), decoded, if present.
pub fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_compare_exactly() {
        let (a, b) = (Token::random().unwrap(), Token::random().unwrap());
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(a.matches(a.as_str()));
        assert!(!a.matches(b.as_str()));
        assert!(!a.matches(&a.as_str()[..31]));
        assert!(!a.matches(""));
    }

    #[test]
    fn query_values_are_found_and_decoded() {
        let q = Some("token=ab12&name=my%20notes.txt&to=3");
        assert_eq!(query_value(q, "token").as_deref(), Some("ab12"));
        assert_eq!(query_value(q, "name").as_deref(), Some("my notes.txt"));
        assert_eq!(query_value(q, "to").as_deref(), Some("3"));
        assert_eq!(query_value(q, "nope"), None);
        assert_eq!(query_value(None, "token"), None);
    }
}
