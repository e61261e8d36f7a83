//! What sip-xdp needs of each table it writes, as the migrations create
//! them: the text columns' widths, checked before a change is written
//! anywhere.

use super::store::StoreError;

/// Characters each text column sip-xdp writes holds (`VARCHAR(n)` counts
/// characters, not bytes).
pub const WIDTHS: [(&str, usize); 4] = [
    ("reason", 255),
    ("source", 32),
    ("node", 64),
    ("comment", 255),
];

/// Refuses `text` for `field` when its column cannot hold it, or when it
/// holds characters no reader should get: control characters (a line
/// break would forge a second line in every log that prints it).
pub fn fits(field: &str, text: &str) -> Result<(), StoreError> {
    let width = WIDTHS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(255, |(_, w)| *w);
    let n = text.chars().count();
    if n > width {
        return Err(StoreError::Data(format!(
            "the {field} is {n} characters long; the column holds {width}"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(StoreError::Data(format!(
            "the {field} holds a control character (a line break, a tab, ...); write it on one line"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_checked_against_its_column() {
        assert!(fits("reason", &"x".repeat(255)).is_ok());
        assert!(
            fits("reason", &"é".repeat(255)).is_ok(),
            "characters, not bytes"
        );
        let e = fits("reason", &"x".repeat(300)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the reason is 300 characters long; the column holds 255"
        );
        assert!(e.is_data_error());
        assert!(fits("node", &"n".repeat(65)).is_err());
        assert!(fits("reason", "two\nlines").is_err());
    }
}
